#include "core/log_field.h"

namespace moe {

std::string log_field(std::string_view value, size_t max_bytes) {
    static const char kHex[] = "0123456789abcdef";
    const size_t n = value.size() < max_bytes ? value.size() : max_bytes;
    std::string out;
    out.reserve(n + 16);
    for (size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(value[i]);
        switch (c) {
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\\':
                out += "\\\\";
                break;
            default:
                // NOTE: bytes >= 0x80 are escaped too: a truncated or invalid UTF-8 sequence must
                // not break the log file's encoding, and U+2028-style separators stay visible.
                if (c < 0x20 || c >= 0x7f) {
                    out += "\\x";
                    out.push_back(kHex[c >> 4]);
                    out.push_back(kHex[c & 15]);
                } else {
                    out.push_back(static_cast<char>(c));
                }
        }
    }
    if (n < value.size()) out += "...(" + std::to_string(value.size()) + " bytes)";
    return out;
}

}  // namespace moe
