/* test_jinja: datasets/jinja against jinja2 as transformers' apply_chat_template runs it.
 * tests/fixtures/templates/jinja_expected.json (tests/reference/make_jinja_fixtures.py) holds
 * conversations rendered with real model templates (tests/fixtures/templates/jinja/, PROVENANCE.md)
 * and small snippets, one construct each; every case must match byte for byte, or fail with the
 * same raise_exception message. Then the error cases: unsupported constructs name themselves and
 * their line/column. */
#include <cjson/cJSON.h>

#include "datasets/jinja.h"
#include "datasets/template.h"
#include "tests/test.h"

static char *render(const char *src, const char *vars_json, ft_error *e, int *rc) {
    jinja_tmpl *t = NULL;
    char *out = NULL;
    *rc = jinja_parse(src, strlen(src), "test template", &t, e);
    if (*rc) return NULL;
    cJSON *v = cJSON_Parse(vars_json ? vars_json : "{}");
    *rc = jinja_render(t, v, &out, NULL, e);
    cJSON_Delete(v);
    jinja_free(t);
    return out;
}

static void show_diff(const char *name, const char *got, const char *want) {
    size_t i = 0;
    while (got[i] && got[i] == want[i]) i++;
    fprintf(stderr, "%s: differs at byte %zu\n  got:  %.80s\n  want: %.80s\n", name, i, got + (i > 20 ? i - 20 : 0),
            want + (i > 20 ? i - 20 : 0));
}

static void fixtures(void) {
    char path[1024];
    char *text;
    size_t len;
    ft_error e = {0};
    int rc = ft_read_file(t_src("tests/fixtures/templates/jinja_expected.json", path, sizeof path), &text, &len, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int n = 0, templates = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        const char *tf = cJSON_GetStringValue(cJSON_GetObjectItem(c, "template"));
        const char *src = cJSON_GetStringValue(cJSON_GetObjectItem(c, "source"));
        const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(c, "expected"));
        const char *werr = cJSON_GetStringValue(cJSON_GetObjectItem(c, "error"));
        char *tsrc = NULL;
        size_t tlen = 0;
        char label[512];
        snprintf(label, sizeof label, "%s / %s", tf ? tf : "snippet", name);
        if (tf) {
            char rel[512];
            snprintf(rel, sizeof rel, "tests/fixtures/templates/jinja/%s", tf);
            rc = ft_read_file(t_src(rel, path, sizeof path), &tsrc, &tlen, &e);
            CHECK_MSG(rc == 0, "%s", e.msg);
            if (rc) continue;
            templates++;
        } else {
            tsrc = ft_xstrdup(src);
            tlen = strlen(src);
        }
        jinja_tmpl *t = NULL;
        rc = jinja_parse(tsrc, tlen, label, &t, &e);
        free(tsrc);
        CHECK_MSG(rc == 0, "%s: %s", label, e.msg);
        if (rc) continue;
        char *out = NULL;
        size_t olen = 0;
        rc = jinja_render(t, cJSON_GetObjectItem(c, "vars"), &out, &olen, &e);
        if (werr) {
            CHECK_MSG(rc != 0, "%s: rendered although jinja2 raised '%s'", label, werr);
            if (rc) CHECK_MSG(strstr(e.msg, werr) != NULL, "%s: error '%s' does not carry '%s'", label, e.msg, werr);
        } else {
            CHECK_MSG(rc == 0, "%s: %s", label, e.msg);
            if (!rc) {
                int same = want && olen == strlen(want) && !memcmp(out, want, olen);
                CHECK_MSG(same, "%s", label);
                if (!same && want) show_diff(label, out, want);
            }
        }
        free(out);
        jinja_free(t);
        n++;
    }
    cJSON_Delete(root);
    CHECK_MSG(n >= 60 && templates >= 50, "only %d cases (%d with model templates)", n, templates);
}

static void expect_error(const char *src, const char *vars, const char *needle1, const char *needle2) {
    ft_error e = {0};
    int rc;
    char *out = render(src, vars, &e, &rc);
    CHECK_MSG(rc == FT_EINPUT, "'%s' did not fail (output '%s')", src, out ? out : "");
    if (rc) {
        CHECK_MSG(strstr(e.msg, needle1) != NULL, "'%s': error '%s' lacks '%s'", src, e.msg, needle1);
        if (needle2) CHECK_MSG(strstr(e.msg, needle2) != NULL, "'%s': error '%s' lacks '%s'", src, e.msg, needle2);
    }
    free(out);
}

static void errors(void) {
    expect_error("ok\n{% macro m() %}x{% endmacro %}", NULL, "unsupported construct", "line 2 column 1:");
    expect_error("{% include 'x' %}", NULL, "include", "line 1");
    expect_error("{{ x | frobnicate }}", "{\"x\": 1}", "unsupported filter: frobnicate", "column");
    expect_error("{{ x is prime }}", "{\"x\": 1}", "unsupported test: is prime", NULL);
    expect_error("{{ 'a'.zfill(3) }}", NULL, "unsupported method", "zfill");
    expect_error("{{ raise_exception('Roles must alternate') }}", NULL, "template raised an error: Roles must alternate",
                 NULL);
    expect_error("{% if x %}never closed", NULL, "endif", NULL);
    expect_error("{{ x.y.z }}", "{}", "'x' is undefined", NULL);
    expect_error("{{ 'a' + 1 }}", NULL, "unsupported operand", NULL);
    expect_error("{{ 'unterminated }}", NULL, "unclosed '{{' tag", NULL);
    expect_error("{{ 'a' ~ 'b }}", NULL, "unclosed", NULL);
    expect_error("{{ 1 + }}", NULL, "expected an expression", NULL);
    expect_error("{% endfor %}", NULL, "unexpected", "endfor");
    expect_error("{% set ns = 1 %}{% set ns.a = 2 %}", NULL, "namespace", NULL);
    /* a plain render still works after errors */
    ft_error e = {0};
    int rc;
    char *out = render("{{ a }}-{{ b|default('z') }}", "{\"a\": [1, \"x\"]}", &e, &rc);
    CHECK(rc == 0 && out && strcmp(out, "[1, 'x']-z") == 0);
    free(out);
}

static tmpl *load_model_template(const char *file) {
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "tests/fixtures/templates/jinja/%s", file);
    char *text = NULL;
    size_t len;
    ft_error e = {0};
    tmpl *t = NULL;
    int rc = ft_read_file(t_src(rel, path, sizeof path), &text, &len, &e);
    if (!rc) rc = tmpl_from_jinja(text, file, &t, &e);
    CHECK_MSG(rc == 0, "%s: %s", file, e.msg);
    free(text);
    return t;
}

/* The trained text of a render: its trained segments joined with '|'. */
static void trained_text(const tmpl_text *r, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < r->n_segs; i++)
        if (r->segs[i].turn >= 0)
            k += (size_t)snprintf(buf + k, n - k, "%s%.*s", k ? "|" : "", (int)r->segs[i].len, r->text + r->segs[i].start);
}

static void masks(void) {
    ds_conv c = {0};
    snprintf(c.where, sizeof c.where, "conv");
    ds_conv_add(&c, DS_SYSTEM, "Be brief.");
    ds_conv_add(&c, DS_USER, "Hi");
    ds_conv_add(&c, DS_ASSISTANT, "Hello!");
    ds_conv_add(&c, DS_USER, "Bye");
    ds_conv_add(&c, DS_ASSISTANT, "Bye.");
    ft_error e = {0};
    char buf[2048];
    /* SmolLM2's own template with a system message renders and masks exactly as the built-in chatml */
    tmpl *j = load_model_template("HuggingFaceTB-SmolLM2-135M-Instruct.jinja"), *b = NULL;
    CHECK(tmpl_builtin("chatml", &b, &e) == 0);
    if (j && b) {
        tmpl_text rj, rb;
        CHECK(tmpl_render(j, &c, "<|im_start|>", "<|im_end|>", 0, &rj, &e) == 0);
        CHECK(tmpl_render(b, &c, "<|im_start|>", "<|im_end|>", 0, &rb, &e) == 0);
        CHECK(rj.len == rb.len && strcmp(rj.text, rb.text) == 0);
        CHECK(rj.n_turns == 2 && rj.n_segs == rb.n_segs);
        for (int i = 0; i < rj.n_segs && i < rb.n_segs; i++)
            CHECK(rj.segs[i].start == rb.segs[i].start && rj.segs[i].len == rb.segs[i].len && rj.segs[i].turn == rb.segs[i].turn);
        trained_text(&rj, buf, sizeof buf);
        CHECK_MSG(strcmp(buf, "Hello!<|im_end|>|Bye.<|im_end|>") == 0, "%s", buf);
        tmpl_text_free(&rj);
        tmpl_text_free(&rb);
        char eot[64];
        CHECK(tmpl_end_of_turn(j, eot, sizeof eot) && strcmp(eot, "<|im_end|>") == 0);
        CHECK(tmpl_is_jinja(j) && !tmpl_is_jinja(b));
        char *src = tmpl_jinja(j);
        CHECK(src && strstr(src, "SmolLM") != NULL);
        free(src);
    }
    tmpl_free(j);
    tmpl_free(b);
    /* the trained spans of other families; each one's end-of-turn marker */
    static const struct {
        const char *file, *bos, *eos, *trained, *eot;
    } T[] = {
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", "Hello!<|eot_id|>|Bye.<|eot_id|>", NULL},
        {"google-gemma-2-2b-it.jinja", "<bos>", "<eos>", NULL, "<end_of_turn>"},
        {"microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>",
         "Hello!<|end|>|Bye.<|end|>\n<|endoftext|>", "<|end|>"},
        /* Mistral puts the system text into the last user turn: earlier renders are not prefixes */
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>", "!rewrites earlier turns", ""},
        {"h2oai-h2o-danube3-500m-chat.jinja", "<s>", "</s>", "Hello!</s>|Bye.</s>", ""},
        {"Qwen-Qwen2.5-7B-Instruct.jinja", NULL, "<|im_end|>", "Hello!<|im_end|>|Bye.<|im_end|>", "<|im_end|>"},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        tmpl *t = load_model_template(T[i].file);
        if (!t) continue;
        if (T[i].trained && T[i].trained[0] == '!') {
            tmpl_text r;
            CHECK(tmpl_render(t, &c, T[i].bos, T[i].eos, 0, &r, &e) == FT_EINPUT);
            CHECK_MSG(strstr(e.msg, T[i].trained + 1) != NULL, "%s", e.msg);
            /* without a system message it nests */
            ds_conv c2 = {0};
            snprintf(c2.where, sizeof c2.where, "conv2");
            for (int k = 1; k < c.n; k++) ds_conv_add(&c2, c.msgs[k].role, c.msgs[k].content);
            int rc = tmpl_render(t, &c2, T[i].bos, T[i].eos, 0, &r, &e);
            CHECK_MSG(rc == 0, "%s: %s", T[i].file, e.msg);
            if (!rc) {
                trained_text(&r, buf, sizeof buf);
                CHECK_MSG(strcmp(buf, "Hello!</s>|Bye.</s>") == 0, "%s: trained '%s'", T[i].file, buf);
                tmpl_text_free(&r);
            }
            ds_conv_free(&c2);
        } else if (T[i].trained) {
            tmpl_text r;
            int rc = tmpl_render(t, &c, T[i].bos, T[i].eos, 0, &r, &e);
            CHECK_MSG(rc == 0, "%s: %s", T[i].file, e.msg);
            if (!rc) {
                trained_text(&r, buf, sizeof buf);
                CHECK_MSG(strcmp(buf, T[i].trained) == 0, "%s: trained '%s'", T[i].file, buf);
                tmpl_text_free(&r);
            }
        } else { /* Gemma has no system role: raise_exception surfaces */
            tmpl_text r;
            CHECK(tmpl_render(t, &c, T[i].bos, T[i].eos, 0, &r, &e) == FT_EINPUT);
            CHECK_MSG(strstr(e.msg, "System role not supported") && strstr(e.msg, "conv"), "%s", e.msg);
        }
        char eot[64] = "";
        int has = tmpl_end_of_turn(t, eot, sizeof eot);
        const char *want = T[i].eot ? T[i].eot : "<|eot_id|>";
        if (*want)
            CHECK_MSG(has && strcmp(eot, want) == 0, "%s: end of turn '%s'", T[i].file, eot);
        else
            CHECK_MSG(!has, "%s: end of turn '%s' (EOS expected)", T[i].file, eot);
        tmpl_free(t);
    }
    /* a template that rewrites earlier turns (the message count up front) cannot be masked */
    tmpl *bad = NULL;
    CHECK(tmpl_from_jinja("{{ messages|length }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", "counting", &bad, &e) == 0);
    if (bad) {
        tmpl_text r;
        CHECK(tmpl_render(bad, &c, "", "", 0, &r, &e) == FT_EINPUT);
        CHECK_MSG(strstr(e.msg, "rewrites earlier turns") && strstr(e.msg, "counting"), "%s", e.msg);
        tmpl_free(bad);
    }
    /* an unsupported construct in a model's template names it and the built-in fallback */
    CHECK(tmpl_from_jinja("{% macro x() %}{% endmacro %}", "tokenizer_config.json chat_template", &bad, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "macro") && strstr(e.msg, "chatml") && strstr(e.msg, "line 1"), "%s", e.msg);
    ds_conv_free(&c);
}

int main(void) {
    fixtures();
    errors();
    masks();
    TEST_DONE();
}
