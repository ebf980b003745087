#include "template/chat_template.h"

#include <filesystem>
#include <set>

#include "core/json_limits.h"
#include "template/lexer.h"
#include "template/parser.h"
#include "tokenizer/unicode.h"

namespace moe::tmpl {

struct ChatTemplate::Impl {
    std::string source;
    std::string bos;
    std::string eos;
    StmtList body;
};

namespace {

// tokenizer_config.json is small; chat templates inside it are at most kMaxTemplateBytes.
constexpr size_t kMaxTokenizerConfigBytes = size_t{64} << 20;

// --- the static check ----------------------------------------------------------------------------

class Checker {
public:
    Status run(const StmtList& body) {
        collect_macros(body);
        for (const auto& s : body) check_stmt(*s);
        return status_;
    }

private:
    void collect_macros(const StmtList& body) {
        for (const auto& s : body) {
            if (s->kind == Stmt::Kind::kMacro) macros_.insert(s->text);
            collect_macros(s->body);
            collect_macros(s->else_body);
            for (const auto& b : s->bodies) collect_macros(b);
        }
    }

    void error(int line, const std::string& what) {
        if (status_.ok()) {
            status_ = invalid_argument("chat template uses " + what + " at line " + std::to_string(line) +
                                       ", which moeserve's template interpreter does not support");
        }
    }

    void check_stmt(const Stmt& s) {
        if (s.expr) check_expr(*s.expr);
        if (s.filter) check_expr(*s.filter);
        for (const auto& c : s.conditions) check_expr(*c);
        for (const auto& p : s.params) {
            if (p.default_value) check_expr(*p.default_value);
        }
        for (const auto& a : s.assigns) check_expr(*a.second);
        for (const auto& b : s.bodies) {
            for (const auto& x : b) check_stmt(*x);
        }
        for (const auto& x : s.body) check_stmt(*x);
        for (const auto& x : s.else_body) check_stmt(*x);
    }

    // The name of a filter/test passed as a string to select, map, ... is checked too.
    void check_named_arg(const Expr& e, size_t idx, bool is_test) {
        if (idx >= e.items.size() || e.items[idx]->kind != Expr::Kind::kConst || !e.items[idx]->value.is_string()) {
            return;
        }
        const std::string& n = e.items[idx]->value.as_string();
        if (is_test && !is_known_test(n)) error(e.line, "the test '" + n + "'");
        if (!is_test && !is_known_filter(n)) error(e.line, "the filter '" + n + "'");
    }

    void check_expr(const Expr& e) {
        switch (e.kind) {
            case Expr::Kind::kFilter:
                if (!is_known_filter(e.name)) {
                    error(e.line, "the filter '" + e.name + "'");
                } else if (e.name == "select" || e.name == "reject") {
                    check_named_arg(e, 0, true);
                } else if (e.name == "selectattr" || e.name == "rejectattr") {
                    check_named_arg(e, 1, true);
                } else if (e.name == "map" && e.kwargs.empty()) {
                    check_named_arg(e, 0, false);
                }
                break;
            case Expr::Kind::kTest:
                if (!is_known_test(e.name)) error(e.line, "the test '" + e.name + "'");
                break;
            case Expr::Kind::kCall:
                if (e.a->kind == Expr::Kind::kName) {
                    const std::string& n = e.a->name;
                    if (!is_known_global(n) && !macros_.count(n) && n != "caller") {
                        error(e.line, "the function '" + n + "'");
                    }
                } else if (e.a->kind == Expr::Kind::kGetAttr) {
                    if (!is_known_method(e.a->name)) error(e.line, "the method '" + e.a->name + "()'");
                }
                break;
            default:
                break;
        }
        if (e.a) check_expr(*e.a);
        if (e.b) check_expr(*e.b);
        if (e.c) check_expr(*e.c);
        for (const auto& i : e.items) {
            if (i) check_expr(*i);
        }
        for (const auto& k : e.kwargs) check_expr(*k.value);
    }

    std::set<std::string> macros_;
    Status status_;
};

// bos_token / eos_token: a string, or an AddedToken object {"content": ...}; absent -> "".
StatusOr<std::string> special_token(const nlohmann::json& config, const char* key, const std::string& origin) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::string();
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) {
        auto c = it->find("content");
        if (c != it->end() && c->is_string()) return c->get<std::string>();
    }
    return invalid_argument(origin + ": '" + key + "' must be a string or an object with a string 'content'");
}

// Value::from_json and the walks over values recurse; input nested past the limit is refused first.
bool json_depth_ok(const nlohmann::ordered_json& j, int budget) {
    if (!j.is_structured()) return true;
    if (budget <= 0) return false;
    for (const auto& e : j) {
        if (!json_depth_ok(e, budget - 1)) return false;
    }
    return true;
}

}  // namespace

Status check_supported(const StmtList& body) {
    Checker c;
    return c.run(body);
}

StatusOr<ChatTemplate> ChatTemplate::from_string(std::string source, std::string bos, std::string eos) {
    if (source.size() > kMaxTemplateBytes) {
        return invalid_argument("chat template of " + std::to_string(source.size()) + " bytes is over the limit of " +
                                std::to_string(kMaxTemplateBytes));
    }
    const size_t bad = tok::find_invalid_utf8(source);
    if (bad != std::string::npos) {
        return invalid_argument("chat template is not valid UTF-8 (byte " + std::to_string(bad) + ")");
    }
    auto tokens = tokenize(source);
    if (!tokens.ok()) return tokens.status();
    auto body = parse_template(*tokens);
    if (!body.ok()) return body.status();
    MOE_RETURN_IF_ERROR(check_supported(*body));
    auto impl = std::make_shared<Impl>();
    impl->source = std::move(source);
    impl->bos = std::move(bos);
    impl->eos = std::move(eos);
    impl->body = std::move(*body);
    return ChatTemplate(std::move(impl));
}

StatusOr<ChatTemplate> ChatTemplate::load(const std::string& model_dir) {
    namespace fs = std::filesystem;
    const fs::path dir(model_dir);
    const fs::path config_path = dir / "tokenizer_config.json";
    const fs::path jinja_path = dir / "chat_template.jinja";
    nlohmann::json config = nlohmann::json::object();
    std::error_code ec;
    if (fs::exists(config_path, ec)) {
        auto parsed = read_json_file(config_path, kMaxTokenizerConfigBytes);
        if (!parsed.ok()) return parsed.status();
        if (!parsed->is_object()) return invalid_argument(config_path.string() + ": not a JSON object");
        config = std::move(*parsed);
    }
    const std::string origin = config_path.string();
    std::string source;
    std::string where;
    auto ct = config.find("chat_template");
    if (ct != config.end() && !ct->is_null()) {
        if (ct->is_string()) {
            source = ct->get<std::string>();
        } else if (ct->is_array()) {
            // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]: the default one.
            bool found = false;
            for (const auto& entry : *ct) {
                if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
                    !entry["name"].is_string() || !entry["template"].is_string()) {
                    return invalid_argument(origin +
                                            ": 'chat_template' list entries must be {\"name\", \"template\"} strings");
                }
                if (entry["name"].get<std::string>() == "default") {
                    source = entry["template"].get<std::string>();
                    found = true;
                }
            }
            if (!found) return invalid_argument(origin + ": 'chat_template' list has no entry named \"default\"");
        } else {
            return invalid_argument(origin + ": 'chat_template' must be a string or a list of named templates");
        }
        where = origin;
    } else if (fs::exists(jinja_path, ec)) {
        auto text = read_regular_file(jinja_path, kMaxTemplateBytes);
        if (!text.ok()) return text.status();
        source = std::move(*text);
        where = jinja_path.string();
    } else {
        return not_found("no chat template in " + model_dir +
                         " (neither a 'chat_template' in tokenizer_config.json nor chat_template.jinja)");
    }
    auto bos = special_token(config, "bos_token", origin);
    if (!bos.ok()) return bos.status();
    auto eos = special_token(config, "eos_token", origin);
    if (!eos.ok()) return eos.status();
    auto t = from_string(std::move(source), std::move(*bos), std::move(*eos));
    if (!t.ok()) return t.status().with_context(where);
    return t;
}

StatusOr<std::string> ChatTemplate::render(const nlohmann::json& messages, const nlohmann::json& tools,
                                           bool add_generation_prompt, const nlohmann::json& extra) const {
    return render(nlohmann::ordered_json(messages), nlohmann::ordered_json(tools), add_generation_prompt,
                  nlohmann::ordered_json(extra));
}

StatusOr<std::string> ChatTemplate::render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                           bool add_generation_prompt, const nlohmann::ordered_json& extra) const {
    if (!messages.is_array()) return invalid_argument("messages must be a JSON array of message objects");
    if (!extra.is_null() && !extra.is_object()) return invalid_argument("chat template kwargs must be a JSON object");
    for (const auto* j : {&messages, &tools, &extra}) {
        if (!json_depth_ok(*j, kMaxJsonDepth)) {
            return invalid_argument("chat messages, tools or kwargs nested deeper than the limit of " +
                                    std::to_string(kMaxJsonDepth) + " levels");
        }
    }
    auto globals = std::make_shared<Scope>();
    add_builtin_globals(*globals);
    globals->vars["messages"] = Value::from_json(messages);
    globals->vars["tools"] = tools.is_null() ? Value::none() : Value::from_json(tools);
    globals->vars["documents"] = Value::none();
    globals->vars["add_generation_prompt"] = Value::boolean(add_generation_prompt);
    // transformers passes only the special tokens the tokenizer has.
    if (!impl_->bos.empty()) globals->vars["bos_token"] = Value::string(impl_->bos);
    if (!impl_->eos.empty()) globals->vars["eos_token"] = Value::string(impl_->eos);
    if (extra.is_object()) {
        for (auto it = extra.begin(); it != extra.end(); ++it) globals->vars[it.key()] = Value::from_json(it.value());
    }
    Interp interp(limits_, fixed_now_);
    std::string out;
    try {
        interp.render(impl_->body, globals, out);
    } catch (const RenderError& e) {
        return Status(e.code, e.message);
    } catch (const std::bad_alloc&) {
        return resource_exhausted("chat template rendering ran out of memory");
    } catch (const std::exception& e) {
        // A library call on template data (a number conversion out of range, ...): still the
        // template's or the request's fault, never the server's.
        return invalid_argument(std::string("chat template error: ") + e.what());
    }
    return out;
}

const std::string& ChatTemplate::source() const {
    return impl_->source;
}
const std::string& ChatTemplate::bos_token() const {
    return impl_->bos;
}
const std::string& ChatTemplate::eos_token() const {
    return impl_->eos;
}

void ChatTemplate::set_fixed_time_for_testing(std::time_t t) {
    fixed_now_ = t;
}

void ChatTemplate::set_limits(const RenderLimits& limits) {
    limits_ = limits;
}

}  // namespace moe::tmpl
