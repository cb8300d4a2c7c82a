/* Dataset readers and formats: real rows from the shared assets, our own rows
 * in the published OpenOrca / UltraFeedback / MetaMathQA schemas, bad
 * records under fail and skip, and .json / .jsonl.gz variants giving the
 * same records. Expected values come from tests/reference/make_dataset_fixtures.py. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "datasets/dataset.h"
#include "datasets/reader.h"
#include "test.h"

static cJSON *expected;

static int have(const char *p) { return access(p, R_OK) == 0; }

/* read all conversations; returns count, -1 on error */
static long count_convs(const char *path, const char *fmt, ds_on_bad pol, ds_dataset **keep, ft_error *e) {
    ds_dataset *d;
    if (ds_open(path, fmt, pol, &d, e)) return -1;
    long n = 0;
    for (;;) {
        ds_conv c;
        int done;
        if (ds_next_conv(d, &c, &done, e)) {
            ds_close(d);
            return -1;
        }
        if (done) break;
        ds_conv_free(&c);
        n++;
    }
    if (keep) *keep = d;
    else ds_close(d);
    return n;
}

static long count_prefs(const char *path, const char *fmt, ds_on_bad pol, ft_error *e) {
    ds_dataset *d;
    if (ds_open(path, fmt, pol, &d, e)) return -1;
    long n = 0;
    for (;;) {
        ds_pref p;
        int done;
        if (ds_next_pref(d, &p, &done, e)) {
            ds_close(d);
            return -1;
        }
        if (done) break;
        CHECK(p.chosen && p.chosen[0] && p.rejected && p.rejected[0]);
        CHECK(p.prompt.n > 0 && p.prompt.msgs[p.prompt.n - 1].role == DS_USER);
        ds_pref_free(&p);
        n++;
    }
    ds_close(d);
    return n;
}

static int exp_int(const char *a, const char *b) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(expected, a), b)->valueint;
}

static void test_real_rows(void) {
    char p[512];
    ft_error e = {0};
    ds_dataset *d;
    if (!have(t_asset("datasets/alpaca.jsonl", p, sizeof p))) {
        CHECK_MSG(0, "%s absent (a committed fixture)", p);
        return;
    }
    /* alpaca: every row, detected; instruction + "\n\n" + input */
    CHECK(ds_open(p, NULL, DS_BAD_FAIL, &d, &e) == 0);
    CHECK(ds_dataset_format(d) == DS_FMT_ALPACA);
    cJSON *fi = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "alpaca"), "first_with_input");
    int want_i = cJSON_GetObjectItem(fi, "index")->valueint;
    for (int i = 0;; i++) {
        ds_conv c;
        int done;
        if (ds_next_conv(d, &c, &done, &e) || done) break;
        if (i == want_i) {
            CHECK(c.n == 2);
            CHECK(strcmp(c.msgs[0].content, cJSON_GetObjectItem(fi, "user")->valuestring) == 0);
            CHECK(strcmp(c.msgs[1].content, cJSON_GetObjectItem(fi, "assistant")->valuestring) == 0);
            char w[64];
            snprintf(w, sizeof w, ":%d", want_i + 1);
            CHECK(strstr(c.where, w) != NULL);
        }
        ds_conv_free(&c);
    }
    CHECK(ds_dataset_stats(d)->yielded == exp_int("alpaca", "rows"));
    ds_close(d);

    t_asset("datasets/openai-messages.jsonl", p, sizeof p);
    CHECK(count_convs(p, NULL, DS_BAD_FAIL, NULL, &e) == exp_int("openai-messages", "rows"));
    /* toolcall rows: function_call -> assistant, observation -> user; tools -> system */
    t_asset("datasets/sharegpt-toolcall.jsonl", p, sizeof p);
    CHECK(ds_open(p, NULL, DS_BAD_FAIL, &d, &e) == 0);
    CHECK(ds_dataset_format(d) == DS_FMT_SHAREGPT);
    ds_conv c;
    int done;
    CHECK(ds_next_conv(d, &c, &done, &e) == 0 && !done);
    cJSON *roles = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "sharegpt-toolcall"), "roles0");
    int has_sys = c.msgs[0].role == DS_SYSTEM;
    CHECK(has_sys && strstr(c.msgs[0].content, "tools") != NULL);
    CHECK(c.n - has_sys == cJSON_GetArraySize(roles));
    for (int i = 0; i < cJSON_GetArraySize(roles) && i + has_sys < c.n; i++)
        CHECK(strcmp(ds_role_name(c.msgs[i + has_sys].role), cJSON_GetArrayItem(roles, i)->valuestring) == 0);
    ds_conv_free(&c);
    ds_close(d);
    long n = count_convs(p, NULL, DS_BAD_FAIL, NULL, &e);
    CHECK_MSG(n == exp_int("sharegpt-toolcall", "rows"), "%ld: %s", n, e.msg);

    t_asset("datasets/openai-preference.jsonl", p, sizeof p);
    CHECK(count_prefs(p, NULL, DS_BAD_FAIL, &e) == exp_int("openai-preference", "rows"));
    t_asset("datasets/orca_dpo_pairs.jsonl", p, sizeof p);
    CHECK(count_prefs(p, NULL, DS_BAD_FAIL, &e) == exp_int("orca_dpo_pairs", "rows"));
    t_asset("datasets/sharegpt-preference.jsonl", p, sizeof p);
    n = count_prefs(p, NULL, DS_BAD_FAIL, &e);
    CHECK_MSG(n == exp_int("sharegpt-preference", "rows"), "%ld: %s", n, e.msg);

    /* oasst: trees; deleted and missing-parent messages counted */
    t_asset("datasets/oasst1.jsonl", p, sizeof p);
    cJSON *oa = cJSON_GetObjectItem(expected, "oasst");
    cJSON *convs = cJSON_GetObjectItem(oa, "convs");
    CHECK(ds_open(p, NULL, DS_BAD_FAIL, &d, &e) == 0); /* deleted / orphaned rows are counted, not errors */
    CHECK(ds_dataset_format(d) == DS_FMT_OASST);
    int i = 0;
    for (;; i++) {
        if (ds_next_conv(d, &c, &done, &e) || done) break;
        cJSON *x = cJSON_GetArrayItem(convs, i);
        if (x) {
            CHECK(c.n == cJSON_GetObjectItem(x, "n")->valueint);
            CHECK(strcmp(c.msgs[c.n - 1].content, cJSON_GetObjectItem(x, "last")->valuestring) == 0);
        }
        ds_conv_free(&c);
    }
    CHECK(i == cJSON_GetArraySize(convs));
    const ds_read_stats *st = ds_dataset_stats(d);
    CHECK(st->records == cJSON_GetObjectItem(oa, "rows")->valueint);
    CHECK(st->skipped[DS_SKIP_DELETED] == cJSON_GetObjectItem(oa, "deleted")->valueint);
    CHECK(st->skipped[DS_SKIP_MISSING_PARENT] == cJSON_GetObjectItem(oa, "missing_parent")->valueint);
    ds_close(d);
    cJSON *pairs = cJSON_GetObjectItem(oa, "pairs");
    CHECK(ds_open(p, "oasst_preference", DS_BAD_SKIP, &d, &e) == 0);
    for (i = 0;; i++) {
        ds_pref pr;
        if (ds_next_pref(d, &pr, &done, &e) || done) break;
        cJSON *x = cJSON_GetArrayItem(pairs, i);
        if (x) {
            CHECK(pr.prompt.n == cJSON_GetObjectItem(x, "prompt_turns")->valueint);
            CHECK(strcmp(pr.chosen, cJSON_GetObjectItem(x, "chosen")->valuestring) == 0);
            CHECK(strcmp(pr.rejected, cJSON_GetObjectItem(x, "rejected")->valuestring) == 0);
        }
        ds_pref_free(&pr);
    }
    CHECK(i == cJSON_GetArraySize(pairs));
    ds_close(d);
}

static void test_own_rows(void) {
    char p[512];
    ft_error e = {0};
    ds_dataset *d;
    ds_conv c;
    int done;
    CHECK(ds_open(t_src("tests/fixtures/datasets/openorca.jsonl", p, sizeof p), NULL, DS_BAD_FAIL, &d, &e) == 0);
    CHECK(ds_dataset_format(d) == DS_FMT_OPENORCA);
    CHECK(ds_next_conv(d, &c, &done, &e) == 0 && c.n == 2); /* empty system_prompt: no system turn */
    CHECK(c.msgs[0].role == DS_USER && strstr(c.msgs[0].content, "こんにちは"));
    ds_conv_free(&c);
    CHECK(ds_next_conv(d, &c, &done, &e) == 0 && c.n == 3 && c.msgs[0].role == DS_SYSTEM);
    CHECK(strcmp(c.msgs[2].content, "Midsummer House is a moderately priced Chinese restaurant with a 3/5 customer rating, located near All Bar One.") == 0);
    ds_conv_free(&c);
    ds_close(d);
    CHECK(count_convs(p, NULL, DS_BAD_FAIL, NULL, &e) == 3);

    CHECK(ds_open(t_src("tests/fixtures/datasets/metamath.jsonl", p, sizeof p), NULL, DS_BAD_FAIL, &d, &e) == 0);
    CHECK(ds_dataset_format(d) == DS_FMT_METAMATH);
    CHECK(ds_next_conv(d, &c, &done, &e) == 0 && c.n == 2);
    CHECK(strncmp(c.msgs[1].content, "The distance between two points", 31) == 0);
    ds_conv_free(&c);
    ds_close(d);

    CHECK(ds_open(t_src("tests/fixtures/datasets/ultrafeedback.jsonl", p, sizeof p), NULL, DS_BAD_FAIL, &d, &e) == 0);
    CHECK(ds_dataset_format(d) == DS_FMT_ULTRAFEEDBACK);
    ds_pref pr;
    CHECK(ds_next_pref(d, &pr, &done, &e) == 0);
    CHECK(pr.prompt.n == 1 && strcmp(pr.prompt.msgs[0].content, "How many helicopters can a human eat in one sitting?") == 0);
    CHECK(strcmp(pr.chosen, "None. Helicopters are not food.") == 0);
    CHECK(strcmp(pr.rejected, "Probably about three if they are small.") == 0);
    ds_pref_free(&pr);
    CHECK(ds_next_conv(d, &c, &done, &e) == FT_EINPUT); /* preference data asked for SFT */
    ds_close(d);
    /* a format named explicitly wins over detection, and a wrong one is reported */
    CHECK(count_convs(p, "alpaca", DS_BAD_FAIL, NULL, &e) == -1);
    CHECK(strstr(e.msg, "ultrafeedback.jsonl:1") && strstr(e.msg, "'instruction'"));
    CHECK(ds_open(p, "nonsense", DS_BAD_FAIL, &d, &e) == FT_EINPUT);
}

static void test_bad_records(void) {
    char p[512];
    ft_error e = {0};
    ds_dataset *d;
    t_src("tests/fixtures/datasets/bad_alpaca.jsonl", p, sizeof p);
    CHECK(count_convs(p, NULL, DS_BAD_FAIL, NULL, &e) == -1);
    CHECK_MSG(strstr(e.msg, "bad_alpaca.jsonl:2") && strstr(e.msg, "malformed JSON"), "%s", e.msg);
    CHECK(count_convs(p, NULL, DS_BAD_SKIP, &d, &e) == 2);
    const ds_read_stats *st = ds_dataset_stats(d);
    CHECK(st->skipped[DS_SKIP_JSON] == 1);
    CHECK(st->skipped[DS_SKIP_FIELD] == 2);
    CHECK(st->skipped[DS_SKIP_EMPTY_TURN] == 1);
    CHECK(st->skipped[DS_SKIP_UTF8] == 1);
    CHECK(st->skipped_total == 5 && st->records == 7);
    ds_close(d);
    /* each error names file:line and the field */
    const char *rows[][3] = {
        {"{\"instruction\": \"No output\"}\n", "x.jsonl:1: missing field 'output'", "alpaca"},
        {"{\"instruction\": 5, \"output\": \"x\"}\n", "x.jsonl:1: field 'instruction' must be a string", "alpaca"},
        {"\n\n{\"instruction\": \"a\", \"output\": \"\"}\n", "x.jsonl:3: turn 1 (assistant) is empty", NULL},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}\n", "x.jsonl:1: turn 1 is user where assistant", NULL},
        {"{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n", "x.jsonl:1: turn 0 is assistant where user", NULL},
        {"{\"messages\": [{\"role\": \"wizard\", \"content\": \"a\"}]}\n", "field 'messages[0].role' has unknown role 'wizard'", NULL},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"gpt\", \"value\": 3}]}\n", "field 'conversations[1].value' must be a string", NULL},
        {"{\"instruction\": \"a\xc3\", \"output\": \"b\"}\n", "field 'instruction' has invalid UTF-8 at byte 1", NULL},
        {"", "x.jsonl: empty dataset file", "alpaca"},
        {"\n  \n", "x.jsonl: empty dataset file", NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        FILE *f = fopen("x.jsonl", "w");
        fputs(rows[i][0], f);
        fclose(f);
        long n = count_convs("x.jsonl", rows[i][2], DS_BAD_FAIL, NULL, &e);
        CHECK_MSG(n == -1 && strstr(e.msg, rows[i][1]), "row %zu: got '%s'", i, e.msg);
    }
    t_src("tests/fixtures/datasets/bad_messages.jsonl", p, sizeof p);
    CHECK(count_convs(p, NULL, DS_BAD_SKIP, &d, &e) == 2);
    st = ds_dataset_stats(d);
    CHECK(st->skipped[DS_SKIP_ORDER] == 2 && st->skipped[DS_SKIP_ROLE] == 1);
    ds_close(d);
    /* a too-long line is an error, not an allocation of the whole line */
    FILE *f = fopen("long.jsonl", "w");
    fputs("{\"instruction\": \"", f);
    static char chunk[1 << 16];
    memset(chunk, 'a', sizeof chunk);
    for (unsigned k = 0; k < (DS_MAX_RECORD >> 16) + 1; k++) fwrite(chunk, 1, sizeof chunk, f);
    fputs("\", \"output\": \"x\"}\n{\"instruction\": \"a\", \"output\": \"b\"}\n", f);
    fclose(f);
    CHECK(count_convs("long.jsonl", NULL, DS_BAD_FAIL, NULL, &e) == -1 && strstr(e.msg, "long.jsonl:1: line longer than"));
    CHECK(count_convs("long.jsonl", NULL, DS_BAD_SKIP, &d, &e) == 1);
    CHECK(ds_dataset_stats(d)->skipped[DS_SKIP_TOO_LONG] == 1);
    ds_close(d);
    remove("long.jsonl");
    remove("x.jsonl");
}

/* serialise all records of a .jsonl as unformatted strings */
static char **records(const char *path, int *n) {
    ds_reader *r;
    ft_error e;
    *n = 0;
    if (ds_reader_open(path, &r, &e)) return NULL;
    char **v = NULL;
    for (;;) {
        cJSON *j;
        long line;
        if (ds_reader_next(r, &j, &line, &e) || !j) break;
        v = realloc(v, (size_t)(*n + 1) * sizeof *v);
        v[(*n)++] = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
    }
    ds_reader_close(r);
    return v;
}

static void test_variants(void) {
    char p[512];
    t_src("tests/fixtures/datasets/ultrafeedback.jsonl", p, sizeof p);
    if (have(t_asset("datasets/sharegpt-toolcall.jsonl", p, sizeof p)) == 0) t_src("tests/fixtures/datasets/ultrafeedback.jsonl", p, sizeof p);
    int n;
    char **a = records(p, &n);
    CHECK(n > 1);
    /* .json: a pretty-printed array (elements span lines); .jsonl.gz: gzipped */
    FILE *f = fopen("v.json", "w");
    gzFile g = gzopen("v.jsonl.gz", "wb");
    fputs("[\n", f);
    int *lines = malloc((size_t)n * sizeof *lines), line = 2;
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(a[i]);
        char *pretty = cJSON_Print(j);
        lines[i] = line;
        for (char *q = pretty; *q; q++) line += *q == '\n';
        fprintf(f, "  %s%s\n", pretty, i + 1 < n ? "," : "");
        line++;
        gzwrite(g, a[i], (unsigned)strlen(a[i]));
        gzwrite(g, "\n", 1);
        free(pretty);
        cJSON_Delete(j);
    }
    fputs("]\n", f);
    fclose(f);
    gzclose(g);
    int nb, nc;
    char **b = records("v.json", &nb), **c = records("v.jsonl.gz", &nc);
    CHECK(nb == n && nc == n);
    for (int i = 0; i < n && i < nb && i < nc; i++) {
        CHECK(strcmp(a[i], b[i]) == 0);
        CHECK(strcmp(a[i], c[i]) == 0);
    }
    /* .json records carry the line where each element starts */
    ds_reader *r;
    ft_error e;
    CHECK(ds_reader_open("v.json", &r, &e) == 0);
    for (int i = 0; i < n; i++) {
        cJSON *j;
        long ln;
        CHECK(ds_reader_next(r, &j, &ln, &e) == 0 && j);
        CHECK_MSG(ln == lines[i], "element %d: line %ld, expected %d", i, ln, lines[i]);
        cJSON_Delete(j);
    }
    ds_reader_close(r);
    /* .json.gz too, and a damaged array is reported */
    f = fopen("bad.json", "w");
    fputs("[{\"a\": 1},\n {\"a\": 2} {\"a\": 3}]", f);
    fclose(f);
    CHECK(ds_reader_open("bad.json", &r, &e) == 0);
    cJSON *j;
    long ln;
    CHECK(ds_reader_next(r, &j, &ln, &e) == 0 && j);
    cJSON_Delete(j);
    CHECK(ds_reader_next(r, &j, &ln, &e) == 0 && j);
    cJSON_Delete(j);
    CHECK(ds_reader_next(r, &j, &ln, &e) == FT_EINPUT && strstr(e.msg, "bad.json:2"));
    ds_reader_close(r);
    f = fopen("empty.json", "w");
    fputs(" [ ] ", f);
    fclose(f);
    CHECK(ds_reader_open("empty.json", &r, &e) == 0);
    CHECK(ds_reader_next(r, &j, &ln, &e) == FT_EINPUT && strstr(e.msg, "empty"));
    ds_reader_close(r);
    for (int i = 0; i < n; i++) {
        free(a[i]);
        if (i < nb) free(b[i]);
        if (i < nc) free(c[i]);
    }
    free(a), free(b), free(c), free(lines);
    remove("v.json"), remove("v.jsonl.gz"), remove("bad.json"), remove("empty.json");
}

int main(void) {
    char p[512];
    char *txt;
    size_t len;
    ft_error e;
    if (ft_read_file(t_src("tests/fixtures/datasets/expected.json", p, sizeof p), &txt, &len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    expected = cJSON_Parse(txt);
    free(txt);
    test_own_rows();
    test_bad_records();
    test_variants();
    test_real_rows();
    cJSON_Delete(expected);
    TEST_DONE();
}
