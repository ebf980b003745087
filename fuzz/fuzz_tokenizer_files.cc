// Fuzz target: the slow-tokenizer files. Input = vocab.json "\n#--\n" merges.txt "\n#--\n"
// tokenizer_config.json, loaded as a directory (and tokenizer_config.json also next to a
// fixed valid tokenizer.json, which is how most models ship it). The fixed tokenizer skips the
// GPT-2 split regex: compiling it on every input would be most of the time spent.
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_util.h"
#include "moe/tokenizer.h"

namespace {

constexpr const char* kTinyTokenizerJson =
    R"({"version": "1.0", "added_tokens": [{"id": 5, "content": "<eos>", "special": true}],)"
    R"( "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},)"
    R"( "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2,)"
    R"( "\u0120": 3, "\u0120ab": 4}, "merges": ["a b", "\u0120 ab"]}})";

void exercise(const moe::Tokenizer& tok) {
    for (const char* s : {"ab ab<eos>", "hello", ""}) {
        auto ids = tok.encode(s, true);
        if (ids.ok()) (void)tok.decode(*ids, true);
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::filesystem::path slow = moe::fuzz::scratch_dir() / "tok_slow";
    static const std::filesystem::path fast = moe::fuzz::scratch_dir() / "tok_fast";
    static const bool made = [] {
        std::filesystem::create_directories(slow);
        std::filesystem::create_directories(fast);
        moe::fuzz::write_file(fast / "tokenizer.json", kTinyTokenizerJson);
        return true;
    }();
    (void)made;
    const auto parts = moe::fuzz::split_parts(data, size, 3);
    moe::fuzz::write_file(slow / "vocab.json", parts[0]);
    moe::fuzz::write_file(slow / "merges.txt", parts.size() > 1 ? parts[1] : std::string_view());
    const std::string_view config = parts.size() > 2 ? parts[2] : std::string_view("{}");
    moe::fuzz::write_file(slow / "tokenizer_config.json", config);
    moe::fuzz::write_file(fast / "tokenizer_config.json", config);
    if (auto tok = moe::Tokenizer::load(slow.string()); tok.ok()) exercise(**tok);
    if (auto tok = moe::Tokenizer::load(fast.string()); tok.ok()) exercise(**tok);
    return 0;
}
