#include "engine/stop_checker.h"

#include <algorithm>

namespace moe {

const char* finish_reason_name(FinishReason reason) {
    switch (reason) {
        case FinishReason::kNone:
            return "none";
        case FinishReason::kStop:
            return "stop";
        case FinishReason::kLength:
            return "length";
        case FinishReason::kCancelled:
            return "cancelled";
        case FinishReason::kError:
            return "error";
        case FinishReason::kDeadline:
            return "deadline";
    }
    return "?";
}

Status validate(const StopCriteria& c, int64_t max_model_len) {
    if (c.max_tokens < 1 || c.max_tokens > max_model_len)
        return invalid_argument("max_tokens must be in [1, " + std::to_string(max_model_len) +
                                "] (the context length), got " + std::to_string(c.max_tokens));
    if (c.min_tokens < 0 || c.min_tokens > c.max_tokens)
        return invalid_argument("min_tokens must be in [0, max_tokens = " + std::to_string(c.max_tokens) + "], got " +
                                std::to_string(c.min_tokens));
    if (c.stop_strings.size() > kMaxStopStrings)
        return invalid_argument("stop: at most " + std::to_string(kMaxStopStrings) + " stop strings, got " +
                                std::to_string(c.stop_strings.size()));
    for (size_t i = 0; i < c.stop_strings.size(); ++i) {
        const size_t n = c.stop_strings[i].size();
        if (n == 0 || n > kMaxStopStringBytes)
            return invalid_argument("stop[" + std::to_string(i) + "]: length must be in [1, " +
                                    std::to_string(kMaxStopStringBytes) + "] bytes, got " + std::to_string(n));
    }
    if (c.stop_token_ids.size() > kMaxStopTokenIds)
        return invalid_argument("stop_token_ids: at most " + std::to_string(kMaxStopTokenIds) + ", got " +
                                std::to_string(c.stop_token_ids.size()));
    for (int32_t id : c.stop_token_ids)
        if (id < 0) return invalid_argument("stop_token_ids: " + std::to_string(id) + " is negative");
    return ok_status();
}

StopChecker::StopChecker(StopCriteria criteria) : c_(std::move(criteria)) {}

size_t StopChecker::holdback_length() const {
    size_t best = 0;
    for (const std::string& s : c_.stop_strings) {
        // The longest k < |s| with held_ ending in s[0, k): such a suffix starts with s[0], so
        // only those start positions are compared.
        const size_t max_k = std::min(s.size() - 1, held_.size());
        for (size_t p = held_.size() - max_k; p < held_.size() && held_.size() - p > best; ++p)
            if (held_[p] == s[0] && held_.compare(p, std::string::npos, s, 0, held_.size() - p) == 0) {
                best = held_.size() - p;
                break;
            }
    }
    return best;
}

StopUpdate StopChecker::on_token(int32_t token, std::string_view text_delta) {
    StopUpdate u;
    if (finished_ != FinishReason::kNone) {
        u.finish = finished_;  // the engine should not call again; say the same thing, emit nothing
        return u;
    }
    ++generated_;
    const bool stops_allowed = generated_ >= c_.min_tokens;
    const bool is_eos =
        !c_.ignore_eos && std::find(c_.eos_token_ids.begin(), c_.eos_token_ids.end(), token) != c_.eos_token_ids.end();
    const bool is_stop_id =
        std::find(c_.stop_token_ids.begin(), c_.stop_token_ids.end(), token) != c_.stop_token_ids.end();
    if (stops_allowed && (is_eos || is_stop_id)) {
        // The stop token's own text is not emitted; text held for a partial match now is.
        u.text = std::move(held_);
        held_.clear();
        u.finish = finished_ = FinishReason::kStop;
        u.matched_token = token;
        return u;
    }
    held_.append(text_delta);
    if (stops_allowed && !c_.stop_strings.empty()) {
        // The match that ends first wins (at the same end, the longer one): that is what the
        // stream would give if the text came one byte at a time, so it does not depend on how
        // the text is cut into deltas.
        size_t best_end = std::string::npos;
        const std::string* which = nullptr;
        for (const std::string& s : c_.stop_strings) {
            const size_t pos = held_.find(s);
            if (pos == std::string::npos) continue;
            const size_t end = pos + s.size();
            if (which == nullptr || end < best_end || (end == best_end && s.size() > which->size())) {
                best_end = end;
                which = &s;
            }
        }
        if (which != nullptr) {
            u.text = held_.substr(0, best_end - which->size());
            u.finish = finished_ = FinishReason::kStop;
            u.matched = *which;
            held_.clear();
            return u;
        }
    }
    if (generated_ >= c_.max_tokens) {
        u.text = std::move(held_);
        held_.clear();
        u.finish = finished_ = FinishReason::kLength;
        return u;
    }
    // Held back even while min_tokens suppresses matching, so that a stop string completed by
    // the first token allowed to stop still matches (and is still withheld).
    const size_t keep = holdback_length();
    u.text = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return u;
}

std::string StopChecker::flush() {
    std::string out = std::move(held_);
    held_.clear();
    return out;
}

}  // namespace moe
