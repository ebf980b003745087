// Normalizers: text rewrites applied before pre-tokenization (tokenizer.json "normalizer").
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "moe/status.h"

namespace moe::tok {

class Normalizer {
public:
    virtual ~Normalizer() = default;
    // `s` is valid UTF-8 and stays valid UTF-8.
    virtual Status normalize(std::string& s) const = 0;
};

// From a tokenizer.json "normalizer" object (not null). `where` names it in errors.
StatusOr<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Normalizer> make_nfc_normalizer();

}  // namespace moe::tok
