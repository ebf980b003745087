// The template interpreter's own contract: load-time refusals that name the construct, run-time
// errors that name the line, resource limits against hostile templates, and the loader's sources
// (tokenizer_config.json string / named list, chat_template.jinja, bos/eos forms).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "template/chat_template.h"

namespace moe::tmpl {
namespace {

using json = nlohmann::ordered_json;

StatusOr<std::string> render_src(const std::string& src, const json& vars = json::object(),
                                 const RenderLimits* limits = nullptr) {
    auto t = ChatTemplate::from_string(src, "<s>", "</s>");
    if (!t.ok()) return t.status();
    if (limits) t->set_limits(*limits);
    return t->render(json::array(), nullptr, false, vars);
}

void expect_load_error(const std::string& src, const std::string& needle) {
    auto t = ChatTemplate::from_string(src, "", "");
    ASSERT_FALSE(t.ok()) << "loaded: " << src;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(needle), std::string::npos)
        << "message [" << t.status().message() << "] lacks [" << needle << "]";
}

TEST(TemplateLoad, UnsupportedConstructsFailAtLoadNamingThem) {
    expect_load_error("ok\n{{ x | xmlattr }}", "the filter 'xmlattr' at line 2");
    expect_load_error("{% if x is frobbable %}{% endif %}", "the test 'frobbable' at line 1");
    expect_load_error("{{ lipsum(3) }}", "the function 'lipsum'");
    expect_load_error("{{ cycler(1, 2) }}", "the function 'cycler'");
    // The sandbox forbids mutating lists; a template that would try fails at load, not per request.
    expect_load_error("{% set l = [] %}{{ l.append(1) }}", "the method 'append()'");
    expect_load_error("{{ [1, 2] | map('nosuchfilter') | list }}", "the filter 'nosuchfilter'");
    expect_load_error("{{ xs | select('nosuchtest') | list }}", "the test 'nosuchtest'");
    expect_load_error("{{ xs | selectattr('a', 'nosuchtest') | list }}", "the test 'nosuchtest'");
    expect_load_error("{% include 'other.jinja' %}", "unsupported statement 'include'");
    expect_load_error("{% extends 'base' %}", "unsupported statement 'extends'");
    expect_load_error("{% for x in xs recursive %}{% endfor %}", "recursive for loops");
    expect_load_error("{% frobnicate %}", "unknown statement 'frobnicate'");
    expect_load_error("{{ f(*args) }}", "*args");
    expect_load_error("{% if a < b < c %}{% endif %}", "chained comparisons");
}

TEST(TemplateLoad, SyntaxErrorsNameTheLine) {
    expect_load_error("line one\n{% if true %}\nno end", "line");
    expect_load_error("a\nb\n{{ 1 + }}", "line 3");
    expect_load_error("{{ 'unterminated }}", "unterminated string literal");
    expect_load_error("{# never closed", "missing end of comment tag");
    expect_load_error("{{ x ) }}", "unexpected ')'");
    expect_load_error("{% break %}", "outside of a for loop");
    expect_load_error("{{ '\\xZZ' }}", "escape");
    expect_load_error("{{ x }", "unexpected '}'");
    expect_load_error("text {{ x ", "missing end of variable tag");
}

TEST(TemplateLoad, MacrosAndCallersAreKnownFunctions) {
    // Called before its definition and from inside another macro: still a known name.
    auto t = ChatTemplate::from_string(
        "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}B{% endmacro %}{{ a() }}"
        "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}c{% endcall %}",
        "", "");
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    auto out = t->render(json::array(), nullptr, false);
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(*out, "B[c]");
}

TEST(TemplateRender, VariablesTransformersPasses) {
    auto t = ChatTemplate::from_string(
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|"
        "{{ messages | length }}|{{ enable_thinking }}",
        "<s>", "</s>");
    ASSERT_TRUE(t.ok());
    auto out = t->render(json::parse(R"([{"role":"user","content":"x"}])"), nullptr, true,
                         json::parse(R"({"enable_thinking": false})"));
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(*out, "<s>|</s>|True|None|None|1|False");
    // kwargs override the special tokens, as apply_chat_template's do.
    out = t->render(json::array(), nullptr, false, json::parse(R"({"bos_token": "B"})"));
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->substr(0, 2), "B|");
}

TEST(TemplateRender, KeyOrderIsTheClients) {
    auto out = render_src("{{ d | tojson }}", json::parse(R"({"d": {"zeta": 1, "alpha": 2, "mid": [3]}})"));
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(*out, R"({"zeta": 1, "alpha": 2, "mid": [3]})");
    // The nlohmann::json overload sorts keys (std::map); the documented reason to prefer ordered_json.
    auto t = ChatTemplate::from_string("{{ tools | tojson }}", "", "");
    ASSERT_TRUE(t.ok());
    auto sorted = t->render(nlohmann::json::array(), nlohmann::json::parse(R"({"b": 1, "a": 2})"), false);
    ASSERT_TRUE(sorted.ok());
    EXPECT_EQ(*sorted, R"({"a": 2, "b": 1})");
}

TEST(TemplateRender, RuntimeErrorsNameTheLine) {
    auto out = render_src("a\nb\n{{ missing.attr }}");
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("line 3"), std::string::npos) << out.status().message();
    EXPECT_NE(out.status().message().find("'missing' is undefined"), std::string::npos) << out.status().message();

    out = render_src("{{ raise_exception('Only user and assistant roles are supported') }}");
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("Only user and assistant roles are supported"), std::string::npos);

    out = render_src("{{ 'a' + 1 }}");
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("unsupported operand"), std::string::npos) << out.status().message();
    // Python's answer for an attribute path past int64: no such element, so Undefined.
    out = render_src(
        "{{ [[1]] | map(attribute='99999999999999999999999') | list }}|{{ '{99999999999999999999}'.format(1) is "
        "defined }}");
    EXPECT_FALSE(out.ok());  // str.format with no such argument is an error in Python too
    out = render_src("{{ [[1]] | map(attribute='99999999999999999999999') | list }}");
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(*out, "[Undefined]");
    out = render_src("{{ 9223372036854775807 + 1 }}");
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("integer overflow"), std::string::npos) << out.status().message();
}

TEST(TemplateRender, BadArguments) {
    auto t = ChatTemplate::from_string("x", "", "");
    ASSERT_TRUE(t.ok());
    auto out = t->render(json::object(), nullptr, false);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("messages must be a JSON array"), std::string::npos);
    out = t->render(json::array(), nullptr, false, json::array());
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("kwargs must be a JSON object"), std::string::npos);
    // Client JSON nested past the limit is refused before any recursive walk.
    json deep = json::array();
    for (int i = 0; i < 1000; ++i) deep = json::array({deep});
    out = t->render(json::array({deep}), nullptr, false);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("nested deeper"), std::string::npos) << out.status().message();
}

// --- hostile templates: every one ends quickly with a clear error, none crashes ---------------------

void expect_exhausted(const StatusOr<std::string>& out, const std::string& needle) {
    ASSERT_FALSE(out.ok()) << "rendered " << (out.ok() ? out->size() : 0) << " bytes";
    EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted) << out.status().to_string();
    EXPECT_NE(out.status().message().find(needle), std::string::npos) << out.status().message();
}

TEST(TemplateLimits, DeepMacroRecursion) {
    expect_exhausted(render_src("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
                     "macro calls nested deeper than the limit of 64");
}

TEST(TemplateLimits, HugeLoops) {
    // 10^10 iterations asked for; the budget (here 10^5, so the test stays quick under sanitizers
    // on a loaded machine) ends it. The time bound only tells "stopped" from "ran them all".
    RenderLimits limits;
    limits.max_loop_iterations = 100'000;
    const auto start = std::chrono::steady_clock::now();
    expect_exhausted(render_src("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                                json::object(), &limits),
                     "loop iterations");
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
    expect_exhausted(render_src("{{ range(100001) | length }}"), "range too big");
}

TEST(TemplateLimits, HugeStrings) {
    // Doubling a string: refused once one value passes the per-string limit.
    expect_exhausted(render_src("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s "
                                "%}{% endfor %}{{ ns.s | length }}"),
                     "over the limit");
    expect_exhausted(render_src("{{ 'abc' * 1000000000000 }}"), "over the limit");
    expect_exhausted(render_src("{{ [1, 2] * 1000000000000 }}"), "over the limit");
    // Output limit: many small writes.
    RenderLimits small;
    small.max_output_bytes = 1000;
    expect_exhausted(render_src("{% for i in range(2000) %}x{% endfor %}", json::object(), &small),
                     "rendered text exceeds the limit of 1000 bytes");
    // Total work: a string rebuilt many times under the per-string limit.
    RenderLimits work;
    work.max_work_bytes = 1 << 20;
    expect_exhausted(render_src("{% set ns = namespace(s='') %}{% for i in range(5000) %}{% set ns.s = ns.s ~ "
                                "'0123456789' %}{% endfor %}",
                                json::object(), &work),
                     "in total");
}

TEST(TemplateLimits, DeepNestingAtParseAndRunTime) {
    std::string parens(5000, '(');
    parens = "{{ " + parens + "1" + std::string(5000, ')') + " }}";
    expect_load_error(parens, "nested deeper than the limit");
    std::string ifs;
    for (int i = 0; i < 500; ++i) ifs += "{% if true %}";
    for (int i = 0; i < 500; ++i) ifs += "{% endif %}";
    expect_load_error(ifs, "nested deeper than the limit");
    // A value nested by the template itself: printing it is refused, not a stack overflow.
    auto out = render_src(
        "{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}");
    expect_exhausted(out, "nested deeper than 256");
    out = render_src(
        "{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v|tojson "
        "}}");
    expect_exhausted(out, "nested deeper than 256");
}

TEST(TemplateLimits, OversizedAndInvalidSource) {
    expect_load_error(std::string(kMaxTemplateBytes + 1, 'x'), "over the limit");
    expect_load_error("bad \xff utf-8", "not valid UTF-8");
}

TEST(TemplateRender, SelfReferencesDoNotOutliveTheRender) {
    // Each of these builds a reference cycle inside the render (a macro in its own scope, a
    // namespace holding itself or its holder); the ASan build's leak check fails if one survives.
    auto out = render_src(
        "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ m(2) }}"
        "{% set ns = namespace(me=none) %}{% set ns.me = ns %}{% set ns.d = {'ns': ns, 'f': m} %}"
        "{% set other = namespace(x=ns) %}{% set ns.o = other %}{{ ns.me.me.d['ns'].d['f'] is defined }}"
        "{% macro w() %}{% set ns.c = caller %}{{ caller() }}{% endmacro %}{% call w() %}c{% endcall %}");
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(*out, "012Truec");
}

TEST(TemplateRender, ConcurrentRendersAgree) {
    auto t = ChatTemplate::from_string(
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}<{{ m.content }}>{% endfor "
        "%}{{ ns.n }}",
        "", "");
    ASSERT_TRUE(t.ok());
    const json msgs = json::parse(R"([{"content":"a"},{"content":"b"},{"content":"c"}])");
    std::vector<std::string> outs(8);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < outs.size(); ++i) {
        threads.emplace_back([&, i] {
            for (int k = 0; k < 200; ++k) {
                auto out = t->render(msgs, nullptr, false);
                outs[i] = out.ok() ? *out : out.status().to_string();
            }
        });
    }
    for (auto& th : threads) th.join();
    for (const auto& o : outs) EXPECT_EQ(o, "<a><b><c>3");
}

// --- the loader ------------------------------------------------------------------------------------

class TemplateDir : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ =
            std::filesystem::temp_directory_path() / ("moe_tmpl_" + std::to_string(::getpid()) + "_" +
                                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
    std::filesystem::path dir_;
};

TEST_F(TemplateDir, StringTemplateAndAddedTokenObjects) {
    write("tokenizer_config.json",
          R"({"chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
              "bos_token": {"__type": "AddedToken", "content": "<B>"}, "eos_token": "<E>"})");
    auto t = ChatTemplate::load(dir_.string());
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(t->bos_token(), "<B>");
    auto out = t->render(json::parse(R"([{"role":"user","content":"hi"}])"), nullptr, true);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(*out, "<B>hi<E>");
}

TEST_F(TemplateDir, NamedListPicksDefault) {
    write("tokenizer_config.json",
          R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
    auto t = ChatTemplate::load(dir_.string());
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(t->source(), "D");
    write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}]})");
    auto bad = ChatTemplate::load(dir_.string());
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("no entry named \"default\""), std::string::npos);
}

TEST_F(TemplateDir, JinjaFileBesideConfig) {
    write("tokenizer_config.json", R"({"eos_token": "<E>"})");
    write("chat_template.jinja", "{{ messages | length }}{{ eos_token }}\n");
    auto t = ChatTemplate::load(dir_.string());
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    auto out = t->render(json::array({json::object()}), nullptr, false);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(*out, "1<E>");
    // Only the .jinja file: still a template, no special tokens.
    std::filesystem::remove(dir_ / "tokenizer_config.json");
    EXPECT_TRUE(ChatTemplate::load(dir_.string()).ok());
}

TEST_F(TemplateDir, MissingOrBad) {
    auto none = ChatTemplate::load(dir_.string());
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
    write("tokenizer_config.json", R"({"chat_template": 42})");
    auto bad = ChatTemplate::load(dir_.string());
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("'chat_template' must be"), std::string::npos);
    write("tokenizer_config.json", R"({"chat_template": "{{ x | nope }}"})");
    bad = ChatTemplate::load(dir_.string());
    ASSERT_FALSE(bad.ok());
    // The file is named along with the construct.
    EXPECT_NE(bad.status().message().find("tokenizer_config.json"), std::string::npos) << bad.status().message();
    EXPECT_NE(bad.status().message().find("the filter 'nope'"), std::string::npos) << bad.status().message();
    write("tokenizer_config.json", "{not json");
    EXPECT_FALSE(ChatTemplate::load(dir_.string()).ok());
}

}  // namespace
}  // namespace moe::tmpl
