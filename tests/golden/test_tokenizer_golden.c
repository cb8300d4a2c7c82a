/* Golden test: our tokenizer gives exactly HF tokenizers' ids and decodes for the fixtures made by
 * tests/reference/make_tokenizer_fixtures.py (tests/fixtures/tokenizer/<name>.jsonl). */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "test.h"
#include "datasets/tokenizer/tokenizer.h"

static void show_ids(const char *label, const int32_t *v, size_t n) {
    fprintf(stderr, "    %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Compare one fixture case {text, special, ids, decoded, decoded_skip}; returns mismatches. */
static int check_case(const ft_tokenizer *t, const cJSON *j, const char *where, int lineno, int *bad) {
    ft_error e = {0};
    const cJSON *text = cJSON_GetObjectItem(j, "text"), *sp = cJSON_GetObjectItem(j, "special");
    const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *dec = cJSON_GetObjectItem(j, "decoded");
    const cJSON *decs = cJSON_GetObjectItem(j, "decoded_skip"), *x;
    int32_t *out = NULL;
    size_t n = 0, m = 0;
    int32_t *want = malloc(((size_t)cJSON_GetArraySize(ids) + 1) * sizeof *want);
    cJSON_ArrayForEach(x, ids) want[m++] = x->valueint;
    int rc = tok_encode(t, text->valuestring, strlen(text->valuestring), cJSON_IsTrue(sp), &out, &n, &e);
    int ok = rc == 0 && n == m;
    for (size_t i = 0; ok && i < n; i++) ok = out[i] == want[i];
    t_checks++;
    if (!ok) {
        t_failures++;
        if ((*bad)++ < 8) {
            fprintf(stderr, "%s:%d: ids differ for text \"%.200s\" special=%d%s%s\n", where, lineno, text->valuestring,
                    cJSON_IsTrue(sp), rc ? " error: " : "", rc ? e.msg : "");
            show_ids("ours", out, n);
            show_ids("hf  ", want, m);
        }
    }
    for (int skip = 0; skip < 2; skip++) {
        char *s = NULL;
        const cJSON *exp = skip ? decs : dec;
        rc = tok_decode(t, want, m, skip, &s, &e);
        t_checks++;
        if (rc || strcmp(s, exp->valuestring) != 0) {
            t_failures++;
            if ((*bad)++ < 8)
                fprintf(stderr, "%s:%d: decode(skip_special=%d) differs:\n    ours \"%.200s\"\n    hf   \"%.200s\"\n", where,
                        lineno, skip, rc ? e.msg : s, exp->valuestring);
        }
        free(s);
    }
    free(want);
    free(out);
    return 0;
}

static int run_one(const char *name) {
    char dir[1024], path[2048];
    t_asset("tokenizers/", dir, sizeof dir);
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    ft_tokenizer *t = NULL;
    ft_error e = {0};
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
        total++;
        check_case(t, j, path, lineno, &bad);
        cJSON_Delete(j);
    }
    fprintf(stderr, "%s: %d lines, %d mismatches\n", name, total, bad);
    free(line);
    fclose(f);
    tok_free(t);
    return 0;
}

/* Variants: a real tokenizer.json patched as tests/reference/make_tokenizer_fixtures.py did. */
static void run_variants(void) {
    char path[1024], base[1024];
    t_src("tests/fixtures/tokenizer/variants.json", path, sizeof path);
    char *buf = NULL;
    size_t len = 0;
    ft_error e = {0};
    if (ft_read_file(path, &buf, &len, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    cJSON *all = cJSON_Parse(buf), *v;
    free(buf);
    CHECK_MSG(cJSON_IsArray(all), "%s: bad fixture", path);
    cJSON_ArrayForEach(v, all) {
        const char *name = cJSON_GetObjectItem(v, "name")->valuestring;
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", cJSON_GetObjectItem(v, "base")->valuestring);
        t_asset(rel, base, sizeof base);
        if (ft_read_file(base, &buf, &len, &e)) {
            CHECK_MSG(0, "variant %s: %s", name, e.msg);
            continue;
        }
        cJSON *d = cJSON_Parse(buf), *x;
        free(buf);
        const cJSON *spec = cJSON_GetObjectItem(v, "spec");
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(spec, "patch"))
            cJSON_ReplaceItemInObjectCaseSensitive(d, x->string, cJSON_Duplicate(x, 1));
        cJSON *model = cJSON_GetObjectItem(d, "model");
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(spec, "model_patch"))
            cJSON_ReplaceItemInObjectCaseSensitive(model, x->string, cJSON_Duplicate(x, 1));
        cJSON *added = cJSON_GetObjectItem(d, "added_tokens");
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(spec, "extra_added")) cJSON_AddItemToArray(added, cJSON_Duplicate(x, 1));
        char *json = cJSON_PrintUnformatted(d);
        cJSON_Delete(d);
        ft_tokenizer *t = NULL;
        int rc = tok_load_json(json, strlen(json), name, &t, &e);
        free(json);
        CHECK_MSG(rc == 0, "variant %s: %s", name, e.msg);
        if (rc) continue;
        int bad = 0, k = 0;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(v, "cases")) check_case(t, x, name, k++, &bad);
        fprintf(stderr, "variant %s: %d cases, %d mismatches\n", name, k, bad);
        tok_free(t);
    }
    cJSON_Delete(all);
}

int main(void) {
    run_variants();
    run_one("mistral-7b-v0.1");
    run_one("llama-2");
    run_one("smollm-135m");
    TEST_DONE();
}
