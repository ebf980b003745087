// UTF-8 and Unicode helpers shared by the tokenizer stages.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe::tok {

// Offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF are invalid), or npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

// Length of the UTF-8 sequence that starts with byte `b` (1 for a stray continuation byte, so
// that callers always advance).
inline size_t utf8_len(unsigned char b) {
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0) return 4;
    return 1;
}

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i past it.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);

// Unicode classes with the meaning Rust's char methods give them (HF tokenizers uses those).
bool is_whitespace(char32_t cp);
bool is_alphanumeric(char32_t cp);

// NFC normal form (via utf8proc). Pure ASCII is returned as is without a copy of work.
std::string nfc(std::string_view s);

// GPT-2's byte <-> printable code point table.
const std::array<char32_t, 256>& byte_to_code_point();
// The byte a code point stands for, or -1 when it is not in the table.
int code_point_to_byte(char32_t cp);

// Appends the bytes of `s` with every invalid UTF-8 sequence replaced by U+FFFD, one per
// maximal invalid subpart as Rust's String::from_utf8_lossy does.
void append_utf8_lossy(std::string& out, std::string_view s);

}  // namespace moe::tok
