// Fuzz target: a chat template (the model file a server loads at start) and a conversation (what a
// client sends), split at "\n#--\n". The template is loaded with every load-time check, then
// rendered under small limits: any input must end in a value or a Status, never a crash, a hang or
// unbounded memory.
#include <cstdint>

#include "fuzz_util.h"
#include "template/chat_template.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto parts = moe::fuzz::split_parts(data, size, 2);
    if (parts.empty()) return 0;
    auto chat = moe::tmpl::ChatTemplate::from_string(std::string(parts[0]), "<s>", "</s>");
    if (!chat.ok()) return 0;
    moe::tmpl::RenderLimits limits;
    limits.max_output_bytes = 1 << 16;
    limits.max_string_bytes = 1 << 16;
    limits.max_loop_iterations = 20000;
    limits.max_work_bytes = 1 << 24;
    chat->set_limits(limits);
    chat->set_fixed_time_for_testing(1752000000);
    nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
        R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},)"
        R"( {"role": "assistant", "content": "a", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},)"
        R"( {"role": "tool", "content": "r"}])");
    if (parts.size() > 1) {
        auto parsed = nlohmann::ordered_json::parse(parts[1], nullptr, /*allow_exceptions=*/false);
        if (!parsed.is_discarded()) messages = std::move(parsed);
    }
    const nlohmann::ordered_json tools = nlohmann::ordered_json::parse(
        R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",)"
        R"( "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}])");
    for (bool gen : {false, true}) {
        auto out = chat->render(messages, gen ? tools : nlohmann::ordered_json(), gen,
                                nlohmann::ordered_json{{"enable_thinking", gen}});
        (void)out;
    }
    return 0;
}
