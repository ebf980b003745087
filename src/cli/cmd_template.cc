// `moeserve template`: renders a conversation with a model's chat template and prints the prompt
// exactly as the server would tokenize it, to check a template by hand against transformers'
// apply_chat_template(tokenize=False).
#include <cstdio>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "core/json_limits.h"
#include "template/chat_template.h"

namespace moe::cli {
namespace {

// A conversation file is a few MB at most; the limit keeps a wrong path (a weight shard) cheap.
constexpr size_t kMaxMessagesFileBytes = size_t{64} << 20;

struct TemplateArgs {
    std::string model;
    std::string messages_file;
    std::string kwargs;
    bool add_generation_prompt = false;
    int64_t time = -1;
};

StatusOr<nlohmann::ordered_json> parse_ordered(const std::string& text, const std::string& origin) {
    MOE_RETURN_IF_ERROR(check_json_depth(text, origin));
    try {
        return nlohmann::ordered_json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(origin + ": not valid JSON: " + e.what());
    }
}

Status run(const TemplateArgs& a) {
    MOE_ASSIGN_OR_RETURN(tmpl::ChatTemplate chat, tmpl::ChatTemplate::load(a.model));
    if (a.time >= 0) chat.set_fixed_time_for_testing(static_cast<std::time_t>(a.time));
    MOE_ASSIGN_OR_RETURN(std::string text, read_regular_file(a.messages_file, kMaxMessagesFileBytes));
    MOE_ASSIGN_OR_RETURN(nlohmann::ordered_json doc, parse_ordered(text, a.messages_file));
    nlohmann::ordered_json messages, tools;
    if (doc.is_array()) {
        messages = std::move(doc);
    } else if (doc.is_object() && doc.contains("messages")) {
        messages = doc["messages"];
        if (doc.contains("tools")) tools = doc["tools"];
    } else {
        return invalid_argument(a.messages_file +
                                ": expected a JSON array of messages or an object with \"messages\" (and \"tools\")");
    }
    if (!messages.is_array()) return invalid_argument(a.messages_file + ": \"messages\" must be a JSON array");
    if (!tools.is_null() && !tools.is_array())
        return invalid_argument(a.messages_file + ": \"tools\" must be a JSON array");
    nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
    if (!a.kwargs.empty()) {
        MOE_ASSIGN_OR_RETURN(kwargs, parse_ordered(a.kwargs, "--kwargs"));
        if (!kwargs.is_object()) return invalid_argument("--kwargs must be a JSON object");
    }
    MOE_ASSIGN_OR_RETURN(std::string prompt, chat.render(messages, tools, a.add_generation_prompt, kwargs));
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
    return ok_status();
}

Registrar reg("template", [](CLI::App& app, int& exit_code) {
    auto args = std::make_shared<TemplateArgs>();
    CLI::App* cmd =
        app.add_subcommand("template", "Render chat messages with a model's chat template and print the prompt");
    cmd->add_option("--model", args->model, "Model directory with tokenizer_config.json or chat_template.jinja")
        ->required();
    cmd->add_option("--messages", args->messages_file,
                    "JSON file: an array of messages, or an object with \"messages\" and \"tools\"")
        ->required();
    cmd->add_flag("--add-generation-prompt", args->add_generation_prompt, "End with the assistant turn's opening");
    cmd->add_option("--kwargs", args->kwargs,
                    "JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'");
    cmd->add_option("--time", args->time, "Seconds since the epoch (UTC) for strftime_now (default: now)");
    cmd->callback([args, &exit_code] {
        Status s = run(*args);
        if (!s.ok()) {
            std::fprintf(stderr, "template: %s\n", s.to_string().c_str());
            exit_code = 1;
        }
    });
});

}  // namespace
}  // namespace moe::cli
