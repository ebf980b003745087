// The evaluator: renders a parsed template over a set of variables, with jinja2's semantics for
// the supported subset (scoping of set in loops and macros, undefined values, Python operators).
//
// Errors inside rendering are thrown as RenderError and turned into a Status at the boundary
// (render_template); nothing throws out of this module.
#pragma once

#include <cstddef>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "moe/status.h"
#include "template/ast.h"
#include "template/value.h"

namespace moe::tmpl {

// Bounds on one render. Every limit reached fails the render with kResourceExhausted naming it.
struct RenderLimits {
    size_t max_output_bytes = size_t{16} << 20;   // the rendered prompt (and any captured block)
    size_t max_string_bytes = size_t{16} << 20;   // any one string or list built while rendering
    uint64_t max_loop_iterations = 1'000'000;     // all for-loop iterations together
    uint64_t max_work_bytes = uint64_t{1} << 30;  // bytes of strings and lists built, all together
    int max_call_depth = 64;                      // nested macro calls
};

struct RenderError {
    StatusCode code;
    std::string message;
};

struct CallArgs {
    std::vector<Value> args;
    std::vector<std::pair<std::string, Value>> kwargs;
    // Positional `idx` or keyword `name`; nullptr when neither was passed.
    const Value* get(size_t idx, const char* name) const;
    // kInvalidArgument-style RenderError when more positionals than `max_pos` or an unknown keyword.
    void check(const char* fn, size_t max_pos, std::initializer_list<const char*> names) const;
};

struct Scope {
    std::unordered_map<std::string, Value> vars;
    std::shared_ptr<Scope> parent;
};

class Interp {
public:
    Interp(const RenderLimits& limits, std::optional<std::time_t> fixed_now);
    ~Interp();
    Interp(const Interp&) = delete;
    Interp& operator=(const Interp&) = delete;

    // Every namespace() made during the render, emptied when the render ends (see ~Interp).
    void track_namespace(const Value& ns);

    // Renders `body` with `vars` as the template's globals.
    void render(const StmtList& body, std::shared_ptr<Scope> globals, std::string& out);

    [[noreturn]] void fail(const std::string& message, StatusCode code = StatusCode::kInvalidArgument) const;
    // Counts bytes of a value being built against max_string_bytes and max_work_bytes.
    void charge(size_t bytes, const char* what);
    void charge_iteration();

    // Python str() of a value (what {{ }} prints). Lists and dicts print as Python reprs.
    std::string to_str(const Value& v);
    std::string repr(const Value& v, int depth = 0);
    // Python iteration: list items, dict keys, string characters; undefined iterates as empty.
    ValueList iterate(const Value& v);

    Value call_value(const Value& fn, CallArgs& args);
    Value call_macro(const Stmt& macro, const std::shared_ptr<Scope>& def_scope, CallArgs& args);
    // Renders `body` in `scope` into a string of its own (macro bodies, block set, caller()).
    std::string capture(const StmtList& body, std::shared_ptr<Scope> scope);
    Value apply_filter(const std::string& name, const Value& subject, CallArgs& args);
    bool apply_test(const std::string& name, const Value& subject, CallArgs& args);
    // Attribute (a.b) and subscript (a[b]) lookups with jinja's fallbacks.
    Value get_attr(const Value& obj, const std::string& name);
    Value get_item(const Value& obj, const Value& key);

    std::time_t now() const;
    bool has_fixed_now() const { return fixed_now_.has_value(); }
    int line() const { return line_; }

private:
    enum class Flow { kNormal, kBreak, kContinue };

    Flow exec_list(const StmtList& body);
    Flow exec(const Stmt& s);
    void exec_for(const Stmt& s);
    void exec_set(const Stmt& s);
    Value eval(const Expr& e);
    Value eval_binary(const Expr& e);
    Value eval_call(const Expr& e);
    Value make_macro(const Stmt& s);
    Value eval_slice(const Expr& e);
    Value repeat(const Value& v, int64_t times);
    void emit(const std::string& text);

    Value lookup(const std::string& name) const;
    void assign(const std::string& name, Value v);
    void push_scope();
    void pop_scope();

    RenderLimits limits_;
    std::optional<std::time_t> fixed_now_;
    std::shared_ptr<Scope> scope_;
    std::string* out_ = nullptr;
    uint64_t iterations_ = 0;
    uint64_t work_bytes_ = 0;
    int call_depth_ = 0;
    int line_ = 0;
    std::vector<std::weak_ptr<ValueDict>> namespaces_;
};

// Names the template may call, filter with and test with (checked at load).
bool is_known_global(const std::string& name);
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
bool is_known_method(const std::string& name);

// The builtin globals (range, namespace, dict, raise_exception, strftime_now).
void add_builtin_globals(Scope& scope);
// Bound method `obj.name` (string, dict and list methods), or an undefined value when there is none.
Value bind_method(const Value& obj, const std::string& name);

}  // namespace moe::tmpl
