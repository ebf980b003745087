#include "http/http_cli.h"

#include <filesystem>

#include "core/logging.h"

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
}

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
    return HttpServer::start(engine, std::move(o));
}

}  // namespace moe::http
