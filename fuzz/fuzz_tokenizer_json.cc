// Fuzz target: bytes as tokenizer.json. An accepted tokenizer must encode and decode a few
// fixed texts (and the input's own bytes as text) without crashing or growing without bound.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "moe/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    return moe::fuzz::quiet_logs();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto tok = moe::Tokenizer::from_json_string(text, "fuzz/tokenizer.json");
    if (!tok.ok()) return 0;
    const std::string samples[] = {"Hello, world!", " leading  spaces\tand\nlines",
                                   "\xC3\xA9t\xC3\xA9 \xE2\x96\x81 123", "<s>", std::string(text.substr(0, 256))};
    for (const auto& s : samples) {
        auto ids = (*tok)->encode(s, true);
        if (!ids.ok()) continue;
        (void)(*tok)->decode(*ids, false);
        (void)(*tok)->decode(*ids, true);
    }
    return 0;
}
