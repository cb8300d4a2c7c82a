#!/usr/bin/env python3
"""Render chat conversations with the committed model templates exactly as transformers'
apply_chat_template does, into tests/fixtures/templates/jinja_expected.json (read by
tests/unit/test_jinja.c, which compares datasets/jinja's output byte for byte).

transformers compiles a chat template with
  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
  filters["tojson"] = json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)
  globals["raise_exception"] raises TemplateError(message); globals["strftime_now"]
and renders it with messages=, tools=, documents=, add_generation_prompt=, the tokenizer's special
tokens (bos_token, eos_token, ...) and any extra keyword arguments. This script does the same with
jinja2 alone (no torch, no tokenizer download).

  python3 -m venv /tmp/venv-jinja && /tmp/venv-jinja/bin/pip install jinja2
  /tmp/venv-jinja/bin/python tests/reference/make_jinja_fixtures.py
"""
import json
import os
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TDIR = os.path.join(HERE, "..", "fixtures", "templates", "jinja")
OUT = os.path.join(HERE, "..", "fixtures", "templates", "jinja_expected.json")


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def compile_template(text):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(text)


# file -> (special tokens, supports a system message, supports tools, extra kwargs)
TEMPLATES = {
    "HuggingFaceTB-SmolLM2-135M-Instruct.jinja": ({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, True, False, {}),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ({"bos_token": None, "eos_token": "<|im_end|>"}, True, True, {}),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True, True,
                                               {"date_string": "26 Jul 2024"}),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True, True,
                                               {"date_string": "26 Jul 2024"}),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ({"bos_token": "<s>", "eos_token": "</s>"}, True, True, {}),
    "google-gemma-2-2b-it.jinja": ({"bos_token": "<bos>", "eos_token": "<eos>"}, False, False, {}),
    "microsoft-Phi-3.5-mini-instruct.jinja": ({"bos_token": "<s>", "eos_token": "<|endoftext|>"}, True, False, {}),
    "h2oai-h2o-danube3-500m-chat.jinja": ({"bos_token": "<s>", "eos_token": "</s>"}, True, False, {}),
}

SYS = {"role": "system", "content": "You are a terse assistant. Answer in one line."}
U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "Paris."}
U2 = {"role": "user", "content": "  And of Japan? Say it with ünïcödé — and \"quotes\".\n"}
A2 = {"role": "assistant", "content": "Tokyo 東京.\n\nThat's it."}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
TOOL_CONV = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
    {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "assistant", "content": "It is 21.5 °C and clear in Paris."},
]

CONVS = [
    ("user", [U1], True),
    ("user_assistant", [U1, A1], False),
    ("multi_turn", [U1, A1, U2, A2], False),
    ("multi_turn_prompt", [U1, A1, U2], True),
]
SYS_CONVS = [
    ("system_user", [SYS, U1], True),
    ("system_multi_turn", [SYS, U1, A1, U2, A2], False),
    ("system_multi_turn_gen", [SYS, U1, A1, U2, A2], True),
]


# Small templates for the constructs one at a time (whitespace rules, filters, tests, loops).
SNIPPETS = [
    ("trim_lstrip", "<a>\n  {% if x %}\n    yes\n  {% endif %}\n</a>\n{# c #}\nend", {"x": True}),
    ("minus", "a  {%- if x -%}  b  {%- endif -%}  c {{- ' d ' -}} e", {"x": True}),
    ("plus", "  {%+ if x %}k{% endif %}|", {"x": True}),
    ("loop", "{% for m in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}{{ 'F' if loop.first }}"
             "{{ 'L' if loop.last }}{{ loop.revindex }};{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("loop_filter", "{% for m in xs if m != 'b' %}{{ loop.index }}{{ m }}{{ loop.length }} {% endfor %}", {"xs": ["a", "b", "c"]}),
    ("loop_else", "{% for m in xs %}x{% else %}empty{% endfor %}", {"xs": []}),
    ("scope", "{% set a = 1 %}{% for m in xs %}{% set a = a + 1 %}{{ a }}{% endfor %}{{ a }}", {"xs": [1, 2]}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for m in xs %}{% set ns.n = ns.n + m %}{% endfor %}{{ ns.n }}", {"xs": [1, 2, 3]}),
    ("filters", "{{ ' Ab c '|trim }}|{{ 'ab'|upper }}|{{ 'AB'|lower }}|{{ xs|length }}|{{ xs|first }}|{{ xs|last }}|"
                "{{ xs|join(', ') }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 12|string }}|{{ u|default('dflt') }}|"
                "{{ 'hello world'|title }}|{{ 'hello'|capitalize }}|{{ xs|reverse|list }}|{{ '7'|int + 1 }}", {"xs": ["x", "y", "z"]}),
    ("tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\n\"'|tojson }}|{{ [1, 2.5, none, true]|tojson }}|{{ {}|tojson }}",
     {"d": {"b": [1, {"c": "x"}], "a": None, "f": 0.1}}),
    ("tests", "{{ u is defined }}{{ x is defined }}{{ n is none }}{{ s is string }}{{ x is number }}{{ d is mapping }}"
              "{{ xs is iterable }}{{ x is not none }}{{ 4 is even }}{{ 3 is odd }}{{ 'a' in s }}{{ 'q' not in s }}"
              "{{ 'k' in d }}{{ 2 in xs }}", {"x": 3, "n": None, "s": "abc", "d": {"k": 1}, "xs": [1, 2]}),
    ("logic", "{{ not x and y or z }}|{{ x or 'fallback' }}|{{ 1 < 2 <= 2 }}|{{ 3 // 2 }}{{ -7 // 2 }}{{ 7 % 3 }}{{ -7 % 3 }}"
              "{{ 7 / 2 }}{{ 2 ** 3 }}|{{ 'a' ~ 1 ~ none }}|{{ 'ab' * 2 }}|{{ (1, 2)|length }}", {"x": 0, "y": 1, "z": 2}),
    ("strings", "{{ s[1:3] }}|{{ s[-2:] }}|{{ s[::-1] }}|{{ s[0] }}|{{ s.startswith('ñb') }}|{{ s.endswith('e') }}|"
                "{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|"
                "{{ t.upper() }}|{{ 'ab cd'.title() }}|{{ 'aXa'.replace('a', 'b') }}|{{ s.find('c') }}|{{ '-'.join(['a', 'b']) }}",
     {"s": "ñbcde", "t": "abc"}),
    ("tuples", "{{ (1,) }}{{ ('a', 2) }}{% for a, b in [(1, 2), [3, 4]] %}{{ a + b }}{% endfor %}", {}),
    ("trailing_newline", "x{{ y }}\n", {"y": 1}),
    ("dicts", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}|{{ d.get('a') }}"
              "{{ d.get('z', 'none') }}|{{ d.keys()|list }}|{{ d|items|list }}|{{ d }}|{{ [d, 'it''s', none, 1.0] }}",
     {"d": {"a": 1, "b": "two"}}),
    ("select", "{{ ms|selectattr('role', 'equalto', 'user')|list|length }}|{{ ms|rejectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}"
               "|{{ ms|selectattr('tool')|list|length }}|{{ [0, 1, '', 'a']|select|list }}",
     {"ms": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "tool": True},
             {"role": "user", "content": "u2"}]}),
    ("set_block", "{% set x %}in {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("cond_expr", "{{ 'yes' if x else 'no' }}{{ 'y2' if not x }}|{% if x %}a{% elif y %}b{% else %}c{% endif %}", {"x": False, "y": True}),
    ("numbers", "{{ 1.5 + 1 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 10 / 4 }}|{{ 3.0 }}|{{ -x }}", {"x": 2.25}),
    ("crlf_text", "a\r\n{% if true %}\r\nb{% endif %}\r\n", {}),
]


def main():
    cases = []
    for name, text, variables in SNIPPETS:
        case = {"name": "snippet_" + name, "source": text, "vars": variables}
        try:
            case["expected"] = compile_template(text).render(**variables)
        except jinja2.exceptions.TemplateError as err:
            case["error"] = str(err)
        cases.append(case)
    for fname, (special, has_sys, has_tools, extra) in TEMPLATES.items():
        with open(os.path.join(TDIR, fname), encoding="utf-8") as f:
            text = f.read()
        tmpl = compile_template(text)
        convs = list(CONVS) + (SYS_CONVS if has_sys else [])
        runs = [(name, msgs, gen, None) for name, msgs, gen in convs]
        if has_tools:
            runs.append(("tools", TOOL_CONV, False, [WEATHER]))
            runs.append(("tools_gen", TOOL_CONV[:3], True, [WEATHER]))
        if not has_sys:
            runs.append(("system_rejected", [SYS, U1], True, None))
        for name, msgs, gen, tools in runs:
            variables = {"messages": msgs, "tools": tools, "documents": None, "add_generation_prompt": gen}
            variables.update(special)
            variables.update(extra)
            case = {"template": fname, "name": name, "vars": variables}
            try:
                case["expected"] = tmpl.render(**variables)
            except jinja2.exceptions.TemplateError as err:
                case["error"] = str(err)
            cases.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/reference/make_jinja_fixtures.py (jinja2 %s, as transformers' apply_chat_template)"
                   % jinja2.__version__, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), os.path.relpath(OUT)))


if __name__ == "__main__":
    main()
