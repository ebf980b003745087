#!/usr/bin/env python3
"""Writes the chat-template vectors that tests/template checks moeserve's Jinja interpreter against.

Every template is rendered by transformers' own chat-template renderer
(transformers.utils.chat_template_utils.render_jinja_template: jinja2's ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks, loopcontrols and transformers' tojson / raise_exception /
strftime_now), exactly as tokenizer.apply_chat_template(tokenize=False) renders it, with the
template variables apply_chat_template passes (the tokenizer's bos/eos strings, tools, kwargs).

Outputs (all under tests/data/chat-templates/):
  <family>/cases.json   conversations rendered through the family's real template (expected text,
                        or the error the template raised)
  constructs.json       small templates, one construct each, with their expected output or error

strftime_now reads a fixed clock (FIXED_TIME, UTC) so that the expected text does not depend on the
day the script ran; the C++ test sets the same time.

    pip install -r tests/reference/requirements.txt   # transformers, jinja2
    python3 tests/reference/make_template_vectors.py
"""
import datetime as _dt
import json
import os
import sys

import jinja2
import transformers
from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "data", "chat-templates"))
FIXED_TIME = 1752000000  # 2025-07-08 18:40:00 UTC


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(FIXED_TIME, _dt.timezone.utc).replace(tzinfo=None)


# transformers' strftime_now calls datetime.now() from this module's globals.
ctu.datetime = _FixedDatetime


def load_family(family_dir):
    """The template and bos/eos the way moeserve's ChatTemplate::load reads them."""
    cfg_path = os.path.join(family_dir, "tokenizer_config.json")
    cfg = {}
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    ct = cfg.get("chat_template")
    if isinstance(ct, list):
        ct = next(t["template"] for t in ct if t["name"] == "default")
    if ct is None:
        with open(os.path.join(family_dir, "chat_template.jinja"), encoding="utf-8") as f:
            ct = f.read()

    def tok(key):
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return v

    return ct, tok("bos_token"), tok("eos_token")


def render(template, messages, tools, add_generation_prompt, bos, eos, extra):
    kwargs = {}
    # apply_chat_template passes the tokenizer's special tokens (only those it has), then kwargs.
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    kwargs.update(extra)
    rendered, _ = ctu.render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
    return rendered[0]


def outcome(fn):
    try:
        return {"expected": fn()}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": "syntax", "message": str(e)}
    except jinja2.exceptions.UndefinedError as e:
        return {"error": "undefined", "message": str(e)}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception() raises TemplateError with the template's message.
        return {"error": "raise", "message": str(e)}
    except Exception as e:  # TypeError, ValueError, ... from the template's Python operations
        return {"error": "runtime", "message": f"{type(e).__name__}: {e}"}


# --- conversations -------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "description": "Forecast days"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web — returns snippets",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "top_k": {"type": "number", "default": 3}},
            "required": ["query"],
        },
    },
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER1 = {"role": "user", "content": "What is the capital of France?"}
ASSIST1 = {"role": "assistant", "content": "The capital of France is Paris."}
USER2 = {"role": "user", "content": "And of Germany? Answer in one word."}
UNICODE_USER = {"role": "user", "content": "Ünïcödé: 你好, emoji 🙂, quotes \"x\" 'y', tab\tand\nnewline \\ backslash  "}


def tool_turns(arguments_as_string):
    args = {"city": "Paris", "unit": "celsius"}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps(args) if arguments_as_string else args},
    }
    return [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21, \"sky\": \"clear\"}"},
        {"role": "assistant", "content": "It is 21°C and clear in Paris."},
        {"role": "user", "content": "Thanks! And tomorrow?"},
    ]


def cases():
    out = []

    def add(name, messages, tools=None, gen=True, extra=None):
        out.append({"name": name, "messages": messages, "tools": tools, "add_generation_prompt": gen,
                    "extra": extra or {}})

    add("single_user", [USER1])
    add("single_user_no_gen", [USER1], gen=False)
    add("system_user", [SYSTEM, USER1])
    add("system_user_no_gen", [SYSTEM, USER1], gen=False)
    add("multi_turn", [SYSTEM, USER1, ASSIST1, USER2])
    add("multi_turn_no_system", [USER1, ASSIST1, USER2])
    add("ends_with_assistant", [USER1, ASSIST1], gen=False)
    add("unicode", [UNICODE_USER])
    add("tools_declared", [SYSTEM, USER1], tools=[WEATHER_TOOL, SEARCH_TOOL])
    add("tool_calls_dict_args", tool_turns(False), tools=[WEATHER_TOOL])
    add("tool_calls_string_args", tool_turns(True), tools=[WEATHER_TOOL])
    add("tool_calls_system", [SYSTEM] + tool_turns(False), tools=[WEATHER_TOOL, SEARCH_TOOL])
    add("tool_result_last", tool_turns(False)[:3], tools=[WEATHER_TOOL])
    add("reasoning_content", [USER1, {"role": "assistant", "content": "Paris.", "reasoning_content": "The user asks about France."}, USER2])
    add("think_in_content", [USER1, {"role": "assistant", "content": "<think>\nFrance... Paris.\n</think>\n\nParis."}, USER2])
    add("thinking_field", [USER1, {"role": "assistant", "content": "Paris.", "thinking": "Easy geography."}, USER2])
    add("enable_thinking_false", [USER1], extra={"enable_thinking": False})
    add("enable_thinking_true", [USER1], extra={"enable_thinking": True})
    add("reasoning_effort_high", [SYSTEM, USER1], extra={"reasoning_effort": "high"})
    add("builtin_tools", [USER1], extra={"builtin_tools": ["browser", "python"], "model_identity": "You are a test model."})
    add("developer_role", [{"role": "developer", "content": "Be terse."}, USER1])
    add("content_parts", [{"role": "user", "content": [{"type": "text", "text": "Describe this."}, {"type": "text", "text": "Briefly."}]}])
    add("two_systems", [SYSTEM, {"role": "system", "content": "Second system."}, USER1])
    add("empty_messages", [], gen=True)
    add("user_user", [USER1, USER2])
    add("assistant_first", [ASSIST1, USER1])
    return out


# --- constructs ----------------------------------------------------------------------------------

CONSTRUCTS = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("text_only", "plain text\n", {}),
    ("trailing_newline_dropped", "a\n\n", {}),
    ("crlf", "a\r\nb\rc", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("lstrip_blocks", "x\n    {% if true %}\n    in\n    {% endif %}\ny", {}),
    ("lstrip_not_for_vars", "x\n    {{ 1 }}\n", {}),
    ("minus_strip", "a   {%- if true -%}   b   {%- endif -%}   c", {}),
    ("var_minus", "a \n {{- 'x' -}} \n b", {}),
    ("plus_disables_lstrip", "x\n    {%+ if true %}y{% endif %}", {}),
    ("plus_disables_trim", "{% if true +%}\nyes{% endif %}", {}),
    ("comment", "a {# note #}\nb\n  {# indented #}\nc {#- strip -#}   d", {}),
    ("raw", "{% raw %}{{ not a var }}{% endraw %}!", {}),
    # literals and printing
    ("print_values", "{{ none }}|{{ true }}|{{ 3 }}|{{ 2.5 }}|{{ 1e20 }}|{{ 1.0e-5 }}|{{ 0.1 + 0.2 }}|{{ 10/4 }}|{{ 4/2 }}", {}),
    ("print_list_dict", "{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }} {{ {'a': {'b': [1]}} }}", {}),
    ("print_undefined", "[{{ missing }}][{{ d.missing }}][{{ none_value.attr }}]", {"d": {}, "none_value": None}),
    ("string_escapes", "{{ 'a\\tb\\n\\\\' ~ \"q\\\"\" ~ '\\u00e9\\x41' }}", {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    # arithmetic and operators
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -3 }} {{ +3 }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' ~ 1 + 2 }} {{ not true or true }} {{ 2 * 3 ** 2 }}", {}),
    ("concat", "{{ 'a' + 'b' }} {{ [1] + [2, 3] }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 'x' ~ none ~ 1 ~ missing }}", {}),
    ("compare", "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 2 >= 3 }} {{ [1,2] == [1,2] }} {{ {'a':1} != {'a':1} }} {{ none == none }}", {}),
    ("in_operator", "{{ 'b' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k':1} }} {{ 'z' not in 'abc' }} {{ 3 not in [1] }}", {}),
    ("and_or_values", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 1 }} {{ none or none }}", {}),
    ("ternary", "{{ 'y' if x else 'n' }} {{ 'y' if not x else 'n' }}|{{ 'only' if false }}|", {"x": 1}),
    # attribute / subscript / slices
    ("getattr_getitem", "{{ m.role }} {{ m['content'] }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ m.missing is defined }}", {"m": {"role": "user", "content": "hi"}, "l": [10, 20, 30]}),
    ("slices", "{{ l[1:] }} {{ l[:-1] }} {{ l[::2] }} {{ l[::-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s[-2:] }} {{ l[5:] }}", {"l": [1, 2, 3, 4], "s": "héllo"}),
    ("string_index_unicode", "{{ s[0] }}{{ s[1] }} {{ s|length }}", {"s": "é🙂x"}),
    ("dict_items_attr", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('z', 0) }} {{ d.get('z') }}", {"d": {"b": 1, "a": 2}}),
    ("dict_items_key_named_items", "{{ d['items'] }} {{ d.items is defined }}", {"d": {"items": [1]}}),
    # if / for / loop
    ("if_elif_else", "{% for x in [1,2,3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %},{% endfor %}", {}),
    ("loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {}),
    ("loop_prev_next", "{% for x in [1,2,3] %}[{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}]{% endfor %}", {}),
    ("loop_cycle", "{% for x in range(4) %}{{ loop.cycle('a','b','c') }}{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in missing %}x{% else %}undef-empty{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x % 3 == 0 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", {}),
    ("for_dict", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("for_unpack", "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", {}),
    ("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("nested_loops", "{% for a in [1,2] %}{% for b in [3,4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}", {}),
    ("range_forms", "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }}", {}),
    # set and scoping
    ("set_scoping_loop", "{% set x = 1 %}{% for i in [1,2] %}{{ x }}{% set x = x + i %}{{ x }},{% endfor %}{{ x }}", {}),
    ("set_in_if_leaks", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("block_set", "{% set b %}  inner {{ 1 + 1 }}  {% endset %}[{{ b }}]{% set t | trim %}  trimmed  {% endset %}[{{ t }}]", {}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ a }}{{ b }}", {}),
    ("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    # macros and call
    ("macro_basic", "{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }} [{{ greet() }}]", {}),
    ("macro_recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("macro_sees_globals", "{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late' %}{{ m() }}", {}),
    ("macro_result_set", "{% macro m() %}  x  {% endmacro %}{% set r = m() %}[{{ r|trim }}] {{ r|length }}", {}),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold{% endcall %}", {}),
    ("call_block_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(v) each([1,2]) %}<{{ v }}>{% endcall %}", {}),
    ("filter_block", "{% filter upper %}shout {{ 'it' }}{% endfilter %}", {}),
    ("generation_block", "{% generation %}gen {{ 1 }}{% endgeneration %}!", {}),
    # tests
    ("tests_types", "{{ x is string }}{{ x is number }}{{ 1 is number }}{{ true is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is boolean }}{{ none is none }}{{ d is mapping }}{{ l is iterable }}{{ s is iterable }}{{ d is sequence }}{{ missing is iterable }}", {"x": "s", "d": {}, "l": [], "s": "abc"}),
    ("tests_defined", "{{ x is defined }}{{ y is defined }}{{ y is undefined }}{{ x is not none }}{{ n is none }}", {"x": 1, "n": None}),
    ("tests_values", "{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 2 is eq 2 }}{{ 2 is equalto 3 }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 3 is gt 2 }}{{ 3 is le 2 }}{{ 2 is in [1, 2] }}", {}),
    ("not_is_precedence", "{{ not x is defined }} {{ x is defined and y is not defined }}", {"x": 1}),
    # filters
    ("f_length_count", "{{ 'héllo'|length }} {{ [1,2]|count }} {{ {'a':1}|length }} {{ missing|length }}", {}),
    ("f_trim", "[{{ '  a b \\n'|trim }}][{{ 'xxaxx'|trim('x') }}]", {}),
    ("f_case", "{{ 'hELLo wORLD'|lower }} {{ 'abc'|upper }} {{ 'hello world-foo (bar)'|title }} {{ 'hELLO'|capitalize }} {{ 'éa'|upper }}", {}),
    ("f_replace", "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '-') }}", {}),
    ("f_join", "{{ [1, 'a', none]|join }} {{ ['a','b']|join(', ') }} {{ users|join(',', attribute='name') }}", {"users": [{"name": "x"}, {"name": "y"}]}),
    ("f_default", "{{ missing|default('dflt') }} {{ ''|default('e') }} {{ ''|default('e', true) }} {{ none|d('n') }} {{ 0|d(5, boolean=true) }}", {}),
    ("f_first_last", "{{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ 'abc'|first }} {{ 'abc'|last }}", {}),
    ("f_list_items", "{{ 'ab'|list }} {{ {'a': 1, 'b': 2}|items|list }} {{ d|dictsort }} {{ d|dictsort(by='value', reverse=true) }}", {"d": {"b": 1, "a": 2, "C": 0}}),
    ("f_select", "{{ [1,2,3,4]|select('odd')|list }} {{ [1,2,3,4]|reject('odd')|list }} {{ [0,1,'',none,'a']|select|list }} {{ [1,2,3]|select('gt', 1)|list }}", {}),
    ("f_selectattr", "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ ms|rejectattr('role', 'eq', 'user')|list|length }} {{ ms|selectattr('tool')|list|length }}", {"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool": 1}, {"role": "user", "content": "c"}]}),
    ("f_map", "{{ ['a','B']|map('upper')|list }} {{ [1.5, 2.7]|map('int')|list }} {{ ms|map(attribute='x', default='d')|list }}", {"ms": [{"x": 1}, {}]}),
    ("f_unique", "{{ ['a', 'A', 'b', 'a']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }} {{ [1, 1.0, 2]|unique|list }}", {}),
    ("f_numbers", "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ '0x1A'|int(0, 16) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 'x'|float }} {{ -3|abs }} {{ -2.5|abs }} {{ 10|float }}", {}),
    ("f_escape_safe", "{{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|escape }} {{ '<i>'|safe }}", {}),
    ("f_reverse_sort", "{{ 'abc'|reverse }} {{ [1,3,2]|reverse|list }} {{ [3,1,2]|sort }} {{ ['b','A','c']|sort }} {{ ['b','A','c']|sort(case_sensitive=true) }} {{ [3,1,2]|sort(reverse=true) }} {{ ms|sort(attribute='n')|map(attribute='n')|list }}", {"ms": [{"n": 2}, {"n": 1}]}),
    ("f_misc", "{{ 'one two  three'|wordcount }} {{ 'ab'|center(6) }}|{{ 'abc'|center(6) }}| {{ [1,2,3]|sum }} {{ [1,3,2]|max }} {{ [3,1,2]|min }} {{ {'a': 1}|attr('a') }}", {}),
    ("f_indent", "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent('> ', blank=true) }}", {}),
    ("f_string", "{{ 1|string ~ 2 }} {{ [1]|string }} {{ none|string }}", {}),
    ("f_tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\"\\n\\u0001'|tojson }}|{{ 'é'|tojson(ensure_ascii=true) }}|{{ d|tojson(sort_keys=true) }}|{{ [1.0, 1e20, -0.0, 2]|tojson }}|{{ []|tojson(indent=2) }}|{{ {}|tojson }}|{{ d|tojson(separators=[',', ':']) }}", {"d": {"b": [1, {"c": None}], "a": True, "u": "ü🙂"}}),
    ("f_tojson_indent_str", "{{ d|tojson(indent='\\t') }}|{{ d|tojson(indent=0) }}", {"d": {"k": [1, 2]}}),
    # string methods
    ("m_startswith", "{{ s.startswith('ab') }}{{ s.endswith('yz') }}{{ s.startswith(('x', 'a')) }}{{ s.endswith('b', 0, 2) }}", {"s": "abcxyz"}),
    ("m_strip", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ '\\n\\nx\\n'.lstrip('\\n') }}][{{ 'xxhixx'.strip('x') }}][{{ 'ab'.rstrip('xyb') }}]", {"s": "  pad \t\n"}),
    ("m_split", "{{ 'a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }} {{ ' a b '.rsplit() }}", {}),
    ("m_misc", "{{ 'hello world'.title() }} {{ \"they're bill's\".title() }} {{ 'Hi'.upper() }}{{ 'Hi'.lower() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abc'.find('z') }} {{ 'aaa'.count('a') }} {{ 'a-b'.replace('-', '+') }} {{ ', '.join(['x', 'y']) }} {{ 'abc'.capitalize() }}", {}),
    ("m_format", "{{ '{} and {}'.format('a', 1) }} {{ '{0}{0}'.format('x') }} {{ '{name}!'.format(name='n') }} {{ '{{literal}}'.format() }}", {}),
    ("m_is", "{{ '123'.isdigit() }}{{ 'abc'.isalpha() }}{{ 'a1'.isalnum() }}{{ '  '.isspace() }}{{ 'ab'.islower() }}{{ 'AB'.isupper() }}", {}),
    ("m_list", "{{ [1,2,1].count(1) }} {{ [1,2,3].index(2) }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }}", {}),
    ("strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M %d %b %Y') }}", {}),
    # errors
    ("err_raise", "{{ raise_exception('custom failure') }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_undefined_arith", "{{ missing + 1 }}", {}),
    ("err_type_add", "{{ 'a' + 1 }}", {}),
    ("err_iterate_none", "{% for x in none %}{% endfor %}", {}),
    ("err_tojson_undefined", "{{ missing|tojson }}", {}),
    ("err_macro_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
    ("err_div_zero", "{{ 1 / 0 }}", {}),
    ("err_unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("err_syntax_unclosed", "{% if true %}no end", {}),
    ("err_syntax_bad_expr", "{{ 1 + }}", {}),
    ("err_syntax_unknown_tag", "{% frobnicate %}", {}),
]


def main():
    env_info = {"jinja2": jinja2.__version__, "transformers": transformers.__version__, "fixed_time": FIXED_TIME}
    families = sorted(d for d in os.listdir(DATA) if os.path.isdir(os.path.join(DATA, d)))
    all_cases = cases()
    for fam in families:
        fdir = os.path.join(DATA, fam)
        template, bos, eos = load_family(fdir)
        rows = []
        for c in all_cases:
            r = dict(c)
            r.update(outcome(lambda: render(template, c["messages"], c["tools"], c["add_generation_prompt"], bos, eos, c["extra"])))
            rows.append(r)
        doc = {"family": fam, "generated_by": env_info, "cases": rows}
        with open(os.path.join(fdir, "cases.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n_err = sum(1 for r in rows if "error" in r)
        print(f"{fam}: {len(rows)} cases ({n_err} errors)", file=sys.stderr)

    compiled_env = ctu._compile_jinja_template  # transformers' environment, as above
    rows = []
    for name, src, variables in CONSTRUCTS:
        def run(src=src, variables=variables):
            return compiled_env(src).render(**variables)

        r = {"name": name, "template": src, "vars": variables}
        r.update(outcome(run))
        rows.append(r)
    with open(os.path.join(DATA, "constructs.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump({"generated_by": env_info, "cases": rows}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"constructs: {len(rows)} ({sum(1 for r in rows if 'error' in r)} errors)", file=sys.stderr)


if __name__ == "__main__":
    main()
