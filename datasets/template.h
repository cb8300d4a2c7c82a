/* template: chat templates -> text segments -> token ids with an exact loss mask.
 *
 * Contract: tmpl_render turns a conversation into one string made of
 * segments, each marked trained (the assistant's content and the end marker
 * closing its turn, e.g. EOS) or not (everything else). tmpl_tokenize encodes
 * the WHOLE rendered string once with tok_encode(add_special_tokens=0), so the
 * ids equal HF's tokenizer(text, add_special_tokens=False); BOS, when the
 * template has one, is part of the text ("{bos}" expands to the tokenizer's
 * BOS token, matched as a special token), so it appears exactly once. The mask
 * is then derived from each token's byte span in the text (token surface
 * strings aligned to the text): a token is trained when any of its bytes lies
 * in a trained segment. tmpl_jinja gives the equivalent HF chat_template
 * (Jinja, using bos_token / eos_token) so transformers' apply_chat_template
 * renders exactly the text we train on. Built-in names: danube, chatml,
 * llama2, llama3, mistral, zephyr, alpaca. In template strings "{bos}" and
 * "{eos}" stand for the tokenizer's BOS / EOS token text. */
#ifndef DS_TEMPLATE_H
#define DS_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/format.h"
#include "datasets/jinja.h"
#include "datasets/tokenizer/tokenizer.h"

typedef struct tmpl_spec {
    const char *begin;                     /* text at the very start ("{bos}" or "") */
    const char *system_prefix, *system_suffix; /* a system block of its own */
    int system_in_first_user;              /* llama2 / mistral: system merged into the first user turn */
    const char *merge_prefix, *merge_suffix;   /* merged = merge_prefix + system + merge_suffix + user */
    const char *user_prefix, *user_suffix;
    const char *assistant_prefix;          /* not trained */
    const char *assistant_end;             /* trained: closes an assistant turn (EOS) */
    const char *assistant_trailer;         /* not trained: after the end marker */
    const char *generation_prompt;
    int strip;                             /* trim whitespace around contents (Jinja |trim) */
} tmpl_spec;

typedef struct tmpl tmpl;

int tmpl_builtin(const char *name, tmpl **out, ft_error *e);
const char *tmpl_builtin_names(void); /* "danube, chatml, ..." */
/* Custom: prefixes/suffixes as strings (NULL = ""); copies spec. */
int tmpl_custom(const tmpl_spec *spec, const char *name, tmpl **out, ft_error *e);
/* The simple custom form of the CLI/recipes: system/user/assistant prefix+suffix,
 * generation prompt, bos flag; the assistant suffix is the trained end marker. */
int tmpl_custom_simple(const char *sys_pre, const char *sys_suf, const char *user_pre, const char *user_suf,
                       const char *asst_pre, const char *asst_suf, const char *gen_prompt, int bos, tmpl **out,
                       ft_error *e);
void tmpl_free(tmpl *t);
/* The text that ends an assistant turn when it is not EOS ("<|im_end|>" for chatml, "<|eot_id|>" for llama3),
 * surrounding whitespace trimmed, into buf; 0 when the turn ends with {eos} (or buf is too small). */
int tmpl_end_of_turn(const tmpl *t, char *buf, size_t n);
const char *tmpl_name(const tmpl *t);

typedef struct tmpl_seg {
    size_t start, len;
    int turn; /* assistant turn index (0, 1, ...) when trained, -1 when not */
} tmpl_seg;

typedef struct tmpl_text {
    char *text;
    size_t len;
    tmpl_seg *segs;
    int n_segs, n_turns; /* n_turns: assistant turns */
} tmpl_text;

/* bos / eos: token texts for "{bos}" / "{eos}" (e.g. "<s>", "</s>"). */
int tmpl_render(const tmpl *t, const ds_conv *c, const char *bos, const char *eos, int add_generation_prompt,
                tmpl_text *out, ft_error *e);
void tmpl_text_free(tmpl_text *r);

typedef struct tmpl_tokens {
    int32_t *ids;
    int32_t *turn; /* per token: assistant turn it trains, -1 = not trained */
    size_t n;
} tmpl_tokens;

int tmpl_tokenize(const tmpl_text *r, const ft_tokenizer *tok, tmpl_tokens *out, ft_error *e);
void tmpl_tokens_free(tmpl_tokens *t);
/* Render + tokenize with the tokenizer's own BOS/EOS texts. */
int tmpl_encode(const tmpl *t, const ds_conv *c, const ft_tokenizer *tok, int add_generation_prompt,
                tmpl_tokens *out, ft_error *e);

/* The equivalent HF chat_template (malloc'd); a Jinja template's own text. */
char *tmpl_jinja(const tmpl *t);

/* A Hugging Face chat_template (Jinja text) rendered by datasets/jinja, exactly as
 * apply_chat_template renders it; name is what errors call it (e.g. the file). The loss mask is
 * found the way TRL does without {% generation %} markers: the first k messages rendered with the
 * generation prompt give the text before assistant turn k, the first k+1 without it where the turn
 * ends; the turn's text from there (its content and end marker, not the whitespace after) is
 * trained. When those renders are not prefixes of the whole conversation (the template rewrites
 * earlier turns) tmpl_render fails with an error saying so rather than mask wrongly. */
int tmpl_from_jinja(const char *text, const char *name, tmpl **out, ft_error *e);
int tmpl_is_jinja(const tmpl *t);
/* "auto": the first of dirs (NULL entries skipped) with a chat template of its own
 * (tokenizer_config.json "chat_template", a string or the "default" of a list; else
 * chat_template.jinja); *out = NULL (and FT_OK) when none has one. */
int tmpl_auto(const char *const *dirs, int n, tmpl **out, ft_error *e);
/* A --template / recipe `template` value: a built-in name; "auto" (or NULL): tmpl_auto over dirs, and
 * when none has a template the built-in `fallback` (NULL: *out stays NULL); "none": *out = NULL. */
int tmpl_resolve(const char *name, const char *const *dirs, int n, const char *fallback, tmpl **out, ft_error *e);

#endif
