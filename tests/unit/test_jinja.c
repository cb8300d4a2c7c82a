/* test_jinja: datasets/jinja against jinja2 as transformers' apply_chat_template runs it.
 * tests/fixtures/templates/jinja_expected.json (tests/reference/make_jinja_fixtures.py) holds
 * conversations rendered with real model templates (tests/fixtures/templates/jinja/, PROVENANCE.md)
 * and small snippets, one construct each; every case must match byte for byte, or fail with the
 * same raise_exception message. Then the error cases: unsupported constructs name themselves and
 * their line/column. */
#include <cjson/cJSON.h>

#include "datasets/jinja.h"
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

int main(void) {
    fixtures();
    errors();
    TEST_DONE();
}
