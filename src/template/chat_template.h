// A model's Hugging Face chat template, rendered the way transformers' apply_chat_template renders
// it (jinja2 ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson,
// raise_exception and strftime_now), by our own interpreter of the Jinja2 subset that real chat
// templates use (see docs/ARCHITECTURE.md, "Chat templates").
//
// Thread safety: a loaded ChatTemplate is immutable; render() may be called from many threads at
// once (each call has its own interpreter state).
#pragma once

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "moe/status.h"
#include "template/interp.h"

namespace moe::tmpl {

// Largest template source accepted (the biggest published chat templates are ~20 KB).
inline constexpr size_t kMaxTemplateBytes = size_t{1} << 20;

class ChatTemplate {
public:
    // Reads `model_dir`/tokenizer_config.json: `chat_template` (a string, or a list of
    // {"name", "template"} from which "default" is taken), else `model_dir`/chat_template.jinja;
    // and `bos_token` / `eos_token` (strings or {"content": ...} objects; empty when absent).
    // Errors: kNotFound when the directory has neither a chat_template entry nor
    // chat_template.jinja; kInvalidArgument for a malformed file, a template over
    // kMaxTemplateBytes, a syntax error, or a construct outside the supported subset (the
    // message names the construct and its line: "unsupported filter 'xmlattr' at line 3").
    static StatusOr<ChatTemplate> load(const std::string& model_dir);

    // A template from its source text (tests, the CLI). Same checks as load().
    static StatusOr<ChatTemplate> from_string(std::string source, std::string bos, std::string eos);

    // Renders `messages` (a JSON array of message objects) with the template variables
    // transformers passes: messages, tools (null when `tools` is null or absent), documents
    // (null), add_generation_prompt, bos_token, eos_token, then every key of `extra` (an object:
    // enable_thinking, reasoning_effort, ... ; they override the others, as transformers' kwargs do).
    // Pass ordered_json to keep the client's key order: dicts render in insertion order, as in
    // Python, so a tool's properties print in the order they were sent.
    // Errors: kInvalidArgument when messages is not an array, extra not an object, the template
    // calls raise_exception (the message is the template's), or it fails at run time (an
    // undefined value used, a type error: the message names the line); kResourceExhausted when a
    // RenderLimits bound is reached.
    StatusOr<std::string> render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                 bool add_generation_prompt, const nlohmann::ordered_json& extra = {}) const;
    // The same from nlohmann::json (whose objects are sorted by key: prefer ordered_json).
    StatusOr<std::string> render(const nlohmann::json& messages, const nlohmann::json& tools,
                                 bool add_generation_prompt, const nlohmann::json& extra = {}) const;

    const std::string& source() const;
    const std::string& bos_token() const;
    const std::string& eos_token() const;

    // Test hooks: a fixed clock for strftime_now (taken as UTC), and other render limits.
    void set_fixed_time_for_testing(std::time_t t);
    void set_limits(const RenderLimits& limits);

private:
    struct Impl;
    explicit ChatTemplate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
    std::optional<std::time_t> fixed_now_;
    RenderLimits limits_;
};

// The static check run by load(): every filter, test, global function and method the template
// names is one the interpreter implements. Exposed for tests.
Status check_supported(const StmtList& body);

}  // namespace moe::tmpl
