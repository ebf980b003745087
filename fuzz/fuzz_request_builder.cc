// Fuzz target: bytes as a serialized moe.v1.GenerateRequest (what a peer sends), built into
// GenerateParams against a small model with a tokenizer, the way the server does per request.
#include <cstdint>
#include <memory>

#include "fuzz_util.h"
#include "moe/tokenizer.h"
#include "server/request_builder.h"

namespace {

constexpr const char* kTinyTokenizerJson =
    R"({"version": "1.0", "added_tokens": [{"id": 5, "content": "<eos>", "special": true}],)"
    R"( "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},)"
    R"( "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2,)"
    R"( "\u0120": 3, "\u0120ab": 4}, "merges": ["a b", "\u0120 ab"]}})";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::unique_ptr<moe::Tokenizer> tokenizer = [] {
        auto t = moe::Tokenizer::from_json_string(kTinyTokenizerJson, "tiny.json");
        if (!t.ok()) __builtin_trap();
        return std::move(t).value();
    }();
    moe::v1::GenerateRequest request;
    if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
    // GenerateRequest.chat goes through a small template with loops, filters and tojson.
    static const moe::tmpl::ChatTemplate chat = [] {
        auto t = moe::tmpl::ChatTemplate::from_string(
            "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}"
            "{% if tools %}{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}<a>{% endif %}",
            "a", "b");
        if (!t.ok()) __builtin_trap();
        return std::move(t).value();
    }();
    const moe::Tokenizer* const tokenizers[] = {tokenizer.get(), nullptr};
    for (const moe::Tokenizer* tok : tokenizers) {
        const moe::server::ModelLimits model{
            .tokenizer = tok, .vocab_size = 6, .max_model_len = 64, .chat_template = tok ? &chat : nullptr};
        auto params = moe::server::build_generate_params(request, model);
        (void)params;
    }
    (void)moe::server::first_invalid_utf8(request.request_id());
    return 0;
}
