#include "template/lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "tokenizer/unicode.h"

namespace moe::tmpl {
namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Python's str.rstrip() on the ASCII whitespace set (templates put no other space before tags).
std::string rstrip_ws(const std::string& s) {
    size_t end = s.size();
    while (end > 0 && is_space(s[end - 1])) --end;
    return s.substr(0, end);
}

Status lex_error(int line, const std::string& what) {
    return invalid_argument("chat template syntax error at line " + std::to_string(line) + ": " + what);
}

// newline_re.split + "\n".join in jinja2: \r\n and \r become \n; one trailing newline is dropped
// (keep_trailing_newline=False).
std::string normalize_newlines(const std::string& src) {
    std::string out;
    out.reserve(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
        if (src[i] == '\r') {
            out.push_back('\n');
            if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
        } else {
            out.push_back(src[i]);
        }
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

void append_utf8_cp(std::string& out, uint32_t cp) {
    tok::append_utf8(out, static_cast<char32_t>(cp));
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Python's "unicode-escape" decoding of a string literal's body (what jinja2 applies).
Status decode_string(const std::string& body, int line, std::string& out) {
    for (size_t i = 0; i < body.size(); ++i) {
        const char c = body[i];
        if (c != '\\' || i + 1 >= body.size()) {
            out.push_back(c);
            continue;
        }
        const char e = body[++i];
        switch (e) {
            case '\n':
                break;  // line continuation
            case '\\':
                out.push_back('\\');
                break;
            case '\'':
                out.push_back('\'');
                break;
            case '"':
                out.push_back('"');
                break;
            case 'a':
                out.push_back('\a');
                break;
            case 'b':
                out.push_back('\b');
                break;
            case 'f':
                out.push_back('\f');
                break;
            case 'n':
                out.push_back('\n');
                break;
            case 'r':
                out.push_back('\r');
                break;
            case 't':
                out.push_back('\t');
                break;
            case 'v':
                out.push_back('\v');
                break;
            case 'x':
            case 'u':
            case 'U': {
                const size_t n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
                uint32_t cp = 0;
                for (size_t k = 1; k <= n; ++k) {
                    const int h = i + k < body.size() ? hex_value(body[i + k]) : -1;
                    if (h < 0) return lex_error(line, std::string("truncated \\") + e + " escape in a string literal");
                    cp = cp * 16 + static_cast<uint32_t>(h);
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                    return lex_error(line, "escape outside Unicode scalar values in a string literal");
                }
                append_utf8_cp(out, cp);
                i += n;
                break;
            }
            default:
                if (e >= '0' && e <= '7') {
                    uint32_t cp = static_cast<uint32_t>(e - '0');
                    for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k) {
                        cp = cp * 8 + static_cast<uint32_t>(body[++i] - '0');
                    }
                    append_utf8_cp(out, cp);
                } else {
                    // Unknown escapes keep their backslash, as in Python.
                    out.push_back('\\');
                    out.push_back(e);
                }
        }
    }
    return ok_status();
}

class Lexer {
public:
    explicit Lexer(std::string src) : s_(std::move(src)) {}

    StatusOr<std::vector<Token>> run() {
        size_t pos = 0;
        bool line_starting = true;
        while (pos < s_.size()) {
            // Root state: text up to the next tag start.
            size_t tag = pos;
            char kind = 0;
            while (true) {
                tag = s_.find('{', tag);
                if (tag == std::string::npos || tag + 1 >= s_.size()) {
                    tag = std::string::npos;
                    break;
                }
                const char n = s_[tag + 1];
                if (n == '{' || n == '%' || n == '#') {
                    kind = n;
                    break;
                }
                ++tag;
            }
            if (tag == std::string::npos) {
                emit_data(s_.substr(pos), line_of(pos));
                break;
            }
            std::string text = s_.substr(pos, tag - pos);
            size_t after = tag + 2;
            char sign = 0;
            if (after < s_.size() && (s_[after] == '-' || s_[after] == '+')) sign = s_[after++];
            if (sign == '-') {
                text = rstrip_ws(text);
            } else if (sign != '+' && kind != '{') {
                // lstrip_blocks: spaces between the line start and a block or comment tag go.
                const size_t nl = text.rfind('\n');
                const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
                if (l_pos > 0 || line_starting) {
                    bool all_ws = l_pos < text.size();
                    for (size_t k = l_pos; k < text.size(); ++k) all_ws = all_ws && is_space(text[k]);
                    if (all_ws) text.resize(l_pos);
                }
            }
            emit_data(text, line_of(pos));
            if (kind == '#') {
                auto end = lex_comment(after);
                if (!end.ok()) return end.status();
                line_starting = *end > 0 && s_[*end - 1] == '\n';
                pos = *end;
                continue;
            }
            if (kind == '%') {
                auto raw_end = try_raw(after);
                if (!raw_end.ok()) return raw_end.status();
                if (*raw_end != 0) {
                    line_starting = s_[*raw_end - 1] == '\n';
                    pos = *raw_end;
                    continue;
                }
            }
            auto end = lex_tag(kind == '%', after, line_of(tag));
            if (!end.ok()) return end.status();
            line_starting = *end > 0 && s_[*end - 1] == '\n';
            pos = *end;
        }
        toks_.push_back(Token{Token::Kind::kEof, "", 0, 0, line_of(s_.size())});
        return std::move(toks_);
    }

private:
    int line_of(size_t pos) {
        // Lines are counted incrementally: positions only move forward.
        while (line_pos_ < pos && line_pos_ < s_.size()) {
            if (s_[line_pos_] == '\n') ++line_;
            ++line_pos_;
        }
        return line_;
    }

    void emit_data(const std::string& text, int line) {
        if (text.empty()) return;
        toks_.push_back(Token{Token::Kind::kData, text, 0, 0, line});
    }

    // `{#` ... `#}` with `-#}` eating the whitespace after and trim_blocks eating one newline.
    StatusOr<size_t> lex_comment(size_t start) {
        const size_t q = s_.find("#}", start);
        if (q == std::string::npos) return lex_error(line_of(start), "missing end of comment tag");
        size_t end = q + 2;
        if (q > start && s_[q - 1] == '-') {
            while (end < s_.size() && is_space(s_[end])) ++end;
        } else if (q > start && s_[q - 1] == '+') {
        } else if (end < s_.size() && s_[end] == '\n') {
            ++end;
        }
        return end;
    }

    // {% raw %}...{% endraw %}: returns the position after the endraw tag, 0 when this is no raw tag.
    StatusOr<size_t> try_raw(size_t p) {
        size_t k = p;
        while (k < s_.size() && is_space(s_[k])) ++k;
        if (s_.compare(k, 3, "raw") != 0) return size_t{0};
        k += 3;
        while (k < s_.size() && is_space(s_[k])) ++k;
        if (s_.compare(k, 3, "-%}") == 0) {
            k += 3;
            while (k < s_.size() && is_space(s_[k])) ++k;
        } else if (s_.compare(k, 2, "%}") == 0) {
            k += 2;
        } else {
            return size_t{0};
        }
        const int line = line_of(p);
        size_t search = k;
        while (true) {
            const size_t t = s_.find("{%", search);
            if (t == std::string::npos) return lex_error(line, "missing end of raw directive");
            size_t m = t + 2;
            char sign = 0;
            if (m < s_.size() && (s_[m] == '-' || s_[m] == '+')) sign = s_[m++];
            while (m < s_.size() && is_space(s_[m])) ++m;
            if (s_.compare(m, 6, "endraw") != 0) {
                search = t + 2;
                continue;
            }
            m += 6;
            while (m < s_.size() && is_space(s_[m])) ++m;
            size_t end;
            if (s_.compare(m, 3, "+%}") == 0) {
                end = m + 3;
            } else if (s_.compare(m, 3, "-%}") == 0) {
                end = m + 3;
                while (end < s_.size() && is_space(s_[end])) ++end;
            } else if (s_.compare(m, 2, "%}") == 0) {
                end = m + 2;
                if (end < s_.size() && s_[end] == '\n') ++end;
            } else {
                search = t + 2;
                continue;
            }
            std::string text = s_.substr(k, t - k);
            if (sign == '-') {
                text = rstrip_ws(text);
            } else if (sign != '+') {
                const size_t nl = text.rfind('\n');
                if (nl != std::string::npos) {
                    bool all_ws = nl + 1 < text.size();
                    for (size_t q = nl + 1; q < text.size(); ++q) all_ws = all_ws && is_space(text[q]);
                    if (all_ws) text.resize(nl + 1);
                }
            }
            emit_data(text, line);
            return end;
        }
    }

    // The inside of {{ }} or {% %}: expression tokens up to the end tag (outside brackets).
    StatusOr<size_t> lex_tag(bool block, size_t p, int open_line) {
        toks_.push_back(Token{block ? Token::Kind::kBlockBegin : Token::Kind::kVarBegin, "", 0, 0, open_line});
        std::vector<char> balance;
        while (true) {
            while (p < s_.size() && is_space(s_[p])) ++p;
            if (p >= s_.size()) {
                return lex_error(open_line,
                                 block ? "missing end of block tag '%}'" : "missing end of variable tag '}}'");
            }
            const int line = line_of(p);
            if (balance.empty()) {
                if (block) {
                    if (s_.compare(p, 3, "+%}") == 0) {
                        toks_.push_back(Token{Token::Kind::kBlockEnd, "", 0, 0, line});
                        return p + 3;
                    }
                    if (s_.compare(p, 3, "-%}") == 0) {
                        p += 3;
                        while (p < s_.size() && is_space(s_[p])) ++p;
                        toks_.push_back(Token{Token::Kind::kBlockEnd, "", 0, 0, line});
                        return p;
                    }
                    if (s_.compare(p, 2, "%}") == 0) {
                        p += 2;
                        if (p < s_.size() && s_[p] == '\n') ++p;  // trim_blocks
                        toks_.push_back(Token{Token::Kind::kBlockEnd, "", 0, 0, line});
                        return p;
                    }
                } else {
                    if (s_.compare(p, 3, "-}}") == 0) {
                        p += 3;
                        while (p < s_.size() && is_space(s_[p])) ++p;
                        toks_.push_back(Token{Token::Kind::kVarEnd, "", 0, 0, line});
                        return p;
                    }
                    if (s_.compare(p, 2, "}}") == 0) {
                        toks_.push_back(Token{Token::Kind::kVarEnd, "", 0, 0, line});
                        return p + 2;
                    }
                }
            }
            const char c = s_[p];
            if (std::isdigit(static_cast<unsigned char>(c))) {
                p = lex_number(p, line);
                continue;
            }
            if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
                size_t e = p;
                while (e < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_')) ++e;
                toks_.push_back(Token{Token::Kind::kName, s_.substr(p, e - p), 0, 0, line});
                p = e;
                continue;
            }
            if (c == '\'' || c == '"') {
                size_t e = p + 1;
                while (e < s_.size() && s_[e] != c) e += s_[e] == '\\' ? 2 : 1;
                if (e >= s_.size()) return lex_error(line, "unterminated string literal");
                std::string decoded;
                MOE_RETURN_IF_ERROR(decode_string(s_.substr(p + 1, e - p - 1), line, decoded));
                toks_.push_back(Token{Token::Kind::kString, std::move(decoded), 0, 0, line});
                p = e + 1;
                continue;
            }
            static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
            std::string op;
            for (const char* two : kTwo) {
                if (s_.compare(p, 2, two) == 0) op = two;
            }
            if (op.empty()) {
                if (std::strchr("+-/*%~[](){}><=.:|,;", c) == nullptr || c == 0) {
                    return lex_error(line, std::string("unexpected character '") + c + "'");
                }
                op = std::string(1, c);
            }
            if (op == "(" || op == "[" || op == "{") {
                balance.push_back(op == "(" ? ')' : (op == "[" ? ']' : '}'));
            } else if (op == ")" || op == "]" || op == "}") {
                if (balance.empty()) return lex_error(line, "unexpected '" + op + "'");
                if (balance.back() != op[0]) {
                    return lex_error(line,
                                     "unexpected '" + op + "', expected '" + std::string(1, balance.back()) + "'");
                }
                balance.pop_back();
            }
            toks_.push_back(Token{Token::Kind::kOp, op, 0, 0, line});
            p += op.size();
        }
    }

    size_t lex_number(size_t p, int line) {
        size_t e = p;
        std::string digits;
        auto take_digits = [&](std::string& into) {
            while (e < s_.size() &&
                   (std::isdigit(static_cast<unsigned char>(s_[e])) ||
                    (s_[e] == '_' && e + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[e + 1]))))) {
                if (s_[e] != '_') into.push_back(s_[e]);
                ++e;
            }
        };
        take_digits(digits);
        bool is_float = false;
        std::string text = digits;
        if (e + 1 < s_.size() && s_[e] == '.' && std::isdigit(static_cast<unsigned char>(s_[e + 1]))) {
            is_float = true;
            text.push_back('.');
            ++e;
            take_digits(text);
        }
        if (e < s_.size() && (s_[e] == 'e' || s_[e] == 'E')) {
            size_t k = e + 1;
            if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
            if (k < s_.size() && std::isdigit(static_cast<unsigned char>(s_[k]))) {
                is_float = true;
                text += s_.substr(e, k - e);
                e = k;
                take_digits(text);
            }
        }
        Token t{is_float ? Token::Kind::kFloat : Token::Kind::kInt, text, 0, 0, line};
        if (is_float) {
            t.float_value = std::strtod(text.c_str(), nullptr);
        } else {
            errno = 0;
            t.int_value = std::strtoll(text.c_str(), nullptr, 10);
            if (errno == ERANGE) {
                // Python keeps big ints exact; they never occur in chat templates, so a float is fine.
                t.kind = Token::Kind::kFloat;
                t.float_value = std::strtod(text.c_str(), nullptr);
            }
        }
        toks_.push_back(std::move(t));
        return e;
    }

    std::string s_;
    std::vector<Token> toks_;
    size_t line_pos_ = 0;
    int line_ = 1;
};

}  // namespace

StatusOr<std::vector<Token>> tokenize(const std::string& source) {
    Lexer lexer(normalize_newlines(source));
    return lexer.run();
}

}  // namespace moe::tmpl
