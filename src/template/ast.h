// The syntax tree of a parsed template: expressions and statements, as jinja2's parser builds them
// (only the node kinds of the supported subset).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "template/value.h"

namespace moe::tmpl {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

struct Kwarg {
    std::string name;
    ExprPtr value;
};

struct Expr {
    enum class Kind {
        kConst,      // value
        kName,       // name
        kList,       // items (also tuples: rendered as lists)
        kDict,       // keys/items pairs: items[2k] key, items[2k+1] value
        kGetAttr,    // a.name
        kGetItem,    // a[b]
        kSlice,      // a[b:c:d]; missing parts are null
        kCall,       // a(args, kwargs)
        kFilter,     // a | name(args, kwargs)
        kTest,       // a is [not] name(args)
        kUnary,      // op a  (op: "not", "-", "+")
        kBinary,     // a op b (arithmetic, comparison, "in", "not in", "and", "or", "~")
        kCondition,  // a if b else c (c may be null)
    };
    Kind kind;
    int line = 0;
    Value value;
    std::string name;  // name, attribute, filter/test name or operator
    bool negated = false;
    ExprPtr a, b, c;
    std::vector<ExprPtr> items;  // list/dict items or call/filter/test positional args
    std::vector<Kwarg> kwargs;
};

struct MacroParam {
    std::string name;
    ExprPtr default_value;  // null: undefined when not passed
};

struct Stmt {
    enum class Kind {
        kText,         // text
        kOutput,       // {{ expr }}
        kIf,           // conditions[i] -> bodies[i]; a last body without condition is the else
        kFor,          // targets in expr [if filter] body [else]
        kSet,          // targets = expr | ns.attr = expr | block set (body, optional filter chain)
        kMacro,        // name(params) body
        kCallBlock,    // {% call(params) expr %} body
        kFilterBlock,  // {% filter name(args) %} body
        kBreak,
        kContinue,
        kGeneration,  // transformers' {% generation %}: renders its body
        kWith,        // {% with a = x %} body
    };
    Kind kind;
    int line = 0;
    std::string text;
    ExprPtr expr;
    ExprPtr filter;  // for: loop filter; filter block / block set: the filter chain with a kName placeholder
    std::vector<std::string> targets;
    std::string attr;  // set ns.attr
    std::vector<ExprPtr> conditions;
    std::vector<StmtList> bodies;
    StmtList body;
    StmtList else_body;
    std::vector<MacroParam> params;
    std::vector<std::pair<std::string, ExprPtr>> assigns;  // with
};

}  // namespace moe::tmpl
