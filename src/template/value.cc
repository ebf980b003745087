#include "template/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tokenizer/unicode.h"

namespace moe::tmpl {

const Value* ValueDict::find(std::string_view key) const {
    for (const auto& kv : items) {
        if (kv.first == key) return &kv.second;
    }
    return nullptr;
}

Value* ValueDict::find(std::string_view key) {
    for (auto& kv : items) {
        if (kv.first == key) return &kv.second;
    }
    return nullptr;
}

void ValueDict::set(std::string key, Value value) {
    if (Value* v = find(key)) {
        *v = std::move(value);
        return;
    }
    items.emplace_back(std::move(key), std::move(value));
}

Value Value::undefined(std::string hint) {
    Value v;
    v.s_ = std::make_shared<const std::string>(std::move(hint));
    return v;
}

Value Value::none() {
    Value v;
    v.kind_ = Kind::kNone;
    return v;
}

Value Value::boolean(bool b) {
    Value v;
    v.kind_ = Kind::kBool;
    v.b_ = b;
    return v;
}

Value Value::integer(int64_t i) {
    Value v;
    v.kind_ = Kind::kInt;
    v.i_ = i;
    return v;
}

Value Value::floating(double d) {
    Value v;
    v.kind_ = Kind::kFloat;
    v.d_ = d;
    return v;
}

Value Value::string(std::string s) {
    Value v;
    v.kind_ = Kind::kString;
    v.s_ = std::make_shared<const std::string>(std::move(s));
    return v;
}

Value Value::list(ValueList items) {
    Value v;
    v.kind_ = Kind::kList;
    v.list_ = std::make_shared<const ValueList>(std::move(items));
    return v;
}

Value Value::tuple(ValueList items) {
    Value v = list(std::move(items));
    v.b_ = true;
    return v;
}

Value Value::dict(ValueDict d) {
    Value v;
    v.kind_ = Kind::kDict;
    v.dict_ = std::make_shared<ValueDict>(std::move(d));
    return v;
}

Value Value::namespace_(ValueDict d) {
    Value v;
    v.kind_ = Kind::kNamespace;
    v.dict_ = std::make_shared<ValueDict>(std::move(d));
    return v;
}

Value Value::function(std::string name, NativeFn fn) {
    Value v;
    v.kind_ = Kind::kFunction;
    v.fn_ = std::make_shared<const Function>(Function{std::move(name), std::move(fn)});
    return v;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
    switch (json.type()) {
        case nlohmann::ordered_json::value_t::null:
            return none();
        case nlohmann::ordered_json::value_t::boolean:
            return boolean(json.get<bool>());
        case nlohmann::ordered_json::value_t::number_integer:
            return integer(json.get<int64_t>());
        case nlohmann::ordered_json::value_t::number_unsigned: {
            const uint64_t u = json.get<uint64_t>();
            // Python's ints are unbounded; past int64 the value is kept as the nearest float.
            if (u > static_cast<uint64_t>(INT64_MAX)) return floating(static_cast<double>(u));
            return integer(static_cast<int64_t>(u));
        }
        case nlohmann::ordered_json::value_t::number_float:
            return floating(json.get<double>());
        case nlohmann::ordered_json::value_t::string:
            return string(json.get<std::string>());
        case nlohmann::ordered_json::value_t::array: {
            ValueList items;
            items.reserve(json.size());
            for (const auto& e : json) items.push_back(from_json(e));
            return list(std::move(items));
        }
        case nlohmann::ordered_json::value_t::object: {
            ValueDict d;
            d.items.reserve(json.size());
            for (auto it = json.begin(); it != json.end(); ++it) d.items.emplace_back(it.key(), from_json(it.value()));
            return dict(std::move(d));
        }
        default:
            return none();
    }
}

double Value::as_float() const {
    switch (kind_) {
        case Kind::kFloat:
            return d_;
        case Kind::kInt:
            return static_cast<double>(i_);
        case Kind::kBool:
            return b_ ? 1.0 : 0.0;
        default:
            return 0.0;
    }
}

bool Value::truthy() const {
    switch (kind_) {
        case Kind::kUndefined:
        case Kind::kNone:
            return false;
        case Kind::kBool:
            return b_;
        case Kind::kInt:
            return i_ != 0;
        case Kind::kFloat:
            return d_ != 0.0;
        case Kind::kString:
            return !s_->empty();
        case Kind::kList:
            return !list_->empty();
        case Kind::kDict:
            return !dict_->items.empty();
        case Kind::kNamespace:
        case Kind::kFunction:
            return true;
    }
    return false;
}

std::string Value::type_name() const {
    switch (kind_) {
        case Kind::kUndefined:
            return "Undefined";
        case Kind::kNone:
            return "NoneType";
        case Kind::kBool:
            return "bool";
        case Kind::kInt:
            return "int";
        case Kind::kFloat:
            return "float";
        case Kind::kString:
            return "str";
        case Kind::kList:
            return "list";
        case Kind::kDict:
            return "dict";
        case Kind::kNamespace:
            return "Namespace";
        case Kind::kFunction:
            return "function";
    }
    return "object";
}

bool values_equal(const Value& a, const Value& b, int depth) {
    // NOTE: values built by a template can nest arbitrarily ({% set ns.x = [ns.x] %} in a loop); a
    // comparison that deep is refused rather than recursing into a stack overflow.
    if (depth > 256) return false;
    if (a.is_number() && b.is_number()) {
        if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
        return a.as_int() == b.as_int();
    }
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case Value::Kind::kUndefined:
        case Value::Kind::kNone:
            return true;
        case Value::Kind::kString:
            return a.as_string() == b.as_string();
        case Value::Kind::kList: {
            if (a.is_tuple() != b.is_tuple()) return false;
            const auto& x = a.as_list();
            const auto& y = b.as_list();
            if (x.size() != y.size()) return false;
            for (size_t i = 0; i < x.size(); ++i) {
                if (!values_equal(x[i], y[i], depth + 1)) return false;
            }
            return true;
        }
        case Value::Kind::kDict: {
            const auto& x = a.as_dict().items;
            const auto& y = b.as_dict();
            if (x.size() != y.items.size()) return false;
            for (const auto& kv : x) {
                const Value* other = y.find(kv.first);
                if (!other || !values_equal(kv.second, *other, depth + 1)) return false;
            }
            return true;
        }
        case Value::Kind::kNamespace:
            return &a.namespace_dict() == &b.namespace_dict();
        case Value::Kind::kFunction:
            return &a.as_function() == &b.as_function();
        default:
            return false;
    }
}

std::string python_float_repr(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
    // Shortest round-trip digits, then Python's layout: positional for exponents in [-4, 16),
    // scientific with at least two exponent digits otherwise.
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
    std::string sci(buf, res.ptr);
    const size_t e_pos = sci.find('e');
    std::string mant = sci.substr(0, e_pos);
    const int exp = std::stoi(sci.substr(e_pos + 1));
    bool neg = false;
    if (!mant.empty() && mant[0] == '-') {
        neg = true;
        mant.erase(0, 1);
    }
    std::string digits;
    for (char c : mant) {
        if (c != '.') digits.push_back(c);
    }
    std::string out = neg ? "-" : "";
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            const size_t int_len = static_cast<size_t>(exp) + 1;
            if (digits.size() <= int_len) {
                out += digits + std::string(int_len - digits.size(), '0') + ".0";
            } else {
                out += digits.substr(0, int_len) + "." + digits.substr(int_len);
            }
        } else {
            out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
        }
        return out;
    }
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    return out + ebuf;
}

std::string python_string_repr(std::string_view s) {
    const bool has_single = s.find('\'') != std::string_view::npos;
    const bool has_double = s.find('"') != std::string_view::npos;
    const char quote = (has_single && !has_double) ? '"' : '\'';
    std::string out(1, quote);
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\\') {
            out += "\\\\";
        } else if (c == static_cast<unsigned char>(quote)) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        } else if (c >= 0x80 && c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0xA0) {
            // U+0080..U+00A0 are not printable for Python's repr.
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(s[i + 1]) - 0x80 + 0x80);
            out += buf;
            ++i;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += quote;
    return out;
}

size_t utf8_length(std::string_view s) {
    size_t n = 0;
    for (size_t i = 0; i < s.size();) {
        i += tok::utf8_len(static_cast<unsigned char>(s[i]));
        ++n;
    }
    return n;
}

std::vector<size_t> utf8_offsets(std::string_view s) {
    std::vector<size_t> offs;
    offs.reserve(s.size() + 1);
    for (size_t i = 0; i < s.size();) {
        offs.push_back(i);
        i += tok::utf8_len(static_cast<unsigned char>(s[i]));
        if (i > s.size()) i = s.size();
    }
    offs.push_back(s.size());
    return offs;
}

}  // namespace moe::tmpl
