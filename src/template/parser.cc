#include "template/parser.h"

#include <set>
#include <utility>

namespace moe::tmpl {
namespace {

struct ParseError {
    int line;
    std::string message;
};

class Parser {
public:
    explicit Parser(const std::vector<Token>& toks) : t_(toks) {}

    StmtList parse_all() {
        StmtList body = subparse({});
        if (cur().kind != Token::Kind::kEof) fail(cur().line, "unexpected end tag");
        return body;
    }

private:
    // --- token helpers -------------------------------------------------------------------------
    const Token& cur() const { return t_[pos_]; }
    const Token& peek(size_t k = 1) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
    void next() {
        if (pos_ + 1 < t_.size()) ++pos_;
    }
    [[noreturn]] static void fail(int line, const std::string& msg) { throw ParseError{line, msg}; }
    bool is_op(const char* op) const { return cur().kind == Token::Kind::kOp && cur().text == op; }
    bool is_name(const char* name) const { return cur().kind == Token::Kind::kName && cur().text == name; }
    void expect_op(const char* op) {
        if (!is_op(op)) fail(cur().line, std::string("expected '") + op + "', got " + describe(cur()));
        next();
    }
    std::string expect_name() {
        if (cur().kind != Token::Kind::kName) fail(cur().line, "expected a name, got " + describe(cur()));
        std::string n = cur().text;
        next();
        return n;
    }
    void expect_block_end() {
        if (cur().kind != Token::Kind::kBlockEnd)
            fail(cur().line, "expected end of statement '%}', got " + describe(cur()));
        next();
    }
    static std::string describe(const Token& t) {
        switch (t.kind) {
            case Token::Kind::kData:
                return "template text";
            case Token::Kind::kVarBegin:
                return "'{{'";
            case Token::Kind::kVarEnd:
                return "'}}'";
            case Token::Kind::kBlockBegin:
                return "'{%'";
            case Token::Kind::kBlockEnd:
                return "'%}'";
            case Token::Kind::kName:
                return "'" + t.text + "'";
            case Token::Kind::kString:
                return "a string";
            case Token::Kind::kInt:
            case Token::Kind::kFloat:
                return "a number";
            case Token::Kind::kOp:
                return "'" + t.text + "'";
            case Token::Kind::kEof:
                return "end of template";
        }
        return "?";
    }

    struct DepthGuard {
        explicit DepthGuard(Parser& p) : p_(p) {
            if (++p_.depth_ > kMaxParseDepth) {
                fail(p_.cur().line,
                     "template nested deeper than the limit of " + std::to_string(kMaxParseDepth) + " levels");
            }
        }
        ~DepthGuard() { --p_.depth_; }
        Parser& p_;
    };

    static ExprPtr make(Expr::Kind kind, int line) {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = line;
        return e;
    }

    // --- statements ------------------------------------------------------------------------------
    // Parses until a block tag whose name is in `ends` (left unconsumed: cur() is that name).
    StmtList subparse(const std::set<std::string>& ends) {
        DepthGuard guard(*this);
        StmtList out;
        while (true) {
            const Token& t = cur();
            if (t.kind == Token::Kind::kEof) {
                if (!ends.empty()) {
                    std::string names;
                    for (const auto& e : ends) names += (names.empty() ? "'" : " or '") + e + "'";
                    fail(t.line, "unexpected end of template, expected " + names);
                }
                return out;
            }
            if (t.kind == Token::Kind::kData) {
                auto s = std::make_unique<Stmt>();
                s->kind = Stmt::Kind::kText;
                s->line = t.line;
                s->text = t.text;
                out.push_back(std::move(s));
                next();
                continue;
            }
            if (t.kind == Token::Kind::kVarBegin) {
                next();
                auto s = std::make_unique<Stmt>();
                s->kind = Stmt::Kind::kOutput;
                s->line = t.line;
                s->expr = parse_tuple(true);
                if (cur().kind != Token::Kind::kVarEnd) fail(cur().line, "expected '}}', got " + describe(cur()));
                next();
                out.push_back(std::move(s));
                continue;
            }
            if (t.kind == Token::Kind::kBlockBegin) {
                const Token& name = peek();
                if (name.kind != Token::Kind::kName) fail(name.line, "expected a statement name after '{%'");
                if (ends.count(name.text)) {
                    next();  // cur() is now the end name
                    return out;
                }
                next();
                out.push_back(parse_statement());
                continue;
            }
            fail(t.line, "unexpected " + describe(t));
        }
    }

    StmtPtr parse_statement() {
        const Token& t = cur();
        const std::string name = t.text;
        const int line = t.line;
        next();
        if (name == "if") return parse_if(line);
        if (name == "for") return parse_for(line);
        if (name == "set") return parse_set(line);
        if (name == "macro") return parse_macro(line);
        if (name == "call") return parse_call_block(line);
        if (name == "filter") return parse_filter_block(line);
        if (name == "with") return parse_with(line);
        if (name == "generation") {
            // transformers' AssistantTracker extension: marks assistant text; renders the body as is.
            expect_block_end();
            auto s = std::make_unique<Stmt>();
            s->kind = Stmt::Kind::kGeneration;
            s->line = line;
            s->body = subparse({"endgeneration"});
            next();
            expect_block_end();
            return s;
        }
        if (name == "break" || name == "continue") {
            if (loop_depth_ == 0) fail(line, "'" + name + "' outside of a for loop");
            expect_block_end();
            auto s = std::make_unique<Stmt>();
            s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
            s->line = line;
            return s;
        }
        static const std::set<std::string> kKnownUnsupported = {
            "extends", "block", "include", "import", "from", "do", "autoescape", "trans", "pluralize", "print"};
        if (kKnownUnsupported.count(name)) {
            fail(line, "unsupported statement '" + name + "' (chat templates are rendered standalone)");
        }
        fail(line, "unknown statement '" + name + "'");
    }

    StmtPtr parse_if(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kIf;
        s->line = line;
        s->conditions.push_back(parse_tuple(true));
        expect_block_end();
        while (true) {
            s->bodies.push_back(subparse({"elif", "else", "endif"}));
            const std::string tag = cur().text;
            next();
            if (tag == "elif") {
                s->conditions.push_back(parse_tuple(true));
                expect_block_end();
                continue;
            }
            if (tag == "else") {
                expect_block_end();
                s->bodies.push_back(subparse({"endif"}));
                next();
            }
            expect_block_end();
            return s;
        }
    }

    void parse_targets(std::vector<std::string>& targets) {
        targets.push_back(expect_name());
        while (is_op(",")) {
            next();
            if (cur().kind != Token::Kind::kName || is_name("in")) break;
            targets.push_back(expect_name());
        }
    }

    StmtPtr parse_for(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kFor;
        s->line = line;
        bool paren = false;
        if (is_op("(")) {
            paren = true;
            next();
        }
        parse_targets(s->targets);
        if (paren) expect_op(")");
        if (!is_name("in")) fail(cur().line, "expected 'in' in for loop, got " + describe(cur()));
        next();
        s->expr = parse_tuple(false);
        if (is_name("if")) {
            next();
            s->filter = parse_expression(true);
        }
        if (is_name("recursive")) fail(cur().line, "unsupported: recursive for loops");
        expect_block_end();
        ++loop_depth_;
        s->body = subparse({"endfor", "else"});
        --loop_depth_;
        if (cur().text == "else") {
            next();
            expect_block_end();
            s->else_body = subparse({"endfor"});
        }
        next();
        expect_block_end();
        return s;
    }

    StmtPtr parse_set(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kSet;
        s->line = line;
        const std::string first = expect_name();
        if (is_op(".")) {
            next();
            s->targets.push_back(first);
            s->attr = expect_name();
        } else {
            s->targets.push_back(first);
            while (is_op(",")) {
                next();
                s->targets.push_back(expect_name());
            }
        }
        if (is_op("=")) {
            next();
            s->expr = parse_tuple(true);
            expect_block_end();
            return s;
        }
        if (!s->attr.empty() || s->targets.size() != 1) fail(line, "block set takes exactly one plain name");
        // Block set: {% set x %}...{% endset %}, with an optional filter chain.
        if (is_op("|")) s->filter = parse_filter_chain(make(Expr::Kind::kName, line));
        expect_block_end();
        s->body = subparse({"endset"});
        next();
        expect_block_end();
        return s;
    }

    void parse_params(std::vector<MacroParam>& params) {
        expect_op("(");
        while (!is_op(")")) {
            if (!params.empty()) expect_op(",");
            if (is_op(")")) break;
            MacroParam p;
            p.name = expect_name();
            if (is_op("=")) {
                next();
                p.default_value = parse_expression(true);
            }
            params.push_back(std::move(p));
        }
        next();
    }

    StmtPtr parse_macro(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kMacro;
        s->line = line;
        s->text = expect_name();
        parse_params(s->params);
        expect_block_end();
        const int saved = loop_depth_;
        loop_depth_ = 0;
        s->body = subparse({"endmacro"});
        loop_depth_ = saved;
        next();
        if (cur().kind == Token::Kind::kName) next();  // {% endmacro name %}
        expect_block_end();
        return s;
    }

    StmtPtr parse_call_block(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kCallBlock;
        s->line = line;
        if (is_op("(")) parse_params(s->params);
        s->expr = parse_expression(true);
        if (s->expr->kind != Expr::Kind::kCall) fail(line, "expected a call after 'call'");
        expect_block_end();
        const int saved = loop_depth_;
        loop_depth_ = 0;
        s->body = subparse({"endcall"});
        loop_depth_ = saved;
        next();
        expect_block_end();
        return s;
    }

    StmtPtr parse_filter_block(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kFilterBlock;
        s->line = line;
        s->filter = parse_filter_chain(make(Expr::Kind::kName, line), /*first_pipe=*/false);
        expect_block_end();
        s->body = subparse({"endfilter"});
        next();
        expect_block_end();
        return s;
    }

    StmtPtr parse_with(int line) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kWith;
        s->line = line;
        while (cur().kind != Token::Kind::kBlockEnd) {
            if (!s->assigns.empty()) expect_op(",");
            std::string name = expect_name();
            expect_op("=");
            s->assigns.emplace_back(std::move(name), parse_expression(true));
        }
        expect_block_end();
        s->body = subparse({"endwith"});
        next();
        expect_block_end();
        return s;
    }

    // --- expressions -----------------------------------------------------------------------------
    // expr (',' expr)* : a tuple (a list here) when there is a comma.
    ExprPtr parse_tuple(bool with_condexpr) {
        const int line = cur().line;
        ExprPtr first = parse_expression(with_condexpr);
        if (!is_op(",")) return first;
        auto list = make(Expr::Kind::kList, line);
        list->name = "tuple";
        list->items.push_back(std::move(first));
        while (is_op(",")) {
            next();
            if (cur().kind == Token::Kind::kBlockEnd || cur().kind == Token::Kind::kVarEnd || is_op(")")) break;
            list->items.push_back(parse_expression(with_condexpr));
        }
        return list;
    }

    ExprPtr parse_expression(bool with_condexpr) {
        DepthGuard guard(*this);
        if (!with_condexpr) return parse_or();
        ExprPtr expr = parse_or();
        while (is_name("if")) {
            const int line = cur().line;
            next();
            auto cond = make(Expr::Kind::kCondition, line);
            cond->b = parse_or();
            cond->a = std::move(expr);
            if (is_name("else")) {
                next();
                cond->c = parse_expression(true);
            }
            expr = std::move(cond);
        }
        return expr;
    }

    ExprPtr binary(std::string op, ExprPtr a, ExprPtr b, int line) {
        auto e = make(Expr::Kind::kBinary, line);
        e->name = std::move(op);
        e->a = std::move(a);
        e->b = std::move(b);
        return e;
    }

    ExprPtr parse_or() {
        ExprPtr left = parse_and();
        while (is_name("or")) {
            const int line = cur().line;
            next();
            left = binary("or", std::move(left), parse_and(), line);
        }
        return left;
    }

    ExprPtr parse_and() {
        ExprPtr left = parse_not();
        while (is_name("and")) {
            const int line = cur().line;
            next();
            left = binary("and", std::move(left), parse_not(), line);
        }
        return left;
    }

    ExprPtr parse_not() {
        DepthGuard guard(*this);
        if (is_name("not")) {
            const int line = cur().line;
            next();
            auto e = make(Expr::Kind::kUnary, line);
            e->name = "not";
            e->a = parse_not();
            return e;
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        const int line = cur().line;
        ExprPtr left = parse_math1();
        // Chains (a < b < c) become (a < b) and (b < c); operands have no side effects worth keeping single.
        ExprPtr result;
        while (true) {
            std::string op;
            if (cur().kind == Token::Kind::kOp && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                                   cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
                op = cur().text;
                next();
            } else if (is_name("in")) {
                op = "in";
                next();
            } else if (is_name("not") && peek().kind == Token::Kind::kName && peek().text == "in") {
                op = "not in";
                next();
                next();
            } else {
                break;
            }
            ExprPtr right = parse_math1();
            if (!result) {
                result = binary(op, std::move(left), std::move(right), line);
            } else {
                fail(line, "chained comparisons are not supported");
            }
        }
        return result ? std::move(result) : std::move(left);
    }

    ExprPtr parse_math1() {
        ExprPtr left = parse_concat();
        while (is_op("+") || is_op("-")) {
            const std::string op = cur().text;
            const int line = cur().line;
            next();
            left = binary(op, std::move(left), parse_concat(), line);
        }
        return left;
    }

    ExprPtr parse_concat() {
        ExprPtr left = parse_math2();
        while (is_op("~")) {
            const int line = cur().line;
            next();
            left = binary("~", std::move(left), parse_math2(), line);
        }
        return left;
    }

    ExprPtr parse_math2() {
        ExprPtr left = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const std::string op = cur().text;
            const int line = cur().line;
            next();
            left = binary(op, std::move(left), parse_pow(), line);
        }
        return left;
    }

    ExprPtr parse_pow() {
        ExprPtr left = parse_unary(true);
        while (is_op("**")) {
            const int line = cur().line;
            next();
            left = binary("**", std::move(left), parse_unary(true), line);
        }
        return left;
    }

    ExprPtr parse_unary(bool with_filter) {
        DepthGuard guard(*this);
        ExprPtr node;
        if (is_op("-") || is_op("+")) {
            const std::string op = cur().text;
            const int line = cur().line;
            next();
            node = make(Expr::Kind::kUnary, line);
            node->name = op;
            node->a = parse_unary(false);
        } else {
            node = parse_primary();
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr parse_primary() {
        const Token& t = cur();
        const int line = t.line;
        switch (t.kind) {
            case Token::Kind::kName: {
                const std::string n = t.text;
                next();
                if (n == "true" || n == "True") return constant(Value::boolean(true), line);
                if (n == "false" || n == "False") return constant(Value::boolean(false), line);
                if (n == "none" || n == "None") return constant(Value::none(), line);
                auto e = make(Expr::Kind::kName, line);
                e->name = n;
                return e;
            }
            case Token::Kind::kString: {
                std::string s = t.text;
                next();
                // Adjacent literals concatenate, as in Python.
                while (cur().kind == Token::Kind::kString) {
                    s += cur().text;
                    next();
                }
                return constant(Value::string(std::move(s)), line);
            }
            case Token::Kind::kInt: {
                const int64_t v = t.int_value;
                next();
                return constant(Value::integer(v), line);
            }
            case Token::Kind::kFloat: {
                const double v = t.float_value;
                next();
                return constant(Value::floating(v), line);
            }
            case Token::Kind::kOp:
                if (t.text == "(") {
                    next();
                    if (is_op(")")) {
                        next();
                        auto empty = make(Expr::Kind::kList, line);
                        empty->name = "tuple";
                        return empty;
                    }
                    ExprPtr inner = parse_tuple(true);
                    expect_op(")");
                    return inner;
                }
                if (t.text == "[") {
                    next();
                    auto e = make(Expr::Kind::kList, line);
                    while (!is_op("]")) {
                        if (!e->items.empty()) expect_op(",");
                        if (is_op("]")) break;
                        e->items.push_back(parse_expression(true));
                    }
                    next();
                    return e;
                }
                if (t.text == "{") {
                    next();
                    auto e = make(Expr::Kind::kDict, line);
                    while (!is_op("}")) {
                        if (!e->items.empty()) expect_op(",");
                        if (is_op("}")) break;
                        e->items.push_back(parse_expression(true));
                        expect_op(":");
                        e->items.push_back(parse_expression(true));
                    }
                    next();
                    return e;
                }
                break;
            default:
                break;
        }
        fail(line, "unexpected " + describe(t));
    }

    ExprPtr constant(Value v, int line) {
        auto e = make(Expr::Kind::kConst, line);
        e->value = std::move(v);
        return e;
    }

    ExprPtr parse_postfix(ExprPtr node) {
        while (true) {
            if (is_op(".")) {
                const int line = cur().line;
                next();
                if (cur().kind == Token::Kind::kName) {
                    auto e = make(Expr::Kind::kGetAttr, line);
                    e->name = cur().text;
                    e->a = std::move(node);
                    next();
                    node = std::move(e);
                } else if (cur().kind == Token::Kind::kInt) {
                    auto e = make(Expr::Kind::kGetItem, line);
                    e->a = std::move(node);
                    e->b = constant(Value::integer(cur().int_value), line);
                    next();
                    node = std::move(e);
                } else {
                    fail(line, "expected an attribute name after '.'");
                }
            } else if (is_op("[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const int line = cur().line;
        next();
        ExprPtr start, stop, step;
        bool is_slice = false;
        if (!is_op(":")) start = parse_expression(true);
        if (is_op(":")) {
            is_slice = true;
            next();
            if (!is_op("]") && !is_op(":")) stop = parse_expression(true);
            if (is_op(":")) {
                next();
                if (!is_op("]")) step = parse_expression(true);
            }
        }
        expect_op("]");
        if (!is_slice) {
            auto e = make(Expr::Kind::kGetItem, line);
            e->a = std::move(node);
            e->b = std::move(start);
            return e;
        }
        auto e = make(Expr::Kind::kSlice, line);
        e->a = std::move(node);
        e->items.push_back(std::move(start));
        e->items.push_back(std::move(stop));
        e->items.push_back(std::move(step));
        return e;
    }

    void parse_call_args(Expr& call) {
        expect_op("(");
        bool first = true;
        while (!is_op(")")) {
            if (!first) expect_op(",");
            first = false;
            if (is_op(")")) break;
            if (is_op("*") || is_op("**")) fail(cur().line, "unsupported: *args and **kwargs in calls");
            if (cur().kind == Token::Kind::kName && peek().kind == Token::Kind::kOp && peek().text == "=") {
                Kwarg kw;
                kw.name = cur().text;
                next();
                next();
                kw.value = parse_expression(true);
                call.kwargs.push_back(std::move(kw));
            } else {
                if (!call.kwargs.empty()) fail(cur().line, "positional argument after a keyword argument");
                call.items.push_back(parse_expression(true));
            }
        }
        next();
    }

    ExprPtr parse_call(ExprPtr node) {
        auto e = make(Expr::Kind::kCall, cur().line);
        e->a = std::move(node);
        parse_call_args(*e);
        return e;
    }

    std::string parse_dotted_name() {
        std::string n = expect_name();
        while (is_op(".")) {
            next();
            n += "." + expect_name();
        }
        return n;
    }

    ExprPtr parse_filter_chain(ExprPtr node, bool first_pipe = true) {
        bool need_pipe = first_pipe;
        while (!need_pipe || is_op("|")) {
            if (need_pipe) next();
            need_pipe = true;
            auto f = make(Expr::Kind::kFilter, cur().line);
            f->name = parse_dotted_name();
            f->a = std::move(node);
            if (is_op("(")) parse_call_args(*f);
            node = std::move(f);
        }
        return node;
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        while (true) {
            if (is_op("|")) {
                node = parse_filter_chain(std::move(node));
            } else if (is_name("is")) {
                node = parse_test(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_test(ExprPtr node) {
        auto e = make(Expr::Kind::kTest, cur().line);
        next();  // is
        if (is_name("not")) {
            next();
            e->negated = true;
        }
        e->name = parse_dotted_name();
        e->a = std::move(node);
        if (is_op("(")) {
            parse_call_args(*e);
        } else if ((cur().kind == Token::Kind::kName || cur().kind == Token::Kind::kString ||
                    cur().kind == Token::Kind::kInt || cur().kind == Token::Kind::kFloat || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
            if (is_name("is")) fail(cur().line, "you cannot chain multiple tests with 'is'");
            e->items.push_back(parse_postfix(parse_primary()));
        }
        return e;
    }

    const std::vector<Token>& t_;
    size_t pos_ = 0;
    int depth_ = 0;
    int loop_depth_ = 0;
};

}  // namespace

StatusOr<StmtList> parse_template(const std::vector<Token>& tokens) {
    try {
        Parser p(tokens);
        return p.parse_all();
    } catch (const ParseError& e) {
        return invalid_argument("chat template syntax error at line " + std::to_string(e.line) + ": " + e.message);
    }
}

}  // namespace moe::tmpl
