/* Golden test: our tokenizer gives exactly HF tokenizers' ids and decodes for the fixtures made by
 * tests/reference/make_tokenizer_fixtures.py (tests/fixtures/tokenizer/<name>.jsonl). */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "test.h"
#include "tokenizer.h"

static void show_ids(const char *label, const int32_t *v, size_t n) {
    fprintf(stderr, "    %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static int run_one(const char *name, int *ran) {
    char dir[1024], path[1024];
    t_asset("tokenizers/", dir, sizeof dir);
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    ft_tokenizer *t = NULL;
    ft_error e = {0};
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        fprintf(stderr, "%s: assets absent, skipped\n", path);
        return 0;
    }
    fclose(probe);
    *ran = 1;
    if (tok_load(dir, &t, &e)) {
        CHECK_MSG(0, "%s: load failed: %s", name, e.msg);
        return 0;
    }
    t_src("tests/fixtures/tokenizer/", path, sizeof path);
    strncat(path, name, sizeof path - strlen(path) - 1);
    strncat(path, ".jsonl", sizeof path - strlen(path) - 1);
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (!f) {
        tok_free(t);
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0, bad = 0, total = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        CHECK_MSG(j != NULL, "%s:%d: bad fixture line", path, lineno);
        if (!j) continue;
        const cJSON *text = cJSON_GetObjectItem(j, "text"), *sp = cJSON_GetObjectItem(j, "special");
        const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *dec = cJSON_GetObjectItem(j, "decoded");
        const cJSON *decs = cJSON_GetObjectItem(j, "decoded_skip");
        int32_t *out = NULL;
        size_t n = 0;
        total++;
        int rc = tok_encode(t, text->valuestring, strlen(text->valuestring), cJSON_IsTrue(sp), &out, &n, &e);
        int ok = rc == 0 && n == (size_t)cJSON_GetArraySize(ids);
        for (size_t i = 0; ok && i < n; i++) ok = out[i] == cJSON_GetArrayItem(ids, (int)i)->valueint;
        t_checks++;
        if (!ok) {
            t_failures++;
            if (bad++ < 8) {
                fprintf(stderr, "%s:%d: ids differ for text \"%.200s\" special=%d%s%s\n", path, lineno,
                        text->valuestring, cJSON_IsTrue(sp), rc ? " error: " : "", rc ? e.msg : "");
                show_ids("ours", out, n);
                int32_t want[4096];
                size_t m = 0;
                const cJSON *x;
                cJSON_ArrayForEach(x, ids) if (m < 4096) want[m++] = x->valueint;
                show_ids("hf  ", want, m);
            }
        }
        /* decode HF's ids both ways */
        int32_t *want = malloc(((size_t)cJSON_GetArraySize(ids) + 1) * sizeof *want);
        size_t m = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, ids) want[m++] = x->valueint;
        for (int skip = 0; skip < 2; skip++) {
            char *s = NULL;
            const cJSON *exp = skip ? decs : dec;
            rc = tok_decode(t, want, m, skip, &s, &e);
            t_checks++;
            if (rc || strcmp(s, exp->valuestring) != 0) {
                t_failures++;
                if (bad++ < 8)
                    fprintf(stderr, "%s:%d: decode(skip_special=%d) differs:\n    ours \"%.200s\"\n    hf   \"%.200s\"\n",
                            path, lineno, skip, rc ? e.msg : s, exp->valuestring);
            }
            free(s);
        }
        free(want);
        free(out);
        cJSON_Delete(j);
    }
    fprintf(stderr, "%s: %d lines, %d mismatches\n", name, total, bad);
    free(line);
    fclose(f);
    tok_free(t);
    return 0;
}

int main(void) {
    int ran = 0;
    run_one("mistral-7b-v0.1", &ran);
    run_one("llama-2", &ran);
    run_one("smollm-135m", &ran);
    if (!ran) return 77;
    TEST_DONE();
}
