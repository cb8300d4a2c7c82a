/* jinja: a Jinja interpreter for Hugging Face chat templates.
 *
 * Contract: jinja_parse compiles a template text the way transformers'
 * apply_chat_template does (jinja2 ImmutableSandboxedEnvironment with
 * trim_blocks=True, lstrip_blocks=True; {%- -%} / {{- -}} whitespace control;
 * {# comments #}); jinja_render renders it with the variables of a cJSON
 * object (messages, add_generation_prompt, bos_token, eos_token, tools, ...),
 * byte for byte what jinja2 prints. The subset covered is what current models'
 * chat templates use: {{ }}, {% for (with `if` filter, `a, b` unpacking,
 * loop.index/index0/first/last/length/revindex/previtem/nextitem) / if / elif /
 * else / set (also ns.attr and {% set %}..{% endset %}) / generation %},
 * namespace(), range(), raise_exception(msg), strftime_now(fmt); literals,
 * lists, dicts, `~ + - * / // % **`, comparisons, `in`, `not/and/or`,
 * `x if c else y`, subscripts and slices; filters trim, length/count, tojson
 * (as transformers defines it: json.dumps, ensure_ascii=False, indent), upper,
 * lower, capitalize, title, default/d, first, last, join, replace, string,
 * list, items, selectattr/rejectattr, select/reject, map(attribute=), reverse,
 * int, float, abs, safe; tests defined/undefined/none/string/number/integer/
 * float/boolean/mapping/iterable/sequence/true/false/equalto/eq/ne/even/odd/
 * divisibleby/lower/upper/in; str methods startswith, endswith, strip, lstrip,
 * rstrip, split, title, upper, lower, capitalize, replace, find, count, join;
 * dict methods items, keys, values, get.
 *
 * Anything else (macros, includes, unknown filters/tests/methods, ...) is an
 * FT_EINPUT error naming the construct with the template's line and column; so
 * is raise_exception, whose message is surfaced as "template raised an error:
 * MSG". Undefined follows jinja2's default: prints as "", is false, has length
 * 0, and an attribute of it is an error. */
#ifndef DS_JINJA_H
#define DS_JINJA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "finetune/base/util.h"

typedef struct jinja_tmpl jinja_tmpl;

/* name: what errors call the template (e.g. "tokenizer_config.json chat_template"). */
int jinja_parse(const char *src, size_t len, const char *name, jinja_tmpl **out, ft_error *e);
void jinja_free(jinja_tmpl *t);
/* vars: a cJSON object; its members are the template's globals. *out is malloc'd, NUL-terminated. */
int jinja_render(const jinja_tmpl *t, const cJSON *vars, char **out, size_t *out_len, ft_error *e);

#endif
