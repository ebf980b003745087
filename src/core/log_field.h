// The one way client-supplied data reaches a log (server, engine): bounded and escaped.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moe {

inline constexpr size_t kMaxLoggedFieldBytes = 256;

// `value` made safe for one log line: control characters (including CR and LF, so a value
// cannot forge a line), DEL, backslash and bytes >= 0x80 are written as \n, \r, \t, \\ or \xHH;
// at most `max_bytes` input bytes are kept, then "...(N bytes)" gives the full length.
std::string log_field(std::string_view value, size_t max_bytes = kMaxLoggedFieldBytes);

}  // namespace moe
