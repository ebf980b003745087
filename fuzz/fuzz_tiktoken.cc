// Fuzz target: tiktoken rank files (Kimi K2's tokenizer). Input = tiktoken.model "\n#--\n"
// tokenizer_config.json, loaded as a directory; a tokenizer that loads encodes and decodes a
// few strings, special tokens among them.
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_util.h"
#include "moe/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::filesystem::path dir = moe::fuzz::scratch_dir() / "tok_tiktoken";
    static const bool made = [] { return std::filesystem::create_directories(dir) || true; }();
    (void)made;
    const auto parts = moe::fuzz::split_parts(data, size, 2);
    moe::fuzz::write_file(dir / "tiktoken.model", parts[0]);
    moe::fuzz::write_file(dir / "tokenizer_config.json", parts.size() > 1 ? parts[1] : std::string_view("{}"));
    if (auto tok = moe::Tokenizer::load(dir.string()); tok.ok()) {
        for (const char* s : {"ab ab[EOS]", "你好 world 123", ""}) {
            auto ids = (*tok)->encode(s, true);
            if (ids.ok()) (void)(*tok)->decode(*ids, false);
        }
    }
    return 0;
}
