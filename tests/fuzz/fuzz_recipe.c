/* libFuzzer: recipes. The input up to the first NUL byte is a recipe (JSON with // and block comments);
 * each line after it is a key=value override, applied in order as `finetune sft recipe.json k=v ...` does.
 * An accepted recipe is then read by every typed getter on the keys it names and on the shared training
 * keys (job_read_common: the whole set of checks a real run applies), and must give a resolved dump that
 * is valid JSON; comment stripping alone must keep the text's length and line count. Never crashes, never
 * leaks, never aborts on input. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/train/job.h"
#include "finetune/train/recipe.h"

static void read_all_types(rcp *r, const char *key) {
    ft_error e;
    int i;
    int64_t l;
    double d;
    const char *s;
    char *p = NULL, *j = NULL, **pl = NULL;
    const char **sl = NULL;
    size_t n = 0;
    (void)rcp_has(r, key);
    (void)rcp_get_int(r, key, 1, &i, &e);
    (void)rcp_get_i64(r, key, 1, &l, &e);
    (void)rcp_get_float(r, key, 1.0, &d, &e);
    (void)rcp_get_bool(r, key, 0, &i, &e);
    (void)rcp_get_string(r, key, NULL, &s, &e);
    static const char *const DEF[] = {"a"};
    if (rcp_get_string_list(r, key, DEF, 1, &sl, &n, &e) == 0) free(sl);
    if (rcp_get_path(r, key, NULL, &p, &e) == 0) free(p);
    if (rcp_get_path_list(r, key, &pl, &n, &e) == 0) rcp_free_list(pl, n);
    if (rcp_get_json(r, key, &j, &e) == 0) free(j);
}

/* The top-level keys of the recipe text, as a real run's getters would meet them. */
static void read_named_keys(rcp *r, const char *text) {
    char *t = ft_xstrdup(text);
    ft_error e;
    if (rcp_strip_comments(t, "fuzz", &e) == 0) {
        cJSON *root = cJSON_Parse(t);
        if (cJSON_IsObject(root))
            for (const cJSON *c = root->child; c; c = c->next) {
                if (!c->string) continue;
                read_all_types(r, c->string);
                if (cJSON_IsObject(c))
                    for (const cJSON *k = c->child; k; k = k->next) {
                        if (!k->string) continue;
                        char dotted[512];
                        snprintf(dotted, sizeof dotted, "%s.%s", c->string, k->string);
                        read_all_types(r, dotted);
                    }
            }
        cJSON_Delete(root);
    }
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = ft_xmalloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t tlen = strlen(buf); /* the recipe: up to the first NUL */
    ft_error e;

    /* comment stripping: same length, newlines kept where they were */
    char *stripped = ft_xstrdup(buf);
    if (rcp_strip_comments(stripped, "fuzz", &e) == 0) {
        if (strlen(stripped) != tlen) abort();
        for (size_t i = 0; i < tlen; i++)
            if ((buf[i] == '\n') != (stripped[i] == '\n')) abort();
    }
    free(stripped);

    rcp *r = NULL;
    if (rcp_parse(buf, "fuzz.json", "/tmp", &r, &e) != 0) r = rcp_new();
    /* the overrides: the lines after the NUL */
    for (size_t i = tlen + 1; i < size;) {
        char *line = buf + i, *nl = memchr(line, '\n', size - i);
        size_t end = nl ? (size_t)(nl - buf) : size;
        buf[end] = 0;
        if (strlen(line) == end - i && strchr(line, '=')) {
            const char *eq = strchr(line, '=');
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
            if (rcp_override(r, line, &e) == 0) read_all_types(r, key);
        }
        i = end + 1;
    }
    read_named_keys(r, buf);

    ft_job j;
    if (job_read_common(r, &j, 0, &e) == 0) (void)rcp_check_unused(r, &e);
    job_free(&j);

    char *dump = rcp_dump_resolved(r);
    cJSON *back = cJSON_Parse(dump);
    if (!back) abort(); /* the resolved recipe written to every run dir must be JSON */
    cJSON_Delete(back);
    free(dump);
    (void)rcp_name(r);
    rcp_free(r);
    free(buf);
    return 0;
}
