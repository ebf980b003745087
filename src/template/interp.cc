#include "template/interp.h"

#include <cmath>
#include <limits>

namespace moe::tmpl {

const Value* CallArgs::get(size_t idx, const char* name) const {
    if (idx < args.size()) return &args[idx];
    for (const auto& kv : kwargs) {
        if (kv.first == name) return &kv.second;
    }
    return nullptr;
}

void CallArgs::check(const char* fn, size_t max_pos, std::initializer_list<const char*> names) const {
    if (args.size() > max_pos) {
        throw RenderError{StatusCode::kInvalidArgument, std::string(fn) + "() takes at most " +
                                                            std::to_string(max_pos) + " positional argument(s), got " +
                                                            std::to_string(args.size())};
    }
    for (const auto& kv : kwargs) {
        bool known = false;
        for (const char* n : names) known = known || kv.first == n;
        if (!known) {
            throw RenderError{StatusCode::kInvalidArgument,
                              std::string(fn) + "() got an unexpected keyword argument '" + kv.first + "'"};
        }
    }
}

Interp::Interp(const RenderLimits& limits, std::optional<std::time_t> fixed_now)
    : limits_(limits), fixed_now_(fixed_now) {}

Interp::~Interp() {
    // A namespace may hold itself, directly or through a dict, list or caller (set ns.me = ns):
    // emptying every namespace this render made breaks any such cycle.
    for (auto& weak : namespaces_) {
        if (auto ns = weak.lock()) ns->items.clear();
    }
}

void Interp::track_namespace(const Value& ns) {
    namespaces_.push_back(ns.namespace_ptr());
}

void Interp::fail(const std::string& message, StatusCode code) const {
    throw RenderError{code, "chat template error at line " + std::to_string(line_) + ": " + message};
}

void Interp::charge(size_t bytes, const char* what) {
    if (bytes > limits_.max_string_bytes) {
        fail(std::string(what) + " built a value of " + std::to_string(bytes) + " bytes, over the limit of " +
                 std::to_string(limits_.max_string_bytes),
             StatusCode::kResourceExhausted);
    }
    work_bytes_ += bytes;
    if (work_bytes_ > limits_.max_work_bytes) {
        fail("rendering built more than the limit of " + std::to_string(limits_.max_work_bytes) + " bytes in total",
             StatusCode::kResourceExhausted);
    }
}

void Interp::charge_iteration() {
    if (++iterations_ > limits_.max_loop_iterations) {
        fail("more than the limit of " + std::to_string(limits_.max_loop_iterations) + " loop iterations",
             StatusCode::kResourceExhausted);
    }
}

std::time_t Interp::now() const {
    return fixed_now_ ? *fixed_now_ : std::time(nullptr);
}

void Interp::render(const StmtList& body, std::shared_ptr<Scope> globals, std::string& out) {
    scope_ = std::move(globals);
    out_ = &out;
    exec_list(body);
}

void Interp::emit(const std::string& text) {
    if (out_->size() + text.size() > limits_.max_output_bytes) {
        fail("rendered text exceeds the limit of " + std::to_string(limits_.max_output_bytes) + " bytes",
             StatusCode::kResourceExhausted);
    }
    out_->append(text);
}

Value Interp::lookup(const std::string& name) const {
    for (const Scope* s = scope_.get(); s != nullptr; s = s->parent.get()) {
        auto it = s->vars.find(name);
        if (it != s->vars.end()) return it->second;
    }
    return Value::undefined("'" + name + "' is undefined");
}

void Interp::assign(const std::string& name, Value v) {
    scope_->vars[name] = std::move(v);
}

void Interp::push_scope() {
    auto s = std::make_shared<Scope>();
    s->parent = scope_;
    scope_ = std::move(s);
}

void Interp::pop_scope() {
    scope_ = scope_->parent;
}

std::string Interp::capture(const StmtList& body, std::shared_ptr<Scope> scope) {
    std::string buf;
    std::string* saved_out = out_;
    auto saved_scope = scope_;
    out_ = &buf;
    scope_ = std::move(scope);
    exec_list(body);
    out_ = saved_out;
    scope_ = std::move(saved_scope);
    return buf;
}

// --- statements ----------------------------------------------------------------------------------

Interp::Flow Interp::exec_list(const StmtList& body) {
    for (const auto& s : body) {
        const Flow f = exec(*s);
        if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
}

Interp::Flow Interp::exec(const Stmt& s) {
    line_ = s.line;
    switch (s.kind) {
        case Stmt::Kind::kText:
            emit(s.text);
            return Flow::kNormal;
        case Stmt::Kind::kOutput:
            emit(to_str(eval(*s.expr)));
            return Flow::kNormal;
        case Stmt::Kind::kIf:
            for (size_t i = 0; i < s.conditions.size(); ++i) {
                line_ = s.conditions[i]->line;
                if (eval(*s.conditions[i]).truthy()) return exec_list(s.bodies[i]);
            }
            if (s.bodies.size() > s.conditions.size()) return exec_list(s.bodies.back());
            return Flow::kNormal;
        case Stmt::Kind::kFor:
            exec_for(s);
            return Flow::kNormal;
        case Stmt::Kind::kSet:
            exec_set(s);
            return Flow::kNormal;
        case Stmt::Kind::kMacro:
            assign(s.text, make_macro(s));
            return Flow::kNormal;
        case Stmt::Kind::kCallBlock: {
            const Expr& call = *s.expr;
            Value fn = eval(*call.a);
            CallArgs args;
            for (const auto& a : call.items) args.args.push_back(eval(*a));
            for (const auto& kw : call.kwargs) args.kwargs.emplace_back(kw.name, eval(*kw.value));
            // NOTE: weak, as for macros: a strong reference stored back into a scope it can reach
            // would be a cycle that outlives the render.
            std::weak_ptr<Scope> def_scope = scope_;
            const Stmt* stmt = &s;
            args.kwargs.emplace_back("caller", Value::function("caller", [stmt, def_scope](Interp& in, CallArgs& a) {
                                         auto scope = std::make_shared<Scope>();
                                         scope->parent = def_scope.lock();
                                         if (!scope->parent) in.fail("caller() used after its call block ended");
                                         for (size_t i = 0; i < stmt->params.size(); ++i) {
                                             const Value* v = a.get(i, stmt->params[i].name.c_str());
                                             scope->vars[stmt->params[i].name] =
                                                 v ? *v
                                                   : Value::undefined("'" + stmt->params[i].name + "' is undefined");
                                         }
                                         return Value::string(in.capture(stmt->body, scope));
                                     }));
            emit(to_str(call_value(fn, args)));
            return Flow::kNormal;
        }
        case Stmt::Kind::kFilterBlock: {
            push_scope();
            const std::string text = capture(s.body, scope_);
            scope_->vars["\x01block"] = Value::string(text);
            Value v = eval(*s.filter);
            pop_scope();
            emit(to_str(v));
            return Flow::kNormal;
        }
        case Stmt::Kind::kBreak:
            return Flow::kBreak;
        case Stmt::Kind::kContinue:
            return Flow::kContinue;
        case Stmt::Kind::kGeneration: {
            push_scope();
            const Flow f = exec_list(s.body);
            pop_scope();
            return f;
        }
        case Stmt::Kind::kWith: {
            std::vector<Value> values;
            for (const auto& a : s.assigns) values.push_back(eval(*a.second));
            push_scope();
            for (size_t i = 0; i < s.assigns.size(); ++i) assign(s.assigns[i].first, values[i]);
            const Flow f = exec_list(s.body);
            pop_scope();
            return f;
        }
    }
    return Flow::kNormal;
}

namespace {

void unpack_into(Interp& in, const std::vector<std::string>& targets, const Value& item,
                 std::unordered_map<std::string, Value>& vars) {
    if (targets.size() == 1) {
        vars[targets[0]] = item;
        return;
    }
    ValueList parts = in.iterate(item);
    if (parts.size() != targets.size()) {
        in.fail(std::string(parts.size() < targets.size() ? "not enough" : "too many") +
                " values to unpack (expected " + std::to_string(targets.size()) + ", got " +
                std::to_string(parts.size()) + ")");
    }
    for (size_t i = 0; i < targets.size(); ++i) vars[targets[i]] = parts[i];
}

}  // namespace

void Interp::exec_for(const Stmt& s) {
    const Value seq = eval(*s.expr);
    ValueList items = iterate(seq);
    if (s.filter) {
        ValueList kept;
        for (const auto& item : items) {
            charge_iteration();
            push_scope();
            unpack_into(*this, s.targets, item, scope_->vars);
            const bool keep = eval(*s.filter).truthy();
            pop_scope();
            if (keep) kept.push_back(item);
        }
        items = std::move(kept);
    }
    if (items.empty()) {
        push_scope();
        exec_list(s.else_body);
        pop_scope();
        return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
        charge_iteration();
        push_scope();
        unpack_into(*this, s.targets, items[static_cast<size_t>(i)], scope_->vars);
        ValueDict loop;
        loop.items.reserve(12);
        loop.items.emplace_back("index", Value::integer(i + 1));
        loop.items.emplace_back("index0", Value::integer(i));
        loop.items.emplace_back("revindex", Value::integer(n - i));
        loop.items.emplace_back("revindex0", Value::integer(n - i - 1));
        loop.items.emplace_back("first", Value::boolean(i == 0));
        loop.items.emplace_back("last", Value::boolean(i == n - 1));
        loop.items.emplace_back("length", Value::integer(n));
        loop.items.emplace_back("depth", Value::integer(1));
        loop.items.emplace_back("depth0", Value::integer(0));
        loop.items.emplace_back(
            "previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item"));
        loop.items.emplace_back(
            "nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item"));
        loop.items.emplace_back("cycle", Value::function("loop.cycle", [i](Interp& in, CallArgs& a) {
                                    if (a.args.empty()) in.fail("loop.cycle() needs at least one argument");
                                    return a.args[static_cast<size_t>(i) % a.args.size()];
                                }));
        scope_->vars["loop"] = Value::dict(std::move(loop));
        const Flow f = exec_list(s.body);
        pop_scope();
        if (f == Flow::kBreak) break;
    }
}

void Interp::exec_set(const Stmt& s) {
    if (!s.attr.empty()) {
        Value ns = lookup(s.targets[0]);
        if (!ns.is_namespace()) {
            fail("cannot assign attribute '" + s.attr + "' on '" + s.targets[0] + "': not a namespace() object");
        }
        ns.namespace_dict().set(s.attr, eval(*s.expr));
        return;
    }
    if (s.expr) {
        const Value v = eval(*s.expr);
        unpack_into(*this, s.targets, v, scope_->vars);
        return;
    }
    push_scope();
    Value v = Value::string(capture(s.body, scope_));
    if (s.filter) {
        scope_->vars["\x01block"] = v;
        v = eval(*s.filter);
    }
    pop_scope();
    assign(s.targets[0], std::move(v));
}

Value Interp::make_macro(const Stmt& s) {
    const Stmt* stmt = &s;
    // NOTE: the macro is stored in the scope that defines it; a strong reference back to that
    // scope would be a cycle, leaked at the end of every render. The scope outlives every call
    // made while it is current, which is every call a template can make.
    std::weak_ptr<Scope> def_scope = scope_;
    return Value::function(s.text, [stmt, def_scope](Interp& in, CallArgs& a) {
        auto scope = def_scope.lock();
        if (!scope) in.fail("macro '" + stmt->text + "' called after the scope that defined it ended");
        return in.call_macro(*stmt, scope, a);
    });
}

Value Interp::call_macro(const Stmt& m, const std::shared_ptr<Scope>& def_scope, CallArgs& a) {
    if (call_depth_ >= limits_.max_call_depth) {
        fail("macro calls nested deeper than the limit of " + std::to_string(limits_.max_call_depth) + " (in '" +
                 m.text + "')",
             StatusCode::kResourceExhausted);
    }
    if (a.args.size() > m.params.size()) {
        fail("macro '" + m.text + "' takes not more than " + std::to_string(m.params.size()) + " argument(s)");
    }
    auto scope = std::make_shared<Scope>();
    scope->parent = def_scope;
    std::vector<bool> bound(m.params.size(), false);
    for (size_t i = 0; i < a.args.size(); ++i) {
        scope->vars[m.params[i].name] = a.args[i];
        bound[i] = true;
    }
    for (const auto& kw : a.kwargs) {
        if (kw.first == "caller") {
            scope->vars["caller"] = kw.second;
            continue;
        }
        size_t idx = m.params.size();
        for (size_t i = 0; i < m.params.size(); ++i) {
            if (m.params[i].name == kw.first) idx = i;
        }
        if (idx == m.params.size()) fail("macro '" + m.text + "' takes no keyword argument '" + kw.first + "'");
        if (bound[idx]) fail("macro '" + m.text + "' got multiple values for argument '" + kw.first + "'");
        scope->vars[kw.first] = kw.second;
        bound[idx] = true;
    }
    ++call_depth_;
    auto saved_scope = scope_;
    scope_ = scope;
    const int saved_line = line_;
    for (size_t i = 0; i < m.params.size(); ++i) {
        if (bound[i]) continue;
        // Defaults are evaluated in the macro's scope, where earlier parameters are visible.
        scope->vars[m.params[i].name] = m.params[i].default_value
                                            ? eval(*m.params[i].default_value)
                                            : Value::undefined("'" + m.params[i].name + "' is undefined");
    }
    scope_ = saved_scope;
    std::string text = capture(m.body, scope);
    line_ = saved_line;
    --call_depth_;
    return Value::string(std::move(text));
}

// --- expressions ---------------------------------------------------------------------------------

namespace {

[[noreturn]] void undefined_error(const Interp& in, const Value& v) {
    in.fail(v.undefined_hint().empty() ? "value is undefined" : v.undefined_hint());
}

[[noreturn]] void overflow_error(const Interp& in) {
    in.fail("integer overflow (Python integers are unbounded; this one does not fit 64 bits)");
}

// NOTE: the result is read after the builtin ran (an argument list would not order the two).
template <typename Op>
Value checked_int(const Interp& in, Op op) {
    int64_t r = 0;
    if (op(r)) overflow_error(in);
    return Value::integer(r);
}

int64_t py_floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

int64_t py_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}

}  // namespace

Value Interp::eval(const Expr& e) {
    switch (e.kind) {
        case Expr::Kind::kConst:
            return e.value;
        case Expr::Kind::kName:
            return e.name.empty() ? lookup("\x01block") : lookup(e.name);
        case Expr::Kind::kList: {
            ValueList items;
            items.reserve(e.items.size());
            for (const auto& it : e.items) items.push_back(eval(*it));
            charge(items.size() * sizeof(Value), "a list literal");
            return e.name == "tuple" ? Value::tuple(std::move(items)) : Value::list(std::move(items));
        }
        case Expr::Kind::kDict: {
            ValueDict d;
            for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
                Value k = eval(*e.items[i]);
                if (!k.is_string()) fail("dict keys must be strings in chat templates, got " + k.type_name());
                d.set(k.as_string(), eval(*e.items[i + 1]));
            }
            return Value::dict(std::move(d));
        }
        case Expr::Kind::kGetAttr: {
            Value obj = eval(*e.a);
            line_ = e.line;
            return get_attr(obj, e.name);
        }
        case Expr::Kind::kGetItem: {
            Value obj = eval(*e.a);
            Value key = eval(*e.b);
            line_ = e.line;
            return get_item(obj, key);
        }
        case Expr::Kind::kSlice:
            return eval_slice(e);
        case Expr::Kind::kCall:
            return eval_call(e);
        case Expr::Kind::kFilter: {
            Value subject = eval(*e.a);
            CallArgs args;
            for (const auto& a : e.items) args.args.push_back(eval(*a));
            for (const auto& kw : e.kwargs) args.kwargs.emplace_back(kw.name, eval(*kw.value));
            line_ = e.line;
            return apply_filter(e.name, subject, args);
        }
        case Expr::Kind::kTest: {
            Value subject = eval(*e.a);
            CallArgs args;
            for (const auto& a : e.items) args.args.push_back(eval(*a));
            for (const auto& kw : e.kwargs) args.kwargs.emplace_back(kw.name, eval(*kw.value));
            line_ = e.line;
            return Value::boolean(apply_test(e.name, subject, args) != e.negated);
        }
        case Expr::Kind::kUnary: {
            Value v = eval(*e.a);
            if (e.name == "not") return Value::boolean(!v.truthy());
            if (v.is_undefined()) undefined_error(*this, v);
            if (!v.is_number()) fail("bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
            if (e.name == "+") return v.is_bool() ? Value::integer(v.as_int()) : v;
            if (v.is_float()) return Value::floating(-v.as_float());
            const int64_t x = v.as_int();
            return checked_int(*this, [x](int64_t& r) { return __builtin_sub_overflow(int64_t{0}, x, &r); });
        }
        case Expr::Kind::kBinary:
            return eval_binary(e);
        case Expr::Kind::kCondition:
            if (eval(*e.b).truthy()) return eval(*e.a);
            if (e.c) return eval(*e.c);
            return Value::undefined("the inline if expression evaluated to false and no else section was defined");
    }
    return Value();
}

namespace {

// Python slice indices for a sequence of length n.
void slice_indices(Interp& in, int64_t n, const Value* start, const Value* stop, const Value* step, int64_t& b,
                   int64_t& e, int64_t& st) {
    st = 1;
    if (step && !step->is_none()) {
        if (!step->is_int() && !step->is_bool()) in.fail("slice indices must be integers or None");
        st = step->as_int();
        if (st == 0) in.fail("slice step cannot be zero");
    }
    auto norm = [&](const Value* v, int64_t dflt, bool is_start) {
        if (!v || v->is_none()) return dflt;
        if (!v->is_int() && !v->is_bool()) in.fail("slice indices must be integers or None");
        int64_t x = v->as_int();
        if (x < 0) x += n;
        if (st > 0) return std::clamp<int64_t>(x, 0, n);
        (void)is_start;
        return std::clamp<int64_t>(x, -1, n - 1);
    };
    b = norm(start, st > 0 ? 0 : n - 1, true);
    e = norm(stop, st > 0 ? n : -1, false);
}

}  // namespace

Value Interp::eval_slice(const Expr& e) {
    Value obj = eval(*e.a);
    Value parts[3];
    const Value* ptrs[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i) {
        if (e.items[static_cast<size_t>(i)]) {
            parts[i] = eval(*e.items[static_cast<size_t>(i)]);
            ptrs[i] = &parts[i];
        }
    }
    line_ = e.line;
    if (obj.is_undefined()) undefined_error(*this, obj);
    int64_t b, en, st;
    if (obj.is_list()) {
        const auto& l = obj.as_list();
        slice_indices(*this, static_cast<int64_t>(l.size()), ptrs[0], ptrs[1], ptrs[2], b, en, st);
        ValueList out;
        for (int64_t i = b; st > 0 ? i < en : i > en; i += st) out.push_back(l[static_cast<size_t>(i)]);
        return Value::list(std::move(out));
    }
    if (obj.is_string()) {
        const std::string& s = obj.as_string();
        const auto offs = utf8_offsets(s);
        const int64_t n = static_cast<int64_t>(offs.size()) - 1;
        slice_indices(*this, n, ptrs[0], ptrs[1], ptrs[2], b, en, st);
        std::string out;
        if (st == 1) {
            if (en > b)
                out = s.substr(offs[static_cast<size_t>(b)],
                               offs[static_cast<size_t>(en)] - offs[static_cast<size_t>(b)]);
        } else {
            for (int64_t i = b; st > 0 ? i < en : i > en; i += st) {
                out += s.substr(offs[static_cast<size_t>(i)],
                                offs[static_cast<size_t>(i) + 1] - offs[static_cast<size_t>(i)]);
            }
        }
        return Value::string(std::move(out));
    }
    fail("'" + obj.type_name() + "' object is not subscriptable");
}

Value Interp::eval_call(const Expr& e) {
    Value fn = eval(*e.a);
    CallArgs args;
    for (const auto& a : e.items) args.args.push_back(eval(*a));
    for (const auto& kw : e.kwargs) args.kwargs.emplace_back(kw.name, eval(*kw.value));
    line_ = e.line;
    return call_value(fn, args);
}

Value Interp::call_value(const Value& fn, CallArgs& args) {
    if (fn.is_undefined()) undefined_error(*this, fn);
    if (!fn.is_function()) fail("'" + fn.type_name() + "' object is not callable");
    return fn.as_function().fn(*this, args);
}

Value Interp::eval_binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
        Value a = eval(*e.a);
        return a.truthy() ? eval(*e.b) : a;
    }
    if (op == "or") {
        Value a = eval(*e.a);
        return a.truthy() ? a : eval(*e.b);
    }
    Value a = eval(*e.a);
    Value b = eval(*e.b);
    line_ = e.line;
    if (op == "~") {
        std::string s = to_str(a);
        s += to_str(b);
        charge(s.size(), "'~'");
        return Value::string(std::move(s));
    }
    if (op == "==") return Value::boolean(values_equal(a, b));
    if (op == "!=") return Value::boolean(!values_equal(a, b));
    if (op == "in" || op == "not in") {
        bool found = false;
        if (b.is_undefined()) undefined_error(*this, b);
        if (b.is_string()) {
            if (!a.is_string()) fail("'in <string>' requires string as left operand, not " + a.type_name());
            found = b.as_string().find(a.as_string()) != std::string::npos;
        } else if (b.is_list()) {
            for (const auto& x : b.as_list()) found = found || values_equal(a, x);
        } else if (b.is_dict()) {
            found = a.is_string() && b.as_dict().find(a.as_string()) != nullptr;
        } else {
            fail("argument of type '" + b.type_name() + "' is not iterable");
        }
        return Value::boolean(op == "in" ? found : !found);
    }
    if (a.is_undefined()) undefined_error(*this, a);
    if (b.is_undefined()) undefined_error(*this, b);
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
        int cmp;
        if (a.is_number() && b.is_number()) {
            const double x = a.as_float(), y = b.as_float();
            if (!a.is_float() && !b.is_float()) {
                cmp = a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
            } else {
                if (std::isnan(x) || std::isnan(y)) return Value::boolean(false);
                cmp = x < y ? -1 : (x > y ? 1 : 0);
            }
        } else if (a.is_string() && b.is_string()) {
            const int c = a.as_string().compare(b.as_string());
            cmp = c < 0 ? -1 : (c > 0 ? 1 : 0);
        } else {
            fail("'" + op + "' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
        }
        if (op == "<") return Value::boolean(cmp < 0);
        if (op == ">") return Value::boolean(cmp > 0);
        if (op == "<=") return Value::boolean(cmp <= 0);
        return Value::boolean(cmp >= 0);
    }
    if (a.is_number() && b.is_number()) {
        const bool fl = a.is_float() || b.is_float();
        const int64_t x = a.as_int(), y = b.as_int();
        const double fx = a.as_float(), fy = b.as_float();
        if (op == "+") {
            if (fl) return Value::floating(fx + fy);
            return checked_int(*this, [x, y](int64_t& r) { return __builtin_add_overflow(x, y, &r); });
        }
        if (op == "-") {
            if (fl) return Value::floating(fx - fy);
            return checked_int(*this, [x, y](int64_t& r) { return __builtin_sub_overflow(x, y, &r); });
        }
        if (op == "*") {
            if (fl) return Value::floating(fx * fy);
            return checked_int(*this, [x, y](int64_t& r) { return __builtin_mul_overflow(x, y, &r); });
        }
        if (op == "/") {
            if (fy == 0) fail("division by zero");
            return Value::floating(fx / fy);
        }
        if (op == "//" || op == "%") {
            if (fy == 0) fail(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
            if (!fl) {
                if (x == std::numeric_limits<int64_t>::min() && y == -1) overflow_error(*this);
                return Value::integer(op == "//" ? py_floordiv(x, y) : py_mod(x, y));
            }
            const double q = std::floor(fx / fy);
            if (op == "//") return Value::floating(q);
            double m = std::fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            return Value::floating(m);
        }
        if (op == "**") {
            if (!fl && y >= 0) {
                int64_t acc = 1, base = x, ex = y;
                while (ex > 0) {
                    if ((ex & 1) && __builtin_mul_overflow(acc, base, &acc)) overflow_error(*this);
                    ex >>= 1;
                    if (ex > 0 && __builtin_mul_overflow(base, base, &base)) overflow_error(*this);
                }
                return Value::integer(acc);
            }
            return Value::floating(std::pow(fx, fy));
        }
    }
    if (op == "+" && a.is_string() && b.is_string()) {
        charge(a.as_string().size() + b.as_string().size(), "'+'");
        return Value::string(a.as_string() + b.as_string());
    }
    if (op == "+" && a.is_list() && b.is_list()) {
        ValueList out = a.as_list();
        out.insert(out.end(), b.as_list().begin(), b.as_list().end());
        charge(out.size() * sizeof(Value), "'+'");
        return Value::list(std::move(out));
    }
    if (op == "*" && ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool()))) {
        return repeat(a, b.as_int());
    }
    if (op == "*" && ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool()))) {
        return repeat(b, a.as_int());
    }
    if (op == "%" && a.is_string()) fail("printf-style string formatting ('%' on a string) is not supported");
    fail("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

Value Interp::repeat(const Value& v, int64_t times) {
    if (times <= 0) return v.is_string() ? Value::string("") : Value::list({});
    const size_t unit = v.is_string() ? v.as_string().size() : v.as_list().size() * sizeof(Value);
    if (unit > 0 && static_cast<uint64_t>(times) > limits_.max_string_bytes / unit + 1) {
        charge(limits_.max_string_bytes + 1, "'*'");
    }
    charge(unit * static_cast<size_t>(times), "'*'");
    if (v.is_string()) {
        std::string out;
        out.reserve(unit * static_cast<size_t>(times));
        for (int64_t i = 0; i < times; ++i) out += v.as_string();
        return Value::string(std::move(out));
    }
    ValueList out;
    for (int64_t i = 0; i < times; ++i) out.insert(out.end(), v.as_list().begin(), v.as_list().end());
    return Value::list(std::move(out));
}

// --- conversions ---------------------------------------------------------------------------------

std::string Interp::to_str(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::kUndefined:
            return "";
        case Value::Kind::kString:
            return v.as_string();
        default:
            return repr(v);
    }
}

std::string Interp::repr(const Value& v, int depth) {
    if (depth > 256) fail("value nested deeper than 256 levels", StatusCode::kResourceExhausted);
    switch (v.kind()) {
        case Value::Kind::kUndefined:
            return "Undefined";
        case Value::Kind::kNone:
            return "None";
        case Value::Kind::kBool:
            return v.as_bool() ? "True" : "False";
        case Value::Kind::kInt:
            return std::to_string(v.as_int());
        case Value::Kind::kFloat:
            return python_float_repr(v.as_float());
        case Value::Kind::kString:
            return python_string_repr(v.as_string());
        case Value::Kind::kList: {
            std::string out = v.is_tuple() ? "(" : "[";
            bool first = true;
            for (const auto& x : v.as_list()) {
                if (!first) out += ", ";
                first = false;
                out += repr(x, depth + 1);
                charge(out.size(), "repr");
            }
            if (v.is_tuple()) return out + (v.as_list().size() == 1 ? ",)" : ")");
            return out + "]";
        }
        case Value::Kind::kDict:
        case Value::Kind::kNamespace: {
            std::string out = v.is_namespace() ? "<Namespace {" : "{";
            bool first = true;
            for (const auto& kv : v.is_namespace() ? v.namespace_dict().items : v.as_dict().items) {
                if (!first) out += ", ";
                first = false;
                out += python_string_repr(kv.first) + ": " + repr(kv.second, depth + 1);
                charge(out.size(), "repr");
            }
            return out + (v.is_namespace() ? "}>" : "}");
        }
        case Value::Kind::kFunction:
            return "<function " + v.as_function().name + ">";
    }
    return "";
}

ValueList Interp::iterate(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::kUndefined:
            return {};
        case Value::Kind::kList:
            return v.as_list();
        case Value::Kind::kDict: {
            ValueList keys;
            keys.reserve(v.as_dict().items.size());
            for (const auto& kv : v.as_dict().items) keys.push_back(Value::string(kv.first));
            return keys;
        }
        case Value::Kind::kString: {
            const std::string& s = v.as_string();
            const auto offs = utf8_offsets(s);
            ValueList chars;
            chars.reserve(offs.size());
            for (size_t i = 0; i + 1 < offs.size(); ++i)
                chars.push_back(Value::string(s.substr(offs[i], offs[i + 1] - offs[i])));
            return chars;
        }
        default:
            fail("'" + v.type_name() + "' object is not iterable");
    }
}

Value Interp::get_attr(const Value& obj, const std::string& name) {
    switch (obj.kind()) {
        case Value::Kind::kUndefined:
            undefined_error(*this, obj);
        case Value::Kind::kDict: {
            Value m = bind_method(obj, name);
            if (!m.is_undefined()) return m;
            if (const Value* v = obj.as_dict().find(name)) return *v;
            return Value::undefined("'dict object' has no attribute '" + name + "'");
        }
        case Value::Kind::kNamespace:
            if (const Value* v = obj.namespace_dict().find(name)) return *v;
            return Value::undefined("'Namespace object' has no attribute '" + name + "'");
        case Value::Kind::kNone:
            return Value::undefined("'None' has no attribute '" + name + "'");
        default: {
            Value m = bind_method(obj, name);
            if (!m.is_undefined()) return m;
            return Value::undefined("'" + obj.type_name() + " object' has no attribute '" + name + "'");
        }
    }
}

Value Interp::get_item(const Value& obj, const Value& key) {
    switch (obj.kind()) {
        case Value::Kind::kUndefined:
            undefined_error(*this, obj);
        case Value::Kind::kDict:
            if (key.is_string()) {
                if (const Value* v = obj.as_dict().find(key.as_string())) return *v;
                Value m = bind_method(obj, key.as_string());
                if (!m.is_undefined()) return m;
                return Value::undefined("'dict object' has no attribute '" + key.as_string() + "'");
            }
            return Value::undefined("'dict object' has no attribute " + repr(key));
        case Value::Kind::kNamespace:
            if (key.is_string()) return get_attr(obj, key.as_string());
            return Value::undefined("'Namespace object' has no attribute " + repr(key));
        case Value::Kind::kList:
            if (key.is_int() || key.is_bool()) {
                const auto& l = obj.as_list();
                int64_t i = key.as_int();
                if (i < 0) i += static_cast<int64_t>(l.size());
                if (i < 0 || i >= static_cast<int64_t>(l.size())) {
                    return Value::undefined("'list object' has no element " + std::to_string(key.as_int()));
                }
                return l[static_cast<size_t>(i)];
            }
            if (key.is_string()) return get_attr(obj, key.as_string());
            return Value::undefined("'list object' has no element " + repr(key));
        case Value::Kind::kString:
            if (key.is_int() || key.is_bool()) {
                const std::string& s = obj.as_string();
                const auto offs = utf8_offsets(s);
                const int64_t n = static_cast<int64_t>(offs.size()) - 1;
                int64_t i = key.as_int();
                if (i < 0) i += n;
                if (i < 0 || i >= n)
                    return Value::undefined("'str object' has no element " + std::to_string(key.as_int()));
                return Value::string(s.substr(offs[static_cast<size_t>(i)],
                                              offs[static_cast<size_t>(i) + 1] - offs[static_cast<size_t>(i)]));
            }
            if (key.is_string()) return get_attr(obj, key.as_string());
            return Value::undefined("'str object' has no element " + repr(key));
        case Value::Kind::kNone:
            return Value::undefined("'None' has no attribute " + repr(key));
        default:
            if (key.is_string()) return get_attr(obj, key.as_string());
            return Value::undefined("'" + obj.type_name() + " object' has no element " + repr(key));
    }
}

}  // namespace moe::tmpl
