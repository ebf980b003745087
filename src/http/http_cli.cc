#include "http/http_cli.h"

#include <filesystem>

#include "core/json_limits.h"
#include "core/logging.h"
#include "template/chat_template.h"

namespace moe::http {

void add_http_flags(CLI::App& cmd, HttpFlags& f) {
    cmd.add_option("--http-port", f.port, "OpenAI-compatible HTTP API port (-1: off; 0: pick a free one and print it)")
        ->capture_default_str()
        ->envname("MOESERVE_HTTP_PORT")
        ->check(CLI::Range(-1, 65535));
    cmd.add_option("--http-threads", f.threads, "threads serving HTTP connections")
        ->capture_default_str()
        ->envname("MOESERVE_HTTP_THREADS")
        ->check(CLI::Range(1, 256));
    cmd.add_option("--http-max-connections", f.max_connections,
                   "open HTTP connections at most; beyond, new ones are closed at once")
        ->capture_default_str()
        ->envname("MOESERVE_HTTP_MAX_CONNECTIONS")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    cmd.add_option("--http-idle-timeout-seconds", f.idle_timeout_seconds,
                   "close an HTTP connection with no request (or a request arriving too slowly) for this long")
        ->capture_default_str()
        ->envname("MOESERVE_HTTP_IDLE_TIMEOUT_SECONDS")
        ->check(CLI::Range(0.1, 86400.0));
    cmd.add_option("--served-model-name", f.served_model_name,
                   "model name on the HTTP API (/v1/models, the `model` field); default: the model directory's name")
        ->envname("MOESERVE_SERVED_MODEL_NAME");
    cmd.add_option("--chat-template", f.chat_template,
                   "a Jinja chat template file for /v1/chat/completions, instead of the model's own "
                   "(tokenizer_config.json chat_template or chat_template.jinja)")
        ->envname("MOESERVE_CHAT_TEMPLATE");
}

namespace {

std::string token_text(const Tokenizer* tokenizer, std::optional<int32_t> id) {
    if (tokenizer == nullptr || !id) return "";
    return tokenizer->id_to_token(*id).value_or("");
}

// The chat template to serve, or null with `reason` set when there is none (empty reason: the
// model simply has no template).
StatusOr<std::shared_ptr<const tmpl::ChatTemplate>> load_chat_template(const HttpFlags& flags,
                                                                       const std::string& model_dir,
                                                                       const Tokenizer* tokenizer,
                                                                       std::string* reason) {
    auto& logger = *log::get("http");
    if (!flags.chat_template.empty()) {
        StatusOr<std::string> source = read_regular_file(flags.chat_template, tmpl::kMaxTemplateBytes);
        if (!source.ok()) return invalid_argument("--chat-template: " + source.status().message());
        StatusOr<tmpl::ChatTemplate> t = tmpl::ChatTemplate::from_string(
            std::move(source).value(), token_text(tokenizer, tokenizer ? tokenizer->bos_id() : std::nullopt),
            token_text(tokenizer, tokenizer ? tokenizer->eos_id() : std::nullopt));
        if (!t.ok()) return invalid_argument("--chat-template " + flags.chat_template + ": " + t.status().message());
        return std::make_shared<const tmpl::ChatTemplate>(std::move(t).value());
    }
    if (model_dir.empty()) return std::shared_ptr<const tmpl::ChatTemplate>();
    StatusOr<tmpl::ChatTemplate> t = tmpl::ChatTemplate::load(model_dir);
    if (t.ok()) return std::make_shared<const tmpl::ChatTemplate>(std::move(t).value());
    if (t.status().code() == StatusCode::kNotFound) {
        logger.info("{} has no chat template: /v1/chat/completions answers 400 (see --chat-template)", model_dir);
    } else {
        *reason = "the model's chat template cannot be used: " + t.status().message();
        logger.warn("{}: /v1/chat/completions answers 400", *reason);
    }
    return std::shared_ptr<const tmpl::ChatTemplate>();
}

}  // namespace

std::string served_model_name(const HttpFlags& flags, const std::string& model_dir) {
    if (!flags.served_model_name.empty()) return flags.served_model_name;
    if (model_dir.empty()) return "demo";
    std::filesystem::path p(model_dir);
    if (p.filename().empty()) p = p.parent_path();  // "dir/" names "dir"
    const std::string name = p.filename().string();
    return name.empty() ? model_dir : name;
}

StatusOr<std::unique_ptr<HttpServer>> start_http_from_flags(const HttpFlags& flags, const HttpServeContext& ctx,
                                                            Engine& engine) {
    if (flags.port < 0) return std::unique_ptr<HttpServer>();
    HttpOptions o;
    o.host = ctx.host;
    o.port = flags.port;
    o.num_threads = flags.threads;
    o.max_connections = flags.max_connections;
    o.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.idle_timeout_seconds * 1000));
    o.max_body_bytes = ctx.max_body_bytes;
    o.stream_buffer_bytes = ctx.stream_buffer_bytes;
    o.admin_token = ctx.admin_token;
    o.model_id = served_model_name(flags, ctx.model_dir);
    o.model_alias = ctx.model_dir;
    MOE_ASSIGN_OR_RETURN(std::shared_ptr<const tmpl::ChatTemplate> chat_template,
                         load_chat_template(flags, ctx.model_dir, engine.tokenizer(), &o.chat_unavailable_reason));
    if (chat_template) {
        o.render_chat = [chat_template](const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                        bool add_generation_prompt, const nlohmann::ordered_json& extra) {
            return chat_template->render(messages, tools, add_generation_prompt, extra);
        };
    }
    return HttpServer::start(engine, std::move(o));
}

}  // namespace moe::http
