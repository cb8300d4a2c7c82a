/* Regressions found by fuzz_template.
 *
 * The loss mask's token/text alignment (tmpl_tokenize). When the tokenizer drops text: SmolLM's byte-level
 * vocabulary has no symbol for bytes such as 0x04 and 0x1d and no unk token, so (as HF's BPE) they vanish
 * from the ids, also inside a token ("\x04<" encodes as the one token "<"). Found by fuzz_template: such a
 * record stopped the run with "cannot align token" (an internal error), and the error path read the ids
 * after freeing them. And a literal U+2581 in the text with a SentencePiece tokenizer (llama-2), whose
 * tokens show it as the space it usually stands for. Now the ids are exactly tok_encode's of the rendered
 * text and the mask holds.
 *
 * The exported chat_template (tmpl_jinja) rendered by datasets/jinja equals tmpl_render's text when the
 * contents carry Unicode whitespace: jinja's |trim (and str.split()) stripped ASCII whitespace only, where
 * jinja2's Python str.strip() (and tmpl_render) also strip U+00A0, U+3000, ... */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "datasets/jinja.h"
#include "datasets/template.h"
#include "tests/test.h"

static void conv2(ds_conv *c, const char *user, const char *asst) {
    memset(c, 0, sizeof *c);
    snprintf(c->where, sizeof c->where, "test:1");
    ds_conv_add(c, DS_USER, user);
    ds_conv_add(c, DS_ASSISTANT, asst);
}

/* Encode; the ids must be the whole text's, and the trained tokens decode to `want` (NULL: some are trained). */
static void check(const tmpl *t, const ft_tokenizer *tok, const char *user, const char *asst, const char *want) {
    ds_conv c;
    conv2(&c, user, asst);
    ft_error e = {0};
    tmpl_tokens tk;
    int rc = tmpl_encode(t, &c, tok, 0, &tk, &e);
    CHECK_MSG(rc == FT_OK, "%s", e.msg);
    if (rc == FT_OK) {
        tmpl_text r;
        CHECK(tmpl_render(t, &c, tok_token_str(tok, tok_bos_id(tok)), tok_token_str(tok, tok_eos_id(tok)), 0, &r,
                          &e) == FT_OK);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(tok_encode(tok, r.text, r.len, 0, &ids, &n, &e) == FT_OK);
        CHECK(n == tk.n && memcmp(ids, tk.ids, n * sizeof *ids) == 0);
        int32_t trained[256];
        size_t k = 0;
        for (size_t i = 0; i < tk.n && k < 256; i++)
            if (tk.turn[i] == 0) trained[k++] = tk.ids[i];
        char *s = NULL;
        CHECK(k > 0 && tok_decode(tok, trained, k, 0, &s, &e) == FT_OK);
        if (want) CHECK_MSG(s && strcmp(s, want) == 0, "trained text '%s', expected '%s'", s ? s : "", want);
        free(s);
        free(ids);
        tmpl_text_free(&r);
        tmpl_tokens_free(&tk);
    }
    ds_conv_free(&c);
}

static char *jinja_text(const char *src, const cJSON *vars) {
    ft_error e = {0};
    jinja_tmpl *jt = NULL;
    char *out = NULL;
    size_t n = 0;
    int rc = jinja_parse(src, strlen(src), "test", &jt, &e);
    if (!rc) rc = jinja_render(jt, vars, &out, &n, &e);
    CHECK_MSG(rc == FT_OK, "%s", e.msg);
    jinja_free(jt);
    return out;
}

static void jinja_matches_render(const char *name, const char *user, const char *asst) {
    ft_error e = {0};
    tmpl *t = NULL;
    CHECK(tmpl_builtin(name, &t, &e) == FT_OK);
    ds_conv c;
    conv2(&c, user, asst);
    tmpl_text r;
    CHECK(tmpl_render(t, &c, "<s>", "</s>", 0, &r, &e) == FT_OK);
    char *src = tmpl_jinja(t);
    cJSON *vars = cJSON_Parse("{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": false}");
    cJSON *msgs = cJSON_AddArrayToObject(vars, "messages");
    for (int i = 0; i < c.n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", ds_role_name(c.msgs[i].role));
        cJSON_AddStringToObject(m, "content", c.msgs[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    char *out = jinja_text(src, vars);
    CHECK_MSG(out && strcmp(out, r.text) == 0, "%s: jinja '%s' vs ours '%s'", name, out ? out : "", r.text);
    free(out);
    cJSON_Delete(vars);
    free(src);
    tmpl_text_free(&r);
    ds_conv_free(&c);
    tmpl_free(t);
}

int main(void) {
    /* Python's whitespace, not just ASCII: trim, strip and split */
    jinja_matches_render("llama3", "\xC2\xA0 q \xE3\x80\x80", "\xE2\x80\x83oSTA\xC2\x85");
    jinja_matches_render("llama2", "\xE2\x80\xA8x", "y\xE2\x81\x9F");
    cJSON *v = cJSON_Parse("{\"s\": \"\u00a0a\u3000b \u2003\"}");
    char *out = jinja_text("{{ s|trim }}|{{ s.strip() }}|{{ s.split()|join(',') }}|{{ s.rstrip() }}|", v);
    CHECK_MSG(out && strcmp(out, "a\xE3\x80\x80" "b|a\xE3\x80\x80" "b|a,b|\xC2\xA0" "a\xE3\x80\x80" "b|") == 0, "%s",
              out ? out : "");
    free(out);
    cJSON_Delete(v);

    char dir[1024];
    ft_tokenizer *tok = NULL;
    ft_error e = {0};
    int rc = tok_load(t_asset("tokenizers/smollm-135m", dir, sizeof dir), &tok, &e);
    CHECK_MSG(rc == FT_OK, "%s", e.msg);
    if (rc) TEST_DONE();
    /* the premise: those bytes are not encoded at all */
    int32_t *ids = NULL;
    size_t n = 9;
    CHECK(tok_encode(tok, "\x04\x1d", 2, 0, &ids, &n, &e) == FT_OK && n == 0);
    free(ids);

    tmpl *t = NULL;
    CHECK(tmpl_builtin("chatml", &t, &e) == FT_OK);
    check(t, tok, "hi", "Ge\x1d", "Ge<|im_end|>");                      /* before a special token */
    check(t, tok, "a\x04 b", "x \x04<y> \x1d\x1d", "x <y> <|im_end|>"); /* inside tokens, in a run */
    check(t, tok, "\x04", "ok", "ok<|im_end|>");                         /* a turn of dropped text only */
    tmpl_free(t);
    CHECK(tmpl_builtin("llama3", &t, &e) == FT_OK); /* its markers are plain text for SmolLM */
    check(t, tok, "q", "A \x04<|eot_id|>", "A <|eot_id|><|eot_id|>");
    tmpl_free(t);
    tok_free(tok);

    /* SentencePiece (llama-2): a U+2581 the text itself holds looks like a replaced space in the tokens */
    rc = tok_load(t_asset("tokenizers/llama-2", dir, sizeof dir), &tok, &e);
    CHECK_MSG(rc == FT_OK, "%s", e.msg);
    if (rc) TEST_DONE();
    CHECK(tmpl_builtin("mistral", &t, &e) == FT_OK);
    check(t, tok, "split \xE2\x96\x81words", "r\xE2\x96\x81ly \xE2\x96\x81\xE2\x96\x81 x", NULL);
    check(t, tok, "\xE2\x96\x81", "\xE2\x96\x81x", NULL);
    tmpl_free(t);
    tok_free(tok);
    TEST_DONE();
}
