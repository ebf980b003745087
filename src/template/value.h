// The value type of the template interpreter: what a Jinja2 expression evaluates to, modelled on
// the Python objects that transformers passes to jinja2 (None, bool, int, float, str, list, dict)
// plus jinja's Undefined and the few objects templates create (namespace, macros, bound methods).
//
// Lists and dicts are immutable once built (transformers renders in an ImmutableSandboxedEnvironment,
// which forbids list.append and dict.update), so they are shared, not copied. A namespace is the one
// mutable object: `{% set ns.x = ... %}` must be seen by every holder of the same namespace.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::tmpl {

class Value;
struct CallArgs;
class Interp;

using ValueList = std::vector<Value>;

// A dict in insertion order (Python 3.7+ dicts keep it; templates print tools and arguments in the
// order the client sent them). Keys are strings: JSON objects and the dict literals of real
// templates have no other kind.
struct ValueDict {
    std::vector<std::pair<std::string, Value>> items;
    const Value* find(std::string_view key) const;
    Value* find(std::string_view key);
    // Replaces the value of an existing key, else appends.
    void set(std::string key, Value value);
};

// A builtin function, macro or bound method. `self` of a bound method is captured by the closure.
using NativeFn = std::function<Value(Interp&, CallArgs&)>;
struct Function {
    std::string name;
    NativeFn fn;
};

class Value {
public:
    enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunction };

    Value() = default;  // undefined
    static Value undefined(std::string hint = {});
    static Value none();
    static Value boolean(bool b);
    static Value integer(int64_t i);
    static Value floating(double d);
    static Value string(std::string s);
    static Value list(ValueList items);
    // A Python tuple: a list that prints as (a, b) and never equals a list.
    static Value tuple(ValueList items);
    static Value dict(ValueDict d);
    static Value namespace_(ValueDict d);
    static Value function(std::string name, NativeFn fn);
    // JSON (objects in insertion order when `json` is an ordered_json) to a value.
    static Value from_json(const nlohmann::ordered_json& json);

    Kind kind() const { return kind_; }
    bool is_undefined() const { return kind_ == Kind::kUndefined; }
    bool is_none() const { return kind_ == Kind::kNone; }
    bool is_bool() const { return kind_ == Kind::kBool; }
    bool is_int() const { return kind_ == Kind::kInt; }
    bool is_float() const { return kind_ == Kind::kFloat; }
    // Python's numbers.Number: bool is an int subclass.
    bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
    bool is_string() const { return kind_ == Kind::kString; }
    bool is_list() const { return kind_ == Kind::kList; }
    bool is_tuple() const { return kind_ == Kind::kList && b_; }
    bool is_dict() const { return kind_ == Kind::kDict; }
    bool is_namespace() const { return kind_ == Kind::kNamespace; }
    bool is_function() const { return kind_ == Kind::kFunction; }

    bool as_bool() const { return b_; }
    int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
    double as_float() const;  // int, bool or float
    const std::string& as_string() const { return *s_; }
    const ValueList& as_list() const { return *list_; }
    const ValueDict& as_dict() const { return *dict_; }
    ValueDict& namespace_dict() const { return *dict_; }
    const std::shared_ptr<ValueDict>& namespace_ptr() const { return dict_; }
    const Function& as_function() const { return *fn_; }
    // What an undefined value stands for, for error messages ("'x' is undefined").
    const std::string& undefined_hint() const { return *s_; }

    // Python truthiness.
    bool truthy() const;
    // Python's type name as jinja's messages print it ("dict object", "str object", ...).
    std::string type_name() const;

private:
    Kind kind_ = Kind::kUndefined;
    bool b_ = false;
    int64_t i_ = 0;
    double d_ = 0;
    std::shared_ptr<const std::string> s_;
    std::shared_ptr<const ValueList> list_;
    std::shared_ptr<ValueDict> dict_;
    std::shared_ptr<const Function> fn_;
};

// Python equality (1 == 1.0 == True; lists and dicts element-wise; undefined == undefined).
bool values_equal(const Value& a, const Value& b, int depth = 0);

// Python repr() of a float: the shortest string that reads back ("0.1", "1e-05", "1e+20", "2.0").
std::string python_float_repr(double d);
// Python repr() of a str: quotes chosen as Python does, escapes of control characters.
std::string python_string_repr(std::string_view s);

// Number of Unicode code points of UTF-8 text (Python's len of a str). Invalid bytes count one each.
size_t utf8_length(std::string_view s);
// Byte offsets of every code point start, plus s.size() at the end.
std::vector<size_t> utf8_offsets(std::string_view s);

}  // namespace moe::tmpl
