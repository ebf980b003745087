// Stop conditions for one request, checked token by token on ids and on detokenized text.
//
// Stop strings are matched on the accumulated text across token boundaries. Text that could be
// the start of a stop string is held back until it cannot be; on a match, the stop string and
// whatever follows it are withheld, the text before it is emitted. When several stop strings
// match, the one that ends first wins (at the same end, the longer): the outcome does not depend
// on how the text is cut into deltas. With valid UTF-8 stop strings and deltas, emitted pieces
// are whole characters (a held suffix starts where a stop string starts).
//
// EOS ids (unless ignore_eos) and stop_token_ids finish with kStop without emitting the token's
// own text. min_tokens: no stop of any kind until the token that brings the count to min_tokens
// (vLLM's rule; that token may itself stop). max_tokens finishes with kLength after emitting the
// last token's text and everything held. Once finished, further calls emit nothing and repeat
// the finish reason. Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/status.h"

namespace moe {

inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxStopTokenIds = 64;

struct StopCriteria {
    int64_t max_tokens = 16;
    int64_t min_tokens = 0;  // no stop of any kind before the min_tokens-th token
    std::vector<std::string> stop_strings;
    std::vector<int32_t> stop_token_ids;
    std::vector<int32_t> eos_token_ids;  // filled in by the engine from the model
    bool ignore_eos = false;
};

// INVALID_ARGUMENT naming the field and the limit.
Status validate(const StopCriteria& criteria, int64_t max_model_len);

// kDeadline: GenerateParams::deadline passed before the request finished.
enum class FinishReason { kNone, kStop, kLength, kCancelled, kError, kDeadline };
const char* finish_reason_name(FinishReason reason);

struct StopUpdate {
    std::string text;  // safe to emit now
    FinishReason finish = FinishReason::kNone;
    std::string matched;                   // the stop string that matched
    std::optional<int32_t> matched_token;  // the EOS or stop token that matched
};

class StopChecker {
public:
    explicit StopChecker(StopCriteria criteria);

    // One generated token and the text it added (possibly empty).
    StopUpdate on_token(int32_t token, std::string_view text_delta);

    // Held-back text still owed to the client when the stream ends for a reason other than a
    // stop-string match. Clears it.
    std::string flush();

    int64_t num_generated() const { return generated_; }

private:
    // Bytes at the end of held_ that are a proper prefix of some stop string.
    size_t holdback_length() const;

    StopCriteria c_;
    int64_t generated_ = 0;
    FinishReason finished_ = FinishReason::kNone;
    std::string held_;
};

}  // namespace moe
