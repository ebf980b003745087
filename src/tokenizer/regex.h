// A PCRE2 pattern compiled once (UTF + UCP mode, JIT when available), shared by all threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/status.h"

namespace moe::tok {

class Regex {
public:
    // `origin` names the pattern's place in the file for error messages.
    static StatusOr<std::unique_ptr<Regex>> compile(const std::string& pattern, const std::string& origin);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends the [begin, end) byte ranges of all non-overlapping, non-empty matches in `text`
    // (which must be valid UTF-8). Fails only when PCRE2 hits a resource limit.
    Status find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

    const std::string& pattern() const { return pattern_; }

private:
    Regex() = default;
    std::string pattern_;
    void* code_ = nullptr;  // pcre2_code*; kept opaque so PCRE2's header stays in regex.cc
    bool jit_ = false;
};

}  // namespace moe::tok
