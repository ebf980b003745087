// Decoders: token strings back to text (tokenizer.json "decoder"), as a chain of list-to-list
// steps exactly like HF's decode_chain, so that partial decodes behave as HF's do.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "moe/status.h"
#include "tokenizer/limits.h"

namespace moe::tok {

class Decoder {
public:
    virtual ~Decoder() = default;
    virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// `depth`: the Sequence nesting level of `j`, at most kMaxSequenceDepth (limits.h). A Replace
// whose content is more than kMaxReplaceGrowth times its pattern is refused.
StatusOr<std::unique_ptr<Decoder>> parse_decoder(const nlohmann::json& j, const std::string& where, int depth = 0);
std::unique_ptr<Decoder> make_byte_level_decoder();

}  // namespace moe::tok
