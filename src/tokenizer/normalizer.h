// Normalizers: text rewrites applied before pre-tokenization (tokenizer.json "normalizer").
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "moe/status.h"
#include "tokenizer/limits.h"

namespace moe::tok {

class Normalizer {
public:
    virtual ~Normalizer() = default;
    // `s` is valid UTF-8 and stays valid UTF-8. kInvalidArgument, with `s` unspecified, rather
    // than let it grow past `max_bytes` (see normalized_byte_limit in limits.h).
    virtual Status normalize(std::string& s, size_t max_bytes) const = 0;
    // How many times longer this normalizer's Replace steps can make a text, at most (the
    // product over a Sequence). 1 for steps that only add a constant (Prepend) or whose growth
    // is small and bounded at run time (Unicode forms, Lowercase).
    virtual double growth_bound() const { return 1.0; }
};

// From a tokenizer.json "normalizer" object (not null). `where` names it in errors; `depth` is
// the Sequence nesting level of `j` (at most kMaxSequenceDepth). A Replace that can grow text
// more than kMaxReplaceGrowth times is refused.
StatusOr<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const std::string& where,
                                                       int depth = 0);
std::unique_ptr<Normalizer> make_nfc_normalizer();

}  // namespace moe::tok
