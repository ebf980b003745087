// Filters, tests, string/dict/list methods and globals of the template interpreter, each with the
// Python (jinja2 3.1, CPython str) semantics transformers' renderer gives it.
#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <unordered_map>

#include "template/interp.h"
#include "tokenizer/unicode.h"

namespace moe::tmpl {
namespace {

// --- Unicode helpers -----------------------------------------------------------------------------

std::u32string decode(const std::string& s) {
    std::u32string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const size_t n = tok::utf8_len(static_cast<unsigned char>(s[i]));
        if (n == 1 || i + n > s.size()) {
            out.push_back(static_cast<unsigned char>(s[i]));
            ++i;
            continue;
        }
        size_t j = i;
        out.push_back(tok::next_code_point(s, j));
        i = j;
    }
    return out;
}

std::string encode(const std::u32string& cps) {
    std::string out;
    out.reserve(cps.size());
    for (char32_t c : cps) tok::append_utf8(out, c);
    return out;
}

// CPython's str.isspace().
bool is_py_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

char32_t to_upper(char32_t c) {
    return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}
char32_t to_lower(char32_t c) {
    return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
bool is_cased(char32_t c) {
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}
bool is_alpha(char32_t c) {
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}
bool is_digit(char32_t c) {
    return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}

std::string map_chars(const std::string& s, char32_t (*f)(char32_t)) {
    std::u32string cps = decode(s);
    for (auto& c : cps) c = f(c);
    return encode(cps);
}

std::string py_upper(const std::string& s) {
    return map_chars(s, to_upper);
}
std::string py_lower(const std::string& s) {
    return map_chars(s, to_lower);
}

std::string py_capitalize(const std::string& s) {
    std::u32string cps = decode(s);
    for (size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? to_upper(cps[i]) : to_lower(cps[i]);
    return encode(cps);
}

// CPython's str.title(): a cased character after an uncased one starts a word.
std::string py_title(const std::string& s) {
    std::u32string cps = decode(s);
    bool prev_cased = false;
    for (auto& c : cps) {
        const bool cased = is_cased(c);
        c = cased ? (prev_cased ? to_lower(c) : to_upper(c)) : c;
        prev_cased = cased;
    }
    return encode(cps);
}

enum class StripSide { kBoth, kLeft, kRight };

std::string py_strip(const std::string& s, const Value* chars, StripSide side, Interp& in) {
    std::u32string cps = decode(s);
    std::u32string set;
    const bool by_space = !chars || chars->is_none();
    if (!by_space) {
        if (!chars->is_string()) in.fail("strip arg must be None or str");
        set = decode(chars->as_string());
    }
    auto strip_it = [&](char32_t c) { return by_space ? is_py_space(c) : set.find(c) != std::u32string::npos; };
    size_t b = 0, e = cps.size();
    if (side != StripSide::kRight) {
        while (b < e && strip_it(cps[b])) ++b;
    }
    if (side != StripSide::kLeft) {
        while (e > b && strip_it(cps[e - 1])) --e;
    }
    return encode(cps.substr(b, e - b));
}

ValueList py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right, Interp& in) {
    ValueList out;
    if (!sep || sep->is_none()) {
        // Runs of whitespace separate; leading and trailing whitespace yields no empty parts.
        std::u32string cps = decode(s);
        std::vector<std::u32string> parts;
        if (!from_right) {
            size_t i = 0;
            while (i < cps.size()) {
                while (i < cps.size() && is_py_space(cps[i])) ++i;
                if (i >= cps.size()) break;
                if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
                    size_t e = cps.size();
                    while (e > i && is_py_space(cps[e - 1])) --e;
                    parts.push_back(cps.substr(i, e - i));
                    break;
                }
                size_t j = i;
                while (j < cps.size() && !is_py_space(cps[j])) ++j;
                parts.push_back(cps.substr(i, j - i));
                i = j;
            }
        } else {
            size_t i = cps.size();
            while (i > 0) {
                while (i > 0 && is_py_space(cps[i - 1])) --i;
                if (i == 0) break;
                if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
                    size_t b = 0;
                    while (b < i && is_py_space(cps[b])) ++b;
                    parts.push_back(cps.substr(b, i - b));
                    break;
                }
                size_t j = i;
                while (j > 0 && !is_py_space(cps[j - 1])) --j;
                parts.push_back(cps.substr(j, i - j));
                i = j;
            }
            std::reverse(parts.begin(), parts.end());
        }
        for (auto& p : parts) out.push_back(Value::string(encode(p)));
        return out;
    }
    if (!sep->is_string()) in.fail("must be str or None, not " + sep->type_name());
    const std::string& d = sep->as_string();
    if (d.empty()) in.fail("empty separator");
    std::vector<std::string> parts;
    if (!from_right) {
        size_t pos = 0;
        while (true) {
            if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) break;
            const size_t f = s.find(d, pos);
            if (f == std::string::npos) break;
            parts.push_back(s.substr(pos, f - pos));
            pos = f + d.size();
        }
        parts.push_back(s.substr(pos));
    } else {
        size_t end = s.size();
        while (true) {
            if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) break;
            if (end < d.size()) break;
            const size_t f = s.rfind(d, end - d.size());
            if (f == std::string::npos) break;
            parts.push_back(s.substr(f + d.size(), end - f - d.size()));
            end = f;
        }
        parts.push_back(s.substr(0, end));
        std::reverse(parts.begin(), parts.end());
    }
    for (auto& p : parts) out.push_back(Value::string(std::move(p)));
    in.charge(s.size() + out.size() * sizeof(Value), "split");
    return out;
}

std::string py_replace(Interp& in, const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count) {
    std::string out;
    if (old.empty()) {
        // Python inserts the replacement before every character and at the end.
        std::u32string cps = decode(s);
        int64_t done = 0;
        for (char32_t c : cps) {
            if (count < 0 || done < count) {
                out += repl;
                ++done;
            }
            tok::append_utf8(out, c);
            in.charge(0, "replace");
            if (out.size() > (size_t{64} << 20)) in.charge(out.size(), "replace");
        }
        if (count < 0 || done < count) out += repl;
        in.charge(out.size(), "replace");
        return out;
    }
    size_t pos = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
        const size_t f = s.find(old, pos);
        if (f == std::string::npos) break;
        out.append(s, pos, f - pos);
        out += repl;
        pos = f + old.size();
        ++done;
        if (out.size() > (size_t{64} << 20)) in.charge(out.size(), "replace");
    }
    out.append(s, pos, std::string::npos);
    in.charge(out.size(), "replace");
    return out;
}

// Python's str.splitlines() (without keepends).
std::vector<std::string> py_splitlines(const std::string& s) {
    std::vector<std::string> lines;
    std::u32string cps = decode(s);
    std::u32string cur;
    for (size_t i = 0; i < cps.size(); ++i) {
        const char32_t c = cps[i];
        if (c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
            c == 0x2028 || c == 0x2029) {
            lines.push_back(encode(cur));
            cur.clear();
            if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
        } else {
            cur.push_back(c);
        }
    }
    if (!cur.empty()) lines.push_back(encode(cur));
    return lines;
}

int64_t arg_int(Interp& in, const Value* v, int64_t dflt, const char* what) {
    if (!v || v->is_none()) return dflt;
    if (!v->is_int() && !v->is_bool()) in.fail(std::string(what) + " must be an integer, got " + v->type_name());
    return v->as_int();
}

bool arg_bool(const Value* v, bool dflt) {
    return v ? v->truthy() : dflt;
}

const std::string& arg_str(Interp& in, const Value* v, const char* what) {
    if (!v || !v->is_string()) in.fail(std::string(what) + " must be a string");
    return v->as_string();
}

size_t py_len(Interp& in, const Value& v) {
    switch (v.kind()) {
        case Value::Kind::kUndefined:
            return 0;
        case Value::Kind::kString:
            return utf8_length(v.as_string());
        case Value::Kind::kList:
            return v.as_list().size();
        case Value::Kind::kDict:
            return v.as_dict().items.size();
        default:
            in.fail("object of type '" + v.type_name() + "' has no len()");
    }
}

// Jinja's attribute path for selectattr/map/sort: "a.b.0" looks up a, then b, then item 0.
Value attr_path(Interp& in, const Value& v, const std::string& path) {
    Value cur = v;
    size_t pos = 0;
    while (pos <= path.size()) {
        const size_t dot = path.find('.', pos);
        const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
        bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
        if (cur.is_undefined()) return cur;
        int64_t index = 0;
        if (numeric) {
            // Past int64 no list has that element: the part is then looked up as a name (undefined).
            const auto res = std::from_chars(part.data(), part.data() + part.size(), index);
            numeric = res.ec == std::errc() && res.ptr == part.data() + part.size();
        }
        cur = numeric ? in.get_item(cur, Value::integer(index)) : in.get_item(cur, Value::string(part));
        if (dot == std::string::npos) break;
        pos = dot + 1;
    }
    return cur;
}

// Python ordering for sort/dictsort/min/max; strings compared case-folded unless case_sensitive.
int compare_values(Interp& in, const Value& a, const Value& b, bool case_sensitive) {
    if (a.is_number() && b.is_number()) {
        const double x = a.as_float(), y = b.as_float();
        return x < y ? -1 : (x > y ? 1 : 0);
    }
    if (a.is_string() && b.is_string()) {
        if (case_sensitive) return a.as_string().compare(b.as_string());
        return py_lower(a.as_string()).compare(py_lower(b.as_string()));
    }
    if (a.is_list() && b.is_list()) {
        const auto& x = a.as_list();
        const auto& y = b.as_list();
        for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
            const int c = compare_values(in, x[i], y[i], case_sensitive);
            if (c != 0) return c;
        }
        return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
    }
    in.fail("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

std::string html_escape(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&#34;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out.push_back(c);
        }
    }
    return out;
}

// Python's int(str): optional sign, digits with single underscores between them, surrounding spaces.
bool parse_py_int(const std::string& text, int64_t base, int64_t& out) {
    std::string s = text;
    size_t b = 0, e = s.size();
    while (b < e && is_py_space(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && is_py_space(static_cast<unsigned char>(s[e - 1]))) --e;
    s = s.substr(b, e - b);
    if (s.empty()) return false;
    bool neg = false;
    size_t i = 0;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        i = 1;
    }
    if (i >= s.size()) return false;
    // Python accepts the prefix of its own base (int('0x1A', 16)); base 0 picks it from the prefix.
    if (i + 1 < s.size() && s[i] == '0') {
        const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 1])));
        const int64_t pb = p == 'x' ? 16 : (p == 'o' ? 8 : (p == 'b' ? 2 : 0));
        if (pb != 0 && (base == pb || base == 0)) {
            base = pb;
            i += 2;
        }
    }
    if (base == 0) base = 10;
    if (base < 2 || base > 36) return false;
    __int128 v = 0;
    bool prev_digit = false;
    for (; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '_') {
            if (!prev_digit) return false;
            prev_digit = false;
            continue;
        }
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'z') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'Z') {
            d = c - 'A' + 10;
        } else {
            return false;
        }
        if (d >= base) return false;
        v = v * base + d;
        if (v > static_cast<__int128>(INT64_MAX) + 1) return false;
        prev_digit = true;
    }
    if (!prev_digit) return false;
    if (neg) v = -v;
    if (v > INT64_MAX || v < INT64_MIN) return false;
    out = static_cast<int64_t>(v);
    return true;
}

bool parse_py_float(const std::string& text, double& out) {
    std::string s;
    for (char c : text) {
        if (c != '_') s.push_back(c);
    }
    size_t b = 0, e = s.size();
    while (b < e && is_py_space(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && is_py_space(static_cast<unsigned char>(s[e - 1]))) --e;
    s = s.substr(b, e - b);
    if (s.empty()) return false;
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
}

// --- JSON ----------------------------------------------------------------------------------------

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
    out.push_back('"');
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        switch (c) {
            case '"':
                out += "\\\"";
                continue;
            case '\\':
                out += "\\\\";
                continue;
            case '\n':
                out += "\\n";
                continue;
            case '\r':
                out += "\\r";
                continue;
            case '\t':
                out += "\\t";
                continue;
            case '\b':
                out += "\\b";
                continue;
            case '\f':
                out += "\\f";
                continue;
            default:
                break;
        }
        char buf[16];
        if (c < 0x20) {
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
        } else if (c >= 0x80 && ensure_ascii) {
            size_t j = i;
            const char32_t cp = tok::next_code_point(s, j);
            i = j - 1;
            if (cp >= 0x10000) {
                const char32_t v = cp - 0x10000;
                std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
            }
            out += buf;
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

std::string json_scalar(Interp& in, const Value& v, bool ensure_ascii) {
    std::string out;
    switch (v.kind()) {
        case Value::Kind::kNone:
            return "null";
        case Value::Kind::kBool:
            return v.as_bool() ? "true" : "false";
        case Value::Kind::kInt:
            return std::to_string(v.as_int());
        case Value::Kind::kFloat: {
            const double d = v.as_float();
            if (std::isnan(d)) return "NaN";
            if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
            return python_float_repr(d);
        }
        case Value::Kind::kString:
            json_string(out, v.as_string(), ensure_ascii);
            return out;
        default:
            break;
    }
    in.fail("Object of type " + (v.is_undefined() ? std::string("Undefined") : v.type_name()) +
            " is not JSON serializable");
}

struct JsonOpts {
    std::string indent;  // per level
    bool use_indent = false;
    std::string item_sep = ", ";
    std::string key_sep = ": ";
    bool sort_keys = false;
    bool ensure_ascii = false;
};

void dump_json(Interp& in, const Value& v, const JsonOpts& o, int level, std::string& out) {
    if (level > 256) in.fail("tojson: value nested deeper than 256 levels", StatusCode::kResourceExhausted);
    auto newline = [&](int lv) {
        out.push_back('\n');
        for (int i = 0; i < lv; ++i) out += o.indent;
    };
    if (v.is_list()) {
        const auto& l = v.as_list();
        if (l.empty()) {
            out += "[]";
            return;
        }
        out.push_back('[');
        for (size_t i = 0; i < l.size(); ++i) {
            if (i) out += o.item_sep;
            if (o.use_indent) newline(level + 1);
            dump_json(in, l[i], o, level + 1, out);
        }
        if (o.use_indent) newline(level);
        out.push_back(']');
        in.charge(out.size(), "tojson");
        return;
    }
    if (v.is_dict()) {
        std::vector<const std::pair<std::string, Value>*> items;
        for (const auto& kv : v.as_dict().items) items.push_back(&kv);
        if (items.empty()) {
            out += "{}";
            return;
        }
        if (o.sort_keys) {
            std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
        }
        out.push_back('{');
        for (size_t i = 0; i < items.size(); ++i) {
            if (i) out += o.item_sep;
            if (o.use_indent) newline(level + 1);
            json_string(out, items[i]->first, o.ensure_ascii);
            out += o.key_sep;
            dump_json(in, items[i]->second, o, level + 1, out);
        }
        if (o.use_indent) newline(level);
        out.push_back('}');
        in.charge(out.size(), "tojson");
        return;
    }
    out += json_scalar(in, v, o.ensure_ascii);
}

// --- filters -------------------------------------------------------------------------------------

using FilterFn = std::function<Value(Interp&, const Value&, CallArgs&)>;

Value f_tojson(Interp& in, const Value& v, CallArgs& a) {
    // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    a.check("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonOpts o;
    o.ensure_ascii = arg_bool(a.get(0, "ensure_ascii"), false);
    const Value* indent = a.get(1, "indent");
    if (indent && !indent->is_none()) {
        o.use_indent = true;
        if (indent->is_string()) {
            o.indent = indent->as_string();
        } else {
            const int64_t n = arg_int(in, indent, 0, "tojson indent");
            o.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(n, 0, 64)), ' ');
        }
        o.item_sep = ",";
    }
    const Value* seps = a.get(2, "separators");
    if (seps && !seps->is_none()) {
        if (!seps->is_list() || seps->as_list().size() != 2 || !seps->as_list()[0].is_string() ||
            !seps->as_list()[1].is_string()) {
            in.fail("tojson separators must be a pair of strings");
        }
        o.item_sep = seps->as_list()[0].as_string();
        o.key_sep = seps->as_list()[1].as_string();
    }
    o.sort_keys = arg_bool(a.get(3, "sort_keys"), false);
    std::string out;
    dump_json(in, v, o, 0, out);
    return Value::string(std::move(out));
}

Value f_length(Interp& in, const Value& v, CallArgs& a) {
    a.check("length", 0, {});
    return Value::integer(static_cast<int64_t>(py_len(in, v)));
}

Value f_trim(Interp& in, const Value& v, CallArgs& a) {
    a.check("trim", 1, {"chars"});
    return Value::string(py_strip(in.to_str(v), a.get(0, "chars"), StripSide::kBoth, in));
}

Value f_string(Interp& in, const Value& v, CallArgs& a) {
    a.check("string", 0, {});
    return v.is_string() ? v : Value::string(in.to_str(v));
}

Value f_lower(Interp& in, const Value& v, CallArgs& a) {
    a.check("lower", 0, {});
    return Value::string(py_lower(in.to_str(v)));
}

Value f_upper(Interp& in, const Value& v, CallArgs& a) {
    a.check("upper", 0, {});
    return Value::string(py_upper(in.to_str(v)));
}

// jinja's title filter: words start after '-', whitespace, '(', '{', '[' or '<'.
Value f_title(Interp& in, const Value& v, CallArgs& a) {
    a.check("title", 0, {});
    std::u32string cps = decode(in.to_str(v));
    bool start = true;
    for (auto& c : cps) {
        const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_py_space(c);
        if (sep) {
            start = true;
            continue;
        }
        c = start ? to_upper(c) : to_lower(c);
        start = false;
    }
    return Value::string(encode(cps));
}

Value f_capitalize(Interp& in, const Value& v, CallArgs& a) {
    a.check("capitalize", 0, {});
    return Value::string(py_capitalize(in.to_str(v)));
}

Value f_replace(Interp& in, const Value& v, CallArgs& a) {
    a.check("replace", 3, {"old", "new", "count"});
    const std::string& old = arg_str(in, a.get(0, "old"), "replace old");
    const std::string& repl = arg_str(in, a.get(1, "new"), "replace new");
    return Value::string(py_replace(in, in.to_str(v), old, repl, arg_int(in, a.get(2, "count"), -1, "count")));
}

Value f_join(Interp& in, const Value& v, CallArgs& a) {
    a.check("join", 2, {"d", "attribute"});
    const Value* d = a.get(0, "d");
    const std::string sep = d ? in.to_str(*d) : "";
    const Value* attr = a.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const auto& item : in.iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += in.to_str(attr && !attr->is_none() ? attr_path(in, item, in.to_str(*attr)) : item);
        if (out.size() > (size_t{64} << 20)) in.charge(out.size(), "join");
    }
    in.charge(out.size(), "join");
    return Value::string(std::move(out));
}

Value f_default(Interp&, const Value& v, CallArgs& a) {
    a.check("default", 2, {"default_value", "boolean"});
    const Value* d = a.get(0, "default_value");
    const bool boolean = arg_bool(a.get(1, "boolean"), false);
    if (v.is_undefined() || (boolean && !v.truthy())) return d ? *d : Value::string("");
    return v;
}

Value f_first(Interp& in, const Value& v, CallArgs& a) {
    a.check("first", 0, {});
    ValueList items = in.iterate(v);
    if (items.empty()) return Value::undefined("No first item, sequence was empty.");
    return items.front();
}

Value f_last(Interp& in, const Value& v, CallArgs& a) {
    a.check("last", 0, {});
    ValueList items = in.iterate(v);
    if (items.empty()) return Value::undefined("No last item, sequence was empty.");
    return items.back();
}

Value f_list(Interp& in, const Value& v, CallArgs& a) {
    a.check("list", 0, {});
    return Value::list(in.iterate(v));
}

Value f_items(Interp& in, const Value& v, CallArgs& a) {
    a.check("items", 0, {});
    if (v.is_undefined()) return Value::list({});
    if (!v.is_dict()) in.fail("can only get item pairs from a mapping, not " + v.type_name());
    ValueList out;
    for (const auto& kv : v.as_dict().items) out.push_back(Value::tuple({Value::string(kv.first), kv.second}));
    return Value::list(std::move(out));
}

Value select_impl(Interp& in, const Value& v, CallArgs& a, bool by_attr, bool keep_when) {
    ValueList out;
    const size_t first_test_arg = by_attr ? 1 : 0;
    std::string attr;
    if (by_attr) {
        if (a.args.empty() || !a.args[0].is_string()) in.fail("selectattr/rejectattr need an attribute name");
        attr = a.args[0].as_string();
    }
    std::string test;
    CallArgs targs;
    if (a.args.size() > first_test_arg) {
        if (!a.args[first_test_arg].is_string()) in.fail("the test name must be a string");
        test = a.args[first_test_arg].as_string();
        targs.args.assign(a.args.begin() + static_cast<long>(first_test_arg) + 1, a.args.end());
    }
    targs.kwargs = a.kwargs;
    for (const auto& item : in.iterate(v)) {
        const Value subject = by_attr ? attr_path(in, item, attr) : item;
        bool pass;
        if (test.empty()) {
            pass = subject.truthy();
        } else {
            CallArgs copy = targs;
            pass = in.apply_test(test, subject, copy);
        }
        if (pass == keep_when) out.push_back(item);
    }
    return Value::list(std::move(out));
}

Value f_map(Interp& in, const Value& v, CallArgs& a) {
    ValueList out;
    const Value* attribute = nullptr;
    const Value* dflt = nullptr;
    for (const auto& kw : a.kwargs) {
        if (kw.first == "attribute") attribute = &kw.second;
        if (kw.first == "default") dflt = &kw.second;
    }
    if (attribute) {
        const std::string path = in.to_str(*attribute);
        for (const auto& item : in.iterate(v)) {
            Value x = attr_path(in, item, path);
            out.push_back(x.is_undefined() && dflt ? *dflt : x);
        }
        return Value::list(std::move(out));
    }
    if (a.args.empty() || !a.args[0].is_string()) in.fail("map needs a filter name or attribute=");
    const std::string filter = a.args[0].as_string();
    CallArgs fargs;
    fargs.args.assign(a.args.begin() + 1, a.args.end());
    fargs.kwargs = a.kwargs;
    for (const auto& item : in.iterate(v)) {
        CallArgs copy = fargs;
        out.push_back(in.apply_filter(filter, item, copy));
    }
    return Value::list(std::move(out));
}

Value f_unique(Interp& in, const Value& v, CallArgs& a) {
    a.check("unique", 2, {"case_sensitive", "attribute"});
    const bool cs = arg_bool(a.get(0, "case_sensitive"), false);
    const Value* attr = a.get(1, "attribute");
    ValueList out;
    ValueList seen;
    for (const auto& item : in.iterate(v)) {
        Value key = attr && !attr->is_none() ? attr_path(in, item, in.to_str(*attr)) : item;
        if (!cs && key.is_string()) key = Value::string(py_lower(key.as_string()));
        bool dup = false;
        for (const auto& s : seen) dup = dup || values_equal(s, key);
        if (!dup) {
            seen.push_back(key);
            out.push_back(item);
        }
    }
    return Value::list(std::move(out));
}

Value f_int(Interp& in, const Value& v, CallArgs& a) {
    a.check("int", 2, {"default", "base"});
    const int64_t dflt = arg_int(in, a.get(0, "default"), 0, "int default");
    const int64_t base = arg_int(in, a.get(1, "base"), 10, "int base");
    if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
    if (v.is_float()) {
        const double d = v.as_float();
        if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return Value::integer(dflt);
        return Value::integer(static_cast<int64_t>(d));
    }
    if (v.is_string()) {
        int64_t out;
        if (parse_py_int(v.as_string(), base, out)) return Value::integer(out);
        double d;
        if (parse_py_float(v.as_string(), d) && std::isfinite(d) && std::fabs(d) < 9.2e18) {
            return Value::integer(static_cast<int64_t>(d));
        }
    }
    return Value::integer(dflt);
}

Value f_float(Interp& in, const Value& v, CallArgs& a) {
    a.check("float", 1, {"default"});
    const Value* d = a.get(0, "default");
    if (v.is_number()) return Value::floating(v.as_float());
    double out;
    if (v.is_string() && parse_py_float(v.as_string(), out)) return Value::floating(out);
    if (d) {
        if (!d->is_number()) in.fail("float default must be a number");
        return Value::floating(d->as_float());
    }
    return Value::floating(0.0);
}

Value f_abs(Interp& in, const Value& v, CallArgs& a) {
    a.check("abs", 0, {});
    if (v.is_float()) return Value::floating(std::fabs(v.as_float()));
    if (v.is_int() || v.is_bool()) {
        if (v.as_int() == INT64_MIN) in.fail("integer overflow in abs");
        return Value::integer(v.as_int() < 0 ? -v.as_int() : v.as_int());
    }
    in.fail("bad operand type for abs(): '" + v.type_name() + "'");
}

Value f_safe(Interp&, const Value& v, CallArgs& a) {
    a.check("safe", 0, {});
    return v;
}

Value f_escape(Interp& in, const Value& v, CallArgs& a) {
    a.check("escape", 0, {});
    return Value::string(html_escape(in.to_str(v)));
}

Value f_reverse(Interp& in, const Value& v, CallArgs& a) {
    a.check("reverse", 0, {});
    if (v.is_string()) {
        std::u32string cps = decode(v.as_string());
        std::reverse(cps.begin(), cps.end());
        return Value::string(encode(cps));
    }
    ValueList items = in.iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
}

Value f_sort(Interp& in, const Value& v, CallArgs& a) {
    a.check("sort", 3, {"reverse", "case_sensitive", "attribute"});
    const bool rev = arg_bool(a.get(0, "reverse"), false);
    const bool cs = arg_bool(a.get(1, "case_sensitive"), false);
    const Value* attr = a.get(2, "attribute");
    ValueList items = in.iterate(v);
    auto key = [&](const Value& x) { return attr && !attr->is_none() ? attr_path(in, x, in.to_str(*attr)) : x; };
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        const int c = compare_values(in, key(x), key(y), cs);
        return rev ? c > 0 : c < 0;
    });
    return Value::list(std::move(items));
}

Value f_dictsort(Interp& in, const Value& v, CallArgs& a) {
    a.check("dictsort", 3, {"case_sensitive", "by", "reverse"});
    const bool cs = arg_bool(a.get(0, "case_sensitive"), false);
    const Value* by = a.get(1, "by");
    const bool by_value = by && by->is_string() && by->as_string() == "value";
    const bool rev = arg_bool(a.get(2, "reverse"), false);
    if (!v.is_dict()) in.fail("dictsort needs a mapping, got " + v.type_name());
    ValueList items;
    for (const auto& kv : v.as_dict().items) items.push_back(Value::tuple({Value::string(kv.first), kv.second}));
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        const int c = compare_values(in, x.as_list()[by_value ? 1 : 0], y.as_list()[by_value ? 1 : 0], cs);
        return rev ? c > 0 : c < 0;
    });
    return Value::list(std::move(items));
}

Value f_wordcount(Interp& in, const Value& v, CallArgs& a) {
    a.check("wordcount", 0, {});
    // jinja: len(re.findall(r"\w+", s)).
    std::u32string cps = decode(in.to_str(v));
    int64_t n = 0;
    bool in_word = false;
    for (char32_t c : cps) {
        const bool w = is_alpha(c) || is_digit(c) || c == '_';
        if (w && !in_word) ++n;
        in_word = w;
    }
    return Value::integer(n);
}

Value f_indent(Interp& in, const Value& v, CallArgs& a) {
    a.check("indent", 3, {"width", "first", "blank"});
    const Value* w = a.get(0, "width");
    std::string ind;
    if (w && w->is_string()) {
        ind = w->as_string();
    } else {
        ind = std::string(static_cast<size_t>(std::clamp<int64_t>(arg_int(in, w, 4, "indent width"), 0, 1024)), ' ');
    }
    const bool first = arg_bool(a.get(1, "first"), false);
    const bool blank = arg_bool(a.get(2, "blank"), false);
    const std::string s = in.to_str(v) + "\n";
    std::vector<std::string> lines = py_splitlines(s);
    std::string rv;
    if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + ind : "") + lines[i];
    } else if (!lines.empty()) {
        rv = lines[0];
        for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
    }
    if (first) rv = ind + rv;
    in.charge(rv.size(), "indent");
    return Value::string(std::move(rv));
}

Value f_center(Interp& in, const Value& v, CallArgs& a) {
    a.check("center", 1, {"width"});
    const int64_t width = std::min<int64_t>(arg_int(in, a.get(0, "width"), 80, "center width"), 1 << 20);
    const std::string s = in.to_str(v);
    const int64_t len = static_cast<int64_t>(utf8_length(s));
    if (width <= len) return Value::string(s);
    const int64_t marg = width - len;
    const int64_t left = marg / 2 + (marg & width & 1);
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(marg - left), ' '));
}

// jinja's attr filter reads a Python attribute only, never an item: on a dict that is a method.
Value f_attr(Interp& in, const Value& v, CallArgs& a) {
    a.check("attr", 1, {"name"});
    const std::string& name = arg_str(in, a.get(0, "name"), "attr name");
    if (v.is_namespace()) return in.get_attr(v, name);
    Value m = bind_method(v, name);
    return m.is_undefined() ? Value::undefined("'" + v.type_name() + " object' has no attribute '" + name + "'") : m;
}

Value f_sum(Interp& in, const Value& v, CallArgs& a) {
    a.check("sum", 2, {"attribute", "start"});
    const Value* attr = a.get(0, "attribute");
    const Value* start = a.get(1, "start");
    bool fl = start && start->is_float();
    int64_t acc = start ? arg_int(in, start->is_float() ? nullptr : start, 0, "sum start") : 0;
    double facc = start ? start->as_float() : 0.0;
    for (const auto& item : in.iterate(v)) {
        const Value x = attr && !attr->is_none() ? attr_path(in, item, in.to_str(*attr)) : item;
        if (!x.is_number()) in.fail("sum of non-numbers ('" + x.type_name() + "')");
        if (x.is_float()) fl = true;
        facc += x.as_float();
        if (__builtin_add_overflow(acc, x.as_int(), &acc)) in.fail("integer overflow in sum");
    }
    return fl ? Value::floating(facc) : Value::integer(acc);
}

Value min_max(Interp& in, const Value& v, CallArgs& a, bool want_max) {
    a.check(want_max ? "max" : "min", 2, {"case_sensitive", "attribute"});
    const bool cs = arg_bool(a.get(0, "case_sensitive"), false);
    const Value* attr = a.get(1, "attribute");
    ValueList items = in.iterate(v);
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    auto key = [&](const Value& x) { return attr && !attr->is_none() ? attr_path(in, x, in.to_str(*attr)) : x; };
    Value best = items[0];
    for (size_t i = 1; i < items.size(); ++i) {
        const int c = compare_values(in, key(items[i]), key(best), cs);
        if (want_max ? c > 0 : c < 0) best = items[i];
    }
    return best;
}

const std::unordered_map<std::string, FilterFn>& filters() {
    static const auto* table = new std::unordered_map<std::string, FilterFn>{
        {"tojson", f_tojson},
        {"length", f_length},
        {"count", f_length},
        {"trim", f_trim},
        {"string", f_string},
        {"lower", f_lower},
        {"upper", f_upper},
        {"title", f_title},
        {"capitalize", f_capitalize},
        {"replace", f_replace},
        {"join", f_join},
        {"default", f_default},
        {"d", f_default},
        {"first", f_first},
        {"last", f_last},
        {"list", f_list},
        {"items", f_items},
        {"selectattr", [](Interp& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, true); }},
        {"rejectattr", [](Interp& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, false); }},
        {"select", [](Interp& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, true); }},
        {"reject", [](Interp& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, false); }},
        {"map", f_map},
        {"unique", f_unique},
        {"int", f_int},
        {"float", f_float},
        {"abs", f_abs},
        {"safe", f_safe},
        {"e", f_escape},
        {"escape", f_escape},
        {"reverse", f_reverse},
        {"sort", f_sort},
        {"dictsort", f_dictsort},
        {"wordcount", f_wordcount},
        {"indent", f_indent},
        {"center", f_center},
        {"attr", f_attr},
        {"sum", f_sum},
        {"min", [](Interp& in, const Value& v, CallArgs& a) { return min_max(in, v, a, false); }},
        {"max", [](Interp& in, const Value& v, CallArgs& a) { return min_max(in, v, a, true); }},
    };
    return *table;
}

// --- tests ---------------------------------------------------------------------------------------

using TestFn = std::function<bool(Interp&, const Value&, CallArgs&)>;

const Value& test_arg(Interp& in, CallArgs& a, const char* test) {
    if (a.args.empty()) in.fail(std::string("test '") + test + "' needs an argument");
    return a.args[0];
}

bool compare_test(Interp& in, const Value& x, const Value& y, const char* op) {
    if (!(x.is_number() && y.is_number()) && !(x.is_string() && y.is_string())) {
        in.fail(std::string("'") + op + "' not supported between instances of '" + x.type_name() + "' and '" +
                y.type_name() + "'");
    }
    const int c = compare_values(in, x, y, true);
    const std::string o = op;
    if (o == "<") return c < 0;
    if (o == "<=") return c <= 0;
    if (o == ">") return c > 0;
    return c >= 0;
}

const std::unordered_map<std::string, TestFn>& tests() {
    static const auto* table = new std::unordered_map<std::string, TestFn>{
        {"defined", [](Interp&, const Value& v, CallArgs&) { return !v.is_undefined(); }},
        {"undefined", [](Interp&, const Value& v, CallArgs&) { return v.is_undefined(); }},
        {"none", [](Interp&, const Value& v, CallArgs&) { return v.is_none(); }},
        {"boolean", [](Interp&, const Value& v, CallArgs&) { return v.is_bool(); }},
        {"true", [](Interp&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }},
        {"false", [](Interp&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }},
        {"integer", [](Interp&, const Value& v, CallArgs&) { return v.is_int(); }},
        {"float", [](Interp&, const Value& v, CallArgs&) { return v.is_float(); }},
        {"number", [](Interp&, const Value& v, CallArgs&) { return v.is_number(); }},
        {"string", [](Interp&, const Value& v, CallArgs&) { return v.is_string(); }},
        {"mapping", [](Interp&, const Value& v, CallArgs&) { return v.is_dict(); }},
        // Python: iter() works on str, list, dict and jinja's Undefined.
        {"iterable",
         [](Interp&, const Value& v, CallArgs&) {
             return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
         }},
        {"sequence",
         [](Interp&, const Value& v, CallArgs&) {
             return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
         }},
        {"callable", [](Interp&, const Value& v, CallArgs&) { return v.is_function(); }},
        {"sameas",
         [](Interp& in, const Value& v, CallArgs& a) {
             const Value& o = test_arg(in, a, "sameas");
             // Identity holds for the singletons; containers compare by identity of the shared object.
             if (v.kind() != o.kind()) return false;
             if (v.is_none() || v.is_undefined()) return true;
             if (v.is_bool()) return v.as_bool() == o.as_bool();
             if (v.is_list()) return &v.as_list() == &o.as_list();
             if (v.is_dict()) return &v.as_dict() == &o.as_dict();
             return values_equal(v, o);
         }},
        {"eq", [](Interp& in, const Value& v, CallArgs& a) { return values_equal(v, test_arg(in, a, "eq")); }},
        {"equalto", [](Interp& in, const Value& v, CallArgs& a) { return values_equal(v, test_arg(in, a, "eq")); }},
        {"==", [](Interp& in, const Value& v, CallArgs& a) { return values_equal(v, test_arg(in, a, "eq")); }},
        {"ne", [](Interp& in, const Value& v, CallArgs& a) { return !values_equal(v, test_arg(in, a, "ne")); }},
        {"!=", [](Interp& in, const Value& v, CallArgs& a) { return !values_equal(v, test_arg(in, a, "ne")); }},
        {"lt", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "lt"), "<"); }},
        {"<", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "lt"), "<"); }},
        {"lessthan",
         [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "lt"), "<"); }},
        {"le", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "le"), "<="); }},
        {"<=", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "le"), "<="); }},
        {"gt", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "gt"), ">"); }},
        {">", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "gt"), ">"); }},
        {"greaterthan",
         [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "gt"), ">"); }},
        {"ge", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "ge"), ">="); }},
        {">=", [](Interp& in, const Value& v, CallArgs& a) { return compare_test(in, v, test_arg(in, a, "ge"), ">="); }},
        {"in",
         [](Interp& in, const Value& v, CallArgs& a) {
             const Value& c = test_arg(in, a, "in");
             if (c.is_string()) return v.is_string() && c.as_string().find(v.as_string()) != std::string::npos;
             if (c.is_dict()) return v.is_string() && c.as_dict().find(v.as_string()) != nullptr;
             for (const auto& x : in.iterate(c)) {
                 if (values_equal(v, x)) return true;
             }
             return false;
         }},
        {"odd",
         [](Interp& in, const Value& v, CallArgs&) {
             if (!v.is_int() && !v.is_bool()) in.fail("test 'odd' needs an integer");
             return (v.as_int() & 1) != 0;
         }},
        {"even",
         [](Interp& in, const Value& v, CallArgs&) {
             if (!v.is_int() && !v.is_bool()) in.fail("test 'even' needs an integer");
             return (v.as_int() & 1) == 0;
         }},
        {"divisibleby",
         [](Interp& in, const Value& v, CallArgs& a) {
             const Value& d = test_arg(in, a, "divisibleby");
             if (!(v.is_int() || v.is_bool()) || !(d.is_int() || d.is_bool()) || d.as_int() == 0) {
                 in.fail("test 'divisibleby' needs integers and a non-zero divisor");
             }
             return v.as_int() % d.as_int() == 0;
         }},
        {"lower",
         [](Interp& in, const Value& v, CallArgs&) {
             const std::string s = in.to_str(v);
             return py_lower(s) == s && py_upper(s) != s;
         }},
        {"upper",
         [](Interp& in, const Value& v, CallArgs&) {
             const std::string s = in.to_str(v);
             return py_upper(s) == s && py_lower(s) != s;
         }},
        {"escaped", [](Interp&, const Value&, CallArgs&) { return false; }},
    };
    return *table;
}

// --- methods -------------------------------------------------------------------------------------

using MethodFn = std::function<Value(Interp&, const Value& self, CallArgs&)>;

bool starts_or_ends(Interp& in, const Value& self, CallArgs& a, bool ends) {
    const char* fn = ends ? "endswith" : "startswith";
    a.check(fn, 3, {});
    const Value* what = a.get(0, "prefix");
    if (!what) in.fail(std::string(fn) + "() takes at least 1 argument");
    std::string s = self.as_string();
    if (a.args.size() > 1) {
        // start/end in code points, as Python slices.
        const auto offs = utf8_offsets(s);
        const int64_t n = static_cast<int64_t>(offs.size()) - 1;
        auto norm = [&](const Value* v, int64_t d) {
            if (!v || v->is_none()) return d;
            int64_t x = arg_int(in, v, d, "index");
            if (x < 0) x += n;
            return std::clamp<int64_t>(x, 0, n);
        };
        const int64_t b = norm(a.get(1, ""), 0);
        const int64_t e = norm(a.get(2, ""), n);
        s = e > b ? s.substr(offs[static_cast<size_t>(b)], offs[static_cast<size_t>(e)] - offs[static_cast<size_t>(b)])
                  : "";
    }
    auto one = [&](const Value& p) {
        if (!p.is_string()) in.fail(std::string(fn) + " first arg must be str or a tuple of str");
        const std::string& x = p.as_string();
        if (x.size() > s.size()) return false;
        return ends ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
    };
    if (what->is_list()) {
        for (const auto& p : what->as_list()) {
            if (one(p)) return true;
        }
        return false;
    }
    return one(*what);
}

// Byte offset of `sub` in s[start:end] (code point indices), as a code point index; -1 when absent.
int64_t py_find(Interp& in, const std::string& s, CallArgs& a, bool reverse) {
    const std::string& sub = arg_str(in, a.get(0, "sub"), "find sub");
    const auto offs = utf8_offsets(s);
    const int64_t n = static_cast<int64_t>(offs.size()) - 1;
    auto norm = [&](const Value* v, int64_t d) {
        if (!v || v->is_none()) return d;
        int64_t x = arg_int(in, v, d, "index");
        if (x < 0) x += n;
        return std::clamp<int64_t>(x, 0, n);
    };
    const int64_t b = norm(a.get(1, "start"), 0);
    const int64_t e = norm(a.get(2, "end"), n);
    if (e < b) return -1;
    const size_t bb = offs[static_cast<size_t>(b)], eb = offs[static_cast<size_t>(e)];
    const std::string_view hay(s.data() + bb, eb - bb);
    const size_t f = reverse ? hay.rfind(sub) : hay.find(sub);
    if (f == std::string_view::npos) return -1;
    return b + static_cast<int64_t>(utf8_length(hay.substr(0, f)));
}

// str.format with positional "{}"/"{0}" and keyword "{name}" fields, no format specs.
Value py_format(Interp& in, const std::string& fmt, CallArgs& a) {
    std::string out;
    size_t auto_idx = 0;
    for (size_t i = 0; i < fmt.size(); ++i) {
        const char c = fmt[i];
        if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
            out.push_back('{');
            ++i;
            continue;
        }
        if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
            out.push_back('}');
            ++i;
            continue;
        }
        if (c == '}') in.fail("format: single '}' encountered in format string");
        if (c != '{') {
            out.push_back(c);
            continue;
        }
        const size_t close = fmt.find('}', i);
        if (close == std::string::npos) in.fail("format: single '{' encountered in format string");
        const std::string field = fmt.substr(i + 1, close - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos) {
            in.fail("format: conversions, specs and attribute fields are not supported ('{" + field + "}')");
        }
        const Value* v = nullptr;
        if (field.empty()) {
            v = auto_idx < a.args.size() ? &a.args[auto_idx] : nullptr;
            ++auto_idx;
        } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
            size_t idx = 0;
            const auto res = std::from_chars(field.data(), field.data() + field.size(), idx);
            v = res.ec == std::errc() && idx < a.args.size() ? &a.args[idx] : nullptr;
        } else {
            for (const auto& kw : a.kwargs) {
                if (kw.first == field) v = &kw.second;
            }
        }
        if (!v) in.fail("format: no argument for field '{" + field + "}'");
        out += in.to_str(*v);
        i = close;
    }
    in.charge(out.size(), "format");
    return Value::string(std::move(out));
}

bool all_chars(const std::string& s, bool (*pred)(char32_t)) {
    const std::u32string cps = decode(s);
    if (cps.empty()) return false;
    for (char32_t c : cps) {
        if (!pred(c)) return false;
    }
    return true;
}

const std::unordered_map<std::string, MethodFn>& string_methods() {
    static const auto* table = new std::unordered_map<std::string, MethodFn>{
        {"startswith",
         [](Interp& in, const Value& s, CallArgs& a) { return Value::boolean(starts_or_ends(in, s, a, false)); }},
        {"endswith",
         [](Interp& in, const Value& s, CallArgs& a) { return Value::boolean(starts_or_ends(in, s, a, true)); }},
        {"strip",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("strip", 1, {});
             return Value::string(py_strip(s.as_string(), a.get(0, ""), StripSide::kBoth, in));
         }},
        {"lstrip",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("lstrip", 1, {});
             return Value::string(py_strip(s.as_string(), a.get(0, ""), StripSide::kLeft, in));
         }},
        {"rstrip",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("rstrip", 1, {});
             return Value::string(py_strip(s.as_string(), a.get(0, ""), StripSide::kRight, in));
         }},
        {"split",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("split", 2, {"sep", "maxsplit"});
             return Value::list(py_split(s.as_string(), a.get(0, "sep"),
                                         arg_int(in, a.get(1, "maxsplit"), -1, "maxsplit"), false, in));
         }},
        {"rsplit",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("rsplit", 2, {"sep", "maxsplit"});
             return Value::list(
                 py_split(s.as_string(), a.get(0, "sep"), arg_int(in, a.get(1, "maxsplit"), -1, "maxsplit"), true, in));
         }},
        {"splitlines",
         [](Interp&, const Value& s, CallArgs&) {
             ValueList out;
             for (auto& l : py_splitlines(s.as_string())) out.push_back(Value::string(std::move(l)));
             return Value::list(std::move(out));
         }},
        {"replace",
         [](Interp& in, const Value& s, CallArgs& a) {
             a.check("replace", 3, {"count"});
             return Value::string(py_replace(in, s.as_string(), arg_str(in, a.get(0, ""), "replace old"),
                                             arg_str(in, a.get(1, ""), "replace new"),
                                             arg_int(in, a.get(2, "count"), -1, "count")));
         }},
        {"upper", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_upper(s.as_string())); }},
        {"lower", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_lower(s.as_string())); }},
        {"title", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_title(s.as_string())); }},
        {"capitalize", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_capitalize(s.as_string())); }},
        {"find",
         [](Interp& in, const Value& s, CallArgs& a) { return Value::integer(py_find(in, s.as_string(), a, false)); }},
        {"rfind",
         [](Interp& in, const Value& s, CallArgs& a) { return Value::integer(py_find(in, s.as_string(), a, true)); }},
        {"index",
         [](Interp& in, const Value& s, CallArgs& a) {
             const int64_t i = py_find(in, s.as_string(), a, false);
             if (i < 0) in.fail("substring not found");
             return Value::integer(i);
         }},
        {"count",
         [](Interp& in, const Value& s, CallArgs& a) {
             const std::string& sub = arg_str(in, a.get(0, "sub"), "count sub");
             const std::string& str = s.as_string();
             if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(str)) + 1);
             int64_t n = 0;
             for (size_t p = str.find(sub); p != std::string::npos; p = str.find(sub, p + sub.size())) ++n;
             return Value::integer(n);
         }},
        {"join",
         [](Interp& in, const Value& s, CallArgs& a) {
             if (a.args.size() != 1) in.fail("join() takes exactly one argument");
             std::string out;
             bool first = true;
             for (const auto& item : in.iterate(a.args[0])) {
                 if (!item.is_string()) in.fail("sequence item: expected str instance, " + item.type_name() + " found");
                 if (!first) out += s.as_string();
                 first = false;
                 out += item.as_string();
                 if (out.size() > (size_t{64} << 20)) in.charge(out.size(), "join");
             }
             in.charge(out.size(), "join");
             return Value::string(std::move(out));
         }},
        {"format", [](Interp& in, const Value& s, CallArgs& a) { return py_format(in, s.as_string(), a); }},
        {"removeprefix",
         [](Interp& in, const Value& s, CallArgs& a) {
             const std::string& p = arg_str(in, a.get(0, ""), "prefix");
             const std::string& str = s.as_string();
             return Value::string(str.compare(0, p.size(), p) == 0 ? str.substr(p.size()) : str);
         }},
        {"removesuffix",
         [](Interp& in, const Value& s, CallArgs& a) {
             const std::string& p = arg_str(in, a.get(0, ""), "suffix");
             const std::string& str = s.as_string();
             const bool ends = p.size() <= str.size() && str.compare(str.size() - p.size(), p.size(), p) == 0;
             return Value::string(ends && !p.empty() ? str.substr(0, str.size() - p.size()) : str);
         }},
        {"isdigit",
         [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_chars(s.as_string(), is_digit)); }},
        {"isalpha",
         [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_chars(s.as_string(), is_alpha)); }},
        {"isalnum",
         [](Interp&, const Value& s, CallArgs&) {
             return Value::boolean(all_chars(s.as_string(), [](char32_t c) { return is_alpha(c) || is_digit(c); }));
         }},
        {"isspace",
         [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_chars(s.as_string(), is_py_space)); }},
        {"islower",
         [](Interp&, const Value& s, CallArgs&) {
             const std::string& x = s.as_string();
             return Value::boolean(py_lower(x) == x && py_upper(x) != x);
         }},
        {"isupper",
         [](Interp&, const Value& s, CallArgs&) {
             const std::string& x = s.as_string();
             return Value::boolean(py_upper(x) == x && py_lower(x) != x);
         }},
    };
    return *table;
}

const std::unordered_map<std::string, MethodFn>& dict_methods() {
    static const auto* table = new std::unordered_map<std::string, MethodFn>{
        {"items",
         [](Interp& in, const Value& d, CallArgs& a) {
             a.check("items", 0, {});
             ValueList out;
             for (const auto& kv : d.as_dict().items) out.push_back(Value::tuple({Value::string(kv.first), kv.second}));
             in.charge(out.size() * sizeof(Value), "items");
             return Value::list(std::move(out));
         }},
        {"keys",
         [](Interp& in, const Value& d, CallArgs& a) {
             a.check("keys", 0, {});
             return Value::list(in.iterate(d));
         }},
        {"values",
         [](Interp&, const Value& d, CallArgs& a) {
             a.check("values", 0, {});
             ValueList out;
             for (const auto& kv : d.as_dict().items) out.push_back(kv.second);
             return Value::list(std::move(out));
         }},
        {"get",
         [](Interp& in, const Value& d, CallArgs& a) {
             a.check("get", 2, {});
             if (a.args.empty()) in.fail("get expected at least 1 argument, got 0");
             if (a.args[0].is_string()) {
                 if (const Value* v = d.as_dict().find(a.args[0].as_string())) return *v;
             }
             return a.args.size() > 1 ? a.args[1] : Value::none();
         }},
    };
    return *table;
}

const std::unordered_map<std::string, MethodFn>& list_methods() {
    static const auto* table = new std::unordered_map<std::string, MethodFn>{
        {"count",
         [](Interp& in, const Value& l, CallArgs& a) {
             if (a.args.size() != 1) in.fail("count() takes exactly one argument");
             int64_t n = 0;
             for (const auto& x : l.as_list()) n += values_equal(x, a.args[0]) ? 1 : 0;
             return Value::integer(n);
         }},
        {"index",
         [](Interp& in, const Value& l, CallArgs& a) {
             if (a.args.size() != 1) in.fail("index() takes exactly one argument");
             const auto& items = l.as_list();
             for (size_t i = 0; i < items.size(); ++i) {
                 if (values_equal(items[i], a.args[0])) return Value::integer(static_cast<int64_t>(i));
             }
             in.fail(in.repr(a.args[0]) + " is not in list");
         }},
    };
    return *table;
}

// The mutating methods the sandbox refuses; named in load errors.
bool is_mutating_method(const std::string& name) {
    static const std::set<std::string> kNames = {"append", "extend", "insert",     "pop",     "remove",  "clear",
                                                 "update", "sort",   "setdefault", "popitem", "reverse", "add"};
    return kNames.count(name) > 0;
}

// --- globals -------------------------------------------------------------------------------------

Value g_range(Interp& in, CallArgs& a) {
    a.check("range", 3, {});
    if (a.args.empty()) in.fail("range expected at least 1 argument, got 0");
    int64_t start = 0, stop, step = 1;
    if (a.args.size() == 1) {
        stop = arg_int(in, &a.args[0], 0, "range argument");
    } else {
        start = arg_int(in, &a.args[0], 0, "range argument");
        stop = arg_int(in, &a.args[1], 0, "range argument");
        if (a.args.size() > 2) step = arg_int(in, &a.args[2], 1, "range argument");
    }
    if (step == 0) in.fail("range() arg 3 must not be zero");
    const __int128 count = step > 0 ? (stop > start ? (static_cast<__int128>(stop) - start + step - 1) / step : 0)
                                    : (start > stop ? (static_cast<__int128>(start) - stop - step - 1) / -step : 0);
    // jinja2's sandbox refuses ranges over MAX_RANGE (100000) items.
    if (count > 100000) {
        in.fail("range too big: the sandbox blocks ranges of more than 100000 items", StatusCode::kResourceExhausted);
    }
    ValueList out;
    out.reserve(static_cast<size_t>(count));
    for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) out.push_back(Value::integer(start + i * step));
    in.charge(out.size() * sizeof(Value), "range");
    return Value::list(std::move(out));
}

Value g_namespace(Interp& in, CallArgs& a, bool as_namespace) {
    ValueDict d;
    for (const auto& pos : a.args) {
        if (!pos.is_dict())
            in.fail(std::string(as_namespace ? "namespace" : "dict") + "() takes a mapping or keywords");
        for (const auto& kv : pos.as_dict().items) d.set(kv.first, kv.second);
    }
    for (const auto& kw : a.kwargs) d.set(kw.first, kw.second);
    if (!as_namespace) return Value::dict(std::move(d));
    Value ns = Value::namespace_(std::move(d));
    in.track_namespace(ns);
    return ns;
}

}  // namespace

Value Interp::apply_filter(const std::string& name, const Value& subject, CallArgs& args) {
    auto it = filters().find(name);
    if (it == filters().end()) fail("unsupported filter '" + name + "'");
    return it->second(*this, subject, args);
}

bool Interp::apply_test(const std::string& name, const Value& subject, CallArgs& args) {
    auto it = tests().find(name);
    if (it == tests().end()) fail("unsupported test '" + name + "'");
    return it->second(*this, subject, args);
}

Value bind_method(const Value& obj, const std::string& name) {
    const std::unordered_map<std::string, MethodFn>* table = nullptr;
    if (obj.is_string()) table = &string_methods();
    if (obj.is_dict()) table = &dict_methods();
    if (obj.is_list()) table = &list_methods();
    if (!table) return Value::undefined();
    auto it = table->find(name);
    if (it == table->end()) return Value::undefined();
    const MethodFn& fn = it->second;
    return Value::function(name, [fn, obj](Interp& in, CallArgs& a) { return fn(in, obj, a); });
}

bool is_known_filter(const std::string& name) {
    return filters().count(name) > 0;
}

bool is_known_test(const std::string& name) {
    return tests().count(name) > 0;
}

bool is_known_method(const std::string& name) {
    if (is_mutating_method(name) && name != "sort" && name != "reverse") return false;
    return string_methods().count(name) || dict_methods().count(name) || list_methods().count(name) || name == "cycle";
}

bool is_known_global(const std::string& name) {
    return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
           name == "strftime_now";
}

void add_builtin_globals(Scope& scope) {
    scope.vars["range"] = Value::function("range", g_range);
    scope.vars["namespace"] =
        Value::function("namespace", [](Interp& in, CallArgs& a) { return g_namespace(in, a, true); });
    scope.vars["dict"] = Value::function("dict", [](Interp& in, CallArgs& a) { return g_namespace(in, a, false); });
    scope.vars["raise_exception"] = Value::function("raise_exception", [](Interp& in, CallArgs& a) -> Value {
        const std::string msg = a.args.empty() ? "" : in.to_str(a.args[0]);
        throw RenderError{StatusCode::kInvalidArgument, "chat template raised an exception: " + msg};
    });
    scope.vars["strftime_now"] = Value::function("strftime_now", [](Interp& in, CallArgs& a) {
        if (a.args.size() != 1 || !a.args[0].is_string()) in.fail("strftime_now() takes one format string");
        const std::string& fmt = a.args[0].as_string();
        if (fmt.size() > 256) in.fail("strftime_now format longer than 256 bytes");
        const std::time_t t = in.now();
        std::tm tm{};
        // NOTE: a fixed time (tests) is read as UTC; the live clock as local time, as Python's datetime.now().
        if (in.has_fixed_now()) {
            gmtime_r(&t, &tm);
        } else {
            localtime_r(&t, &tm);
        }
        char buf[1024];
        const size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
        return Value::string(std::string(buf, n));
    });
}

}  // namespace moe::tmpl
