// Small helpers the benchmark programs share for their flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::bench {

// "1,4,16" -> {1, 4, 16} (std::stoll on each item: a bad item throws).
inline std::vector<int64_t> parse_int_list(const std::string& s) {
    std::vector<int64_t> v;
    for (size_t pos = 0; pos < s.size();) {
        const size_t comma = s.find(',', pos);
        v.push_back(std::stoll(s.substr(pos, comma - pos)));
        pos = comma == std::string::npos ? s.size() : comma + 1;
    }
    return v;
}

}  // namespace moe::bench
