/* Classification data (datasets/classify, datasets/csv): the CSV reader's quoting, line breaks, BOM and
 * positions; the text and LMSYS layouts from CSV, JSONL and .csv.gz; labels by name, index and soft,
 * regression; one-hot winners; null turns; the pair template's ids equal to HF tokenizers' ids of the
 * whole rendered text (tests/fixtures/classify/expected.json, made by
 * tests/reference/make_classify_fixtures.py) for the three tokenizers in the assets; budgets with exact
 * counts; seeded swapping; bad rows as file:line:column, failed or skipped and counted. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "datasets/classify.h"
#include "datasets/csv.h"
#include "test.h"

static cJSON *expected;
static char tmpdir[256];

static const char *fix(const char *name, char *buf, size_t n) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fixtures/classify/%s", name);
    return t_src(rel, buf, n);
}

static ft_tokenizer *load_tok(const char *name) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "tokenizers/%s", name);
    ft_tokenizer *t = NULL;
    ft_error e;
    if (tok_load(t_asset(rel, path, sizeof path), &t, &e)) {
        fprintf(stderr, "tok_load %s: %s\n", name, e.msg);
        exit(1);
    }
    return t;
}

static const char *write_tmp(const char *name, const char *data) {
    static char path[8][600];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 600, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    fputs(data, f);
    fclose(f);
    return p;
}

static ds_cls_opts lmsys_opts(void) {
    ds_cls_opts o = {0};
    o.layout = DS_CLS_LMSYS;
    o.num_labels = 3;
    o.add_eos = 1;
    o.require_labels = 1;
    o.on_bad = DS_BAD_FAIL;
    return o;
}

/* x's ids equal the JSON array of ids */
static int ids_equal(const ds_cls_example *x, const cJSON *a) {
    if (cJSON_GetArraySize(a) != x->n) return 0;
    for (int i = 0; i < x->n; i++)
        if ((int)cJSON_GetArrayItem(a, i)->valuedouble != x->ids[i]) return 0;
    return 1;
}

static void dump_diff(const ds_cls_example *x, const cJSON *a, const ft_tokenizer *t) {
    int n = cJSON_GetArraySize(a);
    fprintf(stderr, "  ours (%d) vs HF (%d):\n", x->n, n);
    for (int i = 0; i < (x->n > n ? x->n : n); i++) {
        int o = i < x->n ? x->ids[i] : -1, h = i < n ? (int)cJSON_GetArrayItem(a, i)->valuedouble : -1;
        if (o != h)
            fprintf(stderr, "  [%d] %d '%s' vs %d '%s'\n", i, o, o >= 0 ? tok_token_str(t, o) : "", h,
                    h >= 0 ? tok_token_str(t, h) : "");
    }
}

/* ---------- the CSV reader ---------- */

static void test_csv(void) {
    ft_error e;
    ds_csv *r;
    const ds_csv_row *row;
    /* BOM, CRLF, quotes, "" escapes, a field spanning lines (CRLF inside kept), spaces kept, empty fields,
     * an empty line between records, no line break at the end */
    const char *s = "\xEF\xBB\xBFid,text,x\r\n"
                    "1,\"a, \"\"quoted\"\" word\",  sp \r\n"
                    "2,\"line one\r\nline two\nline three\",\r\n"
                    "\r\n"
                    "3,,\"\"\r\n"
                    "4,\xC3\xA9t\xC3\xA9,z";
    CHECK(ds_csv_open_mem(s, strlen(s), "m.csv", &r, &e) == 0);
    CHECK(ds_csv_ncols(r) == 3);
    CHECK(strcmp(ds_csv_col_name(r, 0), "id") == 0); /* the BOM is not part of the name */
    CHECK(ds_csv_col_find(r, "x") == 2 && ds_csv_col_find(r, "y") == -1);
    char cols[64];
    ds_csv_col_list(r, cols, sizeof cols);
    CHECK(strcmp(cols, "id, text, x") == 0);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->n == 3);
    CHECK(row && row->line == 2 && strcmp(row->f[1].s, "a, \"quoted\" word") == 0 && strcmp(row->f[2].s, "  sp ") == 0);
    CHECK(row && row->f[1].col == 3 && row->f[2].col == 24);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->line == 3);
    CHECK(row && strcmp(row->f[1].s, "line one\r\nline two\nline three") == 0 && row->f[1].len == 29);
    CHECK(row && row->f[2].len == 0 && row->f[2].line == 5 && row->f[2].col == 13);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->line == 7 && row->f[1].len == 0 && row->f[2].len == 0);
    CHECK(row && row->f[2].col == 4);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->line == 8 && strcmp(row->f[1].s, "\xC3\xA9t\xC3\xA9") == 0);
    CHECK(row && row->f[2].col == 7); /* columns count characters */
    CHECK(ds_csv_next(r, &row, &e) == 0 && row == NULL);
    ds_csv_close(r);

    /* CR-only line ends count lines too */
    s = "a,b\r1,2\r3,4";
    CHECK(ds_csv_open_mem(s, strlen(s), "cr.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->line == 2);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && row->line == 3 && strcmp(row->f[1].s, "4") == 0);
    ds_csv_close(r);

    /* a record with the wrong number of fields: an error naming its line, then the next record */
    s = "a,b\n1,2,3\n4,5\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "n.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == FT_EINPUT && ds_csv_can_continue(r));
    CHECK_MSG(strstr(e.msg, "n.csv:2: the record has 3 fields, the header has 2 columns") != NULL, "%s", e.msg);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row && strcmp(row->f[0].s, "4") == 0);
    ds_csv_close(r);

    /* malformed quoting (strict): text after a closing quote; the field's start and the bad byte named */
    s = "a,b\n1,2\n3,\"x\"y\n5,6\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "q.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == FT_EINPUT && !ds_csv_can_continue(r));
    CHECK_MSG(strstr(e.msg, "q.csv:3:3: malformed CSV quoting") != NULL, "%s", e.msg);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row == NULL); /* the file ended */
    ds_csv_close(r);
    /* a quote inside an unquoted field */
    s = "a,b\n1,x\"y\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "q2.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "q2.csv:2:3: malformed CSV quoting") != NULL, "%s", e.msg);
    ds_csv_close(r);
    /* a quote left open */
    s = "a,b\n1,2\n3,\"open\n4,5\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "u.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "u.csv:3:3: a quoted field is not closed before the end of the file") != NULL, "%s",
              e.msg);
    ds_csv_close(r);
    /* empty file, header only, duplicate column */
    CHECK(ds_csv_open_mem("", 0, "e.csv", &r, &e) == FT_EINPUT && strstr(e.msg, "e.csv: empty CSV file"));
    CHECK(ds_csv_open_mem("\xEF\xBB\xBF\r\n\r\n", 7, "e2.csv", &r, &e) == FT_EINPUT);
    s = "a,b\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "h.csv", &r, &e) == 0);
    CHECK(ds_csv_next(r, &row, &e) == 0 && row == NULL);
    ds_csv_close(r);
    s = "a,b,a\n1,2,3\n";
    CHECK(ds_csv_open_mem(s, strlen(s), "d.csv", &r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "d.csv:1:5: the header names column 'a' twice") != NULL, "%s", e.msg);
    /* a file on disk, and gzipped */
    char path[1024];
    CHECK(ds_csv_open(fix("lmsys-sample.csv", path, sizeof path), &r, &e) == 0);
    int rows = 0;
    long line4 = 0, line5 = 0;
    while (ds_csv_next(r, &row, &e) == 0 && row) {
        rows++;
        if (rows == 4) line4 = row->line;
        if (rows == 5) line5 = row->line;
    }
    CHECK(rows == 12);
    CHECK(line5 == line4 + 3); /* row 4's response_a spans three lines */
    ds_csv_close(r);
}

/* A file much larger than the reader's 64 KiB buffer: fields of every kind fall on its boundaries. Each
 * field's content and start are known from how the file was written. */
typedef struct {
    char *s;
    size_t n, cap;
    long line, col;
} gen_buf;

static void gen_put(gen_buf *b, const char *s) {
    for (; *s; s++) {
        if (b->n + 2 > b->cap) b->s = realloc(b->s, b->cap = b->cap ? b->cap * 2 : 4096);
        b->s[b->n++] = *s;
        if (*s == '\n') {
            if (b->n < 2 || b->s[b->n - 2] != '\r') b->line++;
            b->col = 1;
        } else if (*s == '\r') {
            b->line++, b->col = 1;
        } else {
            b->col++;
        }
    }
    b->s[b->n] = 0;
}

static void test_csv_large(void) {
    enum { ROWS = 10000 };
    gen_buf b = {.line = 1, .col = 1};
    static char want[ROWS][2][64];
    static long wline[ROWS][2], wcol[ROWS][2];
    gen_put(&b, "id,text\n");
    for (int i = 0; i < ROWS; i++) {
        char f[96];
        const char *eol = i % 7 == 0 ? "\r\n" : "\n";
        wline[i][0] = b.line, wcol[i][0] = b.col;
        snprintf(want[i][0], sizeof want[i][0], "%d", i);
        gen_put(&b, want[i][0]);
        gen_put(&b, ",");
        wline[i][1] = b.line, wcol[i][1] = b.col;
        switch (i % 5) {
        case 0: snprintf(want[i][1], 64, "plain %d padding padding padding", i), snprintf(f, sizeof f, "%s", want[i][1]); break;
        case 1: snprintf(want[i][1], 64, "a, %d, b", i), snprintf(f, sizeof f, "\"a, %d, b\"", i); break;
        case 2: snprintf(want[i][1], 64, "l1\nl2\r\nl3 %d", i), snprintf(f, sizeof f, "\"l1\nl2\r\nl3 %d\"", i); break;
        case 3: snprintf(want[i][1], 64, "say \"%d\"", i), snprintf(f, sizeof f, "\"say \"\"%d\"\"\"", i); break;
        default: want[i][1][0] = 0, f[0] = 0;
        }
        gen_put(&b, f);
        gen_put(&b, eol);
        if (i % 11 == 0) gen_put(&b, "\n"); /* an empty line */
    }
    CHECK(b.n > 3 * 65536);
    ds_csv *r;
    const ds_csv_row *row;
    ft_error e;
    const char *path = write_tmp("large.csv", b.s);
    int ok = ds_csv_open(path, &r, &e) == 0, i = 0, bad = 0;
    CHECK(ok);
    while (ok && ds_csv_next(r, &row, &e) == 0 && row && i < ROWS) {
        for (int k = 0; k < 2; k++)
            if (strcmp(row->f[k].s, want[i][k]) != 0 || row->f[k].line != wline[i][k] || row->f[k].col != wcol[i][k]) {
                if (bad++ < 5)
                    fprintf(stderr, "row %d field %d: '%s' %ld:%ld, expected '%s' %ld:%ld\n", i, k, row->f[k].s,
                            row->f[k].line, row->f[k].col, want[i][k], wline[i][k], wcol[i][k]);
            }
        i++;
    }
    CHECK_MSG(i == ROWS && bad == 0, "%d rows read, %d wrong", i, bad);
    if (ok) ds_csv_close(r);
    free(b.s);
}

/* tok_encode_cont: pieces split before a space or at whitespace concatenate to the whole text's ids */
static void test_encode_cont(void) {
    static const char *TK[3] = {"llama-2", "mistral-7b-v0.1", "smollm-135m"};
    static const char *split[][2] = {{"Hello", " world"}, {"<prompt>:", " What is 2+2?"}, {"line", "\n\nnext"},
                                     {"a", " <s> b"}, {"Stra\xC3\x9F" "e", " na\xC3\xAFve"}};
    for (int k = 0; k < 3; k++) {
        ft_tokenizer *t = load_tok(TK[k]);
        for (size_t i = 0; i < sizeof split / sizeof split[0]; i++) {
            char whole[128];
            snprintf(whole, sizeof whole, "%s%s", split[i][0], split[i][1]);
            int32_t *w, *a, *b;
            size_t nw, na, nb;
            ft_error e;
            CHECK(tok_encode(t, whole, strlen(whole), 0, &w, &nw, &e) == 0);
            CHECK(tok_encode(t, split[i][0], strlen(split[i][0]), 0, &a, &na, &e) == 0);
            CHECK(tok_encode_cont(t, split[i][1], strlen(split[i][1]), &b, &nb, &e) == 0);
            CHECK_MSG(na + nb == nw && memcmp(w, a, na * sizeof *a) == 0 && memcmp(w + na, b, nb * sizeof *b) == 0,
                      "%s: '%s' + '%s'", TK[k], split[i][0], split[i][1]);
            free(w), free(a), free(b);
        }
        /* the difference: tok_encode puts the start-of-text prefix before "world" where the tokenizer has one */
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        ft_error e;
        CHECK(tok_encode(t, "world", 5, 0, &a, &na, &e) == 0 && tok_encode_cont(t, "world", 5, &b, &nb, &e) == 0);
        int same = na == nb && memcmp(a, b, na * sizeof *a) == 0;
        CHECK_MSG(k == 2 ? same : !same, "%s: prefix", TK[k]);
        free(a), free(b);
        tok_free(t);
    }
}

/* ---------- LMSYS ---------- */

#define LH "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"

static const char *TOKS[3] = {"llama-2", "mistral-7b-v0.1", "smollm-135m"};

static void check_lmsys_ids(const char *file, const ds_cls_opts *o, const char *key) {
    char path[1024];
    for (int k = 0; k < 3; k++) {
        ft_tokenizer *t = load_tok(TOKS[k]);
        ds_cls_example *x;
        int n;
        ds_cls_stats st;
        ft_error e;
        const char *p = file[0] == '/' ? file : fix(file, path, sizeof path);
        int rc = ds_cls_read(p, o, t, &x, &n, &st, &e);
        CHECK_MSG(rc == 0, "%s: %s", file, e.msg);
        if (rc) {
            tok_free(t);
            continue;
        }
        const cJSON *exp = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, TOKS[k]), key);
        CHECK(n == 12 && st.rows == 12 && st.examples == 12 && st.skipped == 0 && st.truncated_parts == 0);
        for (int i = 0; i < n && i < cJSON_GetArraySize(exp); i++) {
            int ok = ids_equal(&x[i], cJSON_GetArrayItem(exp, i));
            CHECK_MSG(ok, "%s %s row %d (%s): ids differ from HF's whole-text ids", file, TOKS[k], i, x[i].where);
            if (!ok) dump_diff(&x[i], cJSON_GetArrayItem(exp, i), t);
        }
        ds_cls_free(x, n);
        tok_free(t);
    }
}

static void test_lmsys(void) {
    char path[1024];
    ds_cls_opts o = lmsys_opts();
    /* ids equal HF's for the whole rendered text: CSV, CSV with CRLF and BOM, JSONL, .csv.gz */
    check_lmsys_ids("lmsys-sample.csv", &o, "lmsys");
    check_lmsys_ids("lmsys-crlf-bom.csv", &o, "lmsys");
    check_lmsys_ids("lmsys-sample.jsonl", &o, "lmsys");
    {
        char *data;
        size_t len;
        ft_error e;
        CHECK(ft_read_file(fix("lmsys-sample.csv", path, sizeof path), &data, &len, &e) == 0);
        char gz[600];
        snprintf(gz, sizeof gz, "%s/sample.csv.gz", tmpdir);
        gzFile g = gzopen(gz, "wb");
        gzwrite(g, data, (unsigned)len);
        gzclose(g);
        free(data);
        check_lmsys_ids(gz, &o, "lmsys");
    }
    o.swap = DS_CLS_SWAP_ALL;
    check_lmsys_ids("lmsys-sample.csv", &o, "lmsys_swapped");
    /* a template of our own: a tab, no space after a colon, literal text after the last part */
    o = lmsys_opts();
    o.pair_template = "Question:\t{prompt}\nAnswer A:{response_a}\nAnswer B: {response_b}\n\nWhich answer is better?";
    check_lmsys_ids("lmsys-sample.csv", &o, "custom");
    o = lmsys_opts();

    /* labels, ids, where, nulls, swapped labels */
    ft_tokenizer *t = load_tok("smollm-135m");
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    o = lmsys_opts();
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
    static const int winner[12] = {0, 1, 2, 0, 1, 0, 2, 1, 0, 1, 2, 0};
    for (int i = 0; i < n; i++) {
        CHECK(x[i].has_label && x[i].probs && !x[i].swapped);
        for (int k = 0; k < 3; k++) CHECK(x[i].probs[k] == (k == winner[i] ? 1.0f : 0.0f));
        CHECK(x[i].ids[x[i].n - 1] == tok_eos_id(t));
    }
    CHECK(strcmp(x[0].id, "30192") == 0 && strcmp(x[11].id, "612005") == 0);
    CHECK_MSG(strstr(x[0].where, "lmsys-sample.csv:2") != NULL, "%s", x[0].where);
    CHECK_MSG(strstr(x[4].where, "lmsys-sample.csv:8") != NULL, "%s", x[4].where); /* after the 3-line row */
    CHECK(st.nulls == 2 && st.swapped == 0 && st.surrogates == 0);
    ds_cls_free(x, n);
    o.swap = DS_CLS_SWAP_ALL;
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
    CHECK(st.swapped == 12);
    for (int i = 0; i < n; i++) {
        int w = winner[i] == 2 ? 2 : 1 - winner[i];
        CHECK(x[i].swapped && x[i].probs[w] == 1.0f);
        float p[3] = {0.1f, 0.7f, 0.2f};
        ds_cls_unswap_probs(p, 3); /* a prediction on the swapped input, back in the file's order */
        CHECK(p[0] == 0.7f && p[1] == 0.1f && p[2] == 0.2f);
    }
    ds_cls_free(x, n);

    /* JSONL ids: numbers; the prompt of row 4 is a JSON-encoded string there */
    o = lmsys_opts();
    CHECK(ds_cls_read(fix("lmsys-sample.jsonl", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
    CHECK(n == 12 && strcmp(x[1].id, "53567") == 0 && strstr(x[1].where, "lmsys-sample.jsonl:2"));
    ds_cls_free(x, n);

    /* test.csv: no winner columns; predict reads it without labels, training refuses it naming the column */
    o.require_labels = 0;
    CHECK(ds_cls_read(fix("test.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
    CHECK(n == 4 && !x[0].has_label && !x[3].has_label && x[0].probs == NULL && strcmp(x[2].id, "65089") == 0);
    ds_cls_free(x, n);
    o.require_labels = 1;
    CHECK(ds_cls_read(fix("test.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "test.csv:1: missing column 'winner_model_a'") &&
                  strstr(e.msg, "the header has: id, prompt, response_a, response_b"),
              "%s", e.msg);
    CHECK(ds_cls_read(fix("lmsys-missing-col.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "missing column 'winner_tie'"), "%s", e.msg);
    o.require_labels = 0; /* two winner columns of three: still an error */
    CHECK(ds_cls_read(fix("lmsys-missing-col.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);

    /* remapped column names */
    {
        const char *csv = "qid,q,ra,rb,wa,wb,wt\n7,\"[\"\"hi\"\"]\",\"[\"\"a\"\"]\",\"[\"\"b\"\"]\",0,0,1\n";
        ds_cls_opts r = lmsys_opts();
        r.prompt_col = "q", r.response_a_col = "ra", r.response_b_col = "rb", r.id_col = "qid";
        r.winner_cols[0] = "wa", r.winner_cols[1] = "wb", r.winner_cols[2] = "wt";
        CHECK(ds_cls_read(write_tmp("remap.csv", csv), &r, t, &x, &n, &st, &e) == 0);
        CHECK(n == 1 && strcmp(x[0].id, "7") == 0 && x[0].probs[2] == 1.0f);
        ds_cls_free(x, n);
        r = lmsys_opts();
        CHECK(ds_cls_read(write_tmp("remap.csv", csv), &r, t, &x, &n, &st, &e) == FT_EINPUT &&
              strstr(e.msg, "missing column 'prompt'"));
    }

    /* a lone surrogate escape reads as U+FFFD, counted; a proper pair is the emoji */
    {
        const cJSON *exp = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "smollm-135m"), "surrogate");
        CHECK(ds_cls_read(fix("lmsys-surrogate.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
        CHECK(n == 1 && st.surrogates == 1 && ids_equal(&x[0], exp));
        ds_cls_free(x, n);
        /* an escaped backslash before "ud83d" is text; a lone low surrogate and a high one after a pair count */
        const char *csv = LH "1,\"[\"\"a\\\\ud83d b\"\"]\",\"[\"\"\\udc00x\"\"]\",\"[\"\"\\ud83d\\ude00 \\ud83d\"\"]\",1,0,0\n";
        CHECK(ds_cls_read(write_tmp("sur.csv", csv), &o, t, &x, &n, &st, &e) == 0);
        CHECK_MSG(n == 1 && st.surrogates == 2, "%s surrogates %ld", e.msg, st.surrogates);
        if (n == 1) {
            char *txt = NULL;
            CHECK(tok_decode(t, x[0].ids, (size_t)x[0].n, 1, &txt, &e) == 0);
            CHECK_MSG(txt && strstr(txt, "<prompt>: a\\ud83d b\n\n<response_a>: \xEF\xBF\xBDx\n\n<response_b>: "
                                         "\xF0\x9F\x98\x80 \xEF\xBF\xBD"),
                      "%s", txt ? txt : "");
            free(txt);
        }
        ds_cls_free(x, n);
    }

    /* templates that cannot work are refused before reading */
    o = lmsys_opts();
    o.pair_template = "{prompt} {response_a} {response_a}";
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT &&
          strstr(e.msg, "{response_a} appears twice"));
    o.pair_template = "{prompt}: {response_a}";
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT &&
          strstr(e.msg, "needs {response_a} and {response_b}"));
    o.pair_template = "{response_a} vs {response_b} ({other})"; /* no prompt, braces as text: fine */
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0 && n == 12);
    ds_cls_free(x, n);
    o = lmsys_opts();
    o.num_labels = 2;
    CHECK(ds_cls_read(fix("lmsys-sample.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT &&
          strstr(e.msg, "3 labels"));
    ds_cls_layout lay;
    CHECK(ds_cls_layout_parse("lmsys", &lay, &e) == 0 && lay == DS_CLS_LMSYS);
    CHECK(ds_cls_layout_parse("text", &lay, &e) == 0 && lay == DS_CLS_TEXT);
    CHECK(ds_cls_layout_parse("pairs", &lay, &e) == FT_EINPUT && strstr(e.msg, "expected text or lmsys"));

    /* a .json array of the same rows reads as the JSONL does */
    {
        char *data;
        size_t len;
        CHECK(ft_read_file(fix("lmsys-sample.jsonl", path, sizeof path), &data, &len, &e) == 0);
        size_t cap = len + 64, o2 = 0;
        char *arr = malloc(cap);
        arr[o2++] = '[';
        for (char *l = strtok(data, "\n"); l; l = strtok(NULL, "\n")) o2 += (size_t)sprintf(arr + o2, "%s%s\n", o2 > 1 ? "," : "", l);
        arr[o2++] = ']', arr[o2] = 0;
        free(data);
        ds_cls_example *y;
        int m;
        o = lmsys_opts();
        CHECK(ds_cls_read(fix("lmsys-sample.jsonl", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
        CHECK(ds_cls_read(write_tmp("sample.json", arr), &o, t, &y, &m, &st, &e) == 0);
        int same = n == m && n == 12;
        for (int i = 0; same && i < n; i++)
            same = x[i].n == y[i].n && memcmp(x[i].ids, y[i].ids, (size_t)x[i].n * sizeof(int32_t)) == 0 &&
                   strcmp(x[i].id, y[i].id) == 0;
        CHECK(same);
        CHECK(strstr(y[2].where, "sample.json:3") != NULL);
        ds_cls_free(x, n);
        ds_cls_free(y, m);
        free(arr);
    }
    tok_free(t);
}

/* ---------- budgets ---------- */

static int count_id(const ds_cls_example *x, int32_t id) {
    int c = 0;
    for (int i = 0; i < x->n; i++) c += x->ids[i] == id;
    return c;
}

static char *words(const char *w, int n) {
    size_t l = strlen(w) + 1;
    char *s = malloc(l * (size_t)n + 1);
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, " ");
        strcat(s, w);
    }
    return s;
}

static float budget_shares[2]; /* prompt_share, response_share (0: the defaults) */

/* One LMSYS row with np / na / nb words "p" / "x" / "y" (each " p" is one token for SmolLM's byte-level
 * BPE); returns the example, with the counts of each word's token kept. */
static int budget_case(const ft_tokenizer *t, int np, int na, int nb, int max_length, int *kp, int *ka, int *kb,
                       long *truncated, int *total) {
    char *p = words("p", np), *a = words("x", na), *b = words("y", nb);
    size_t cap = strlen(p) + strlen(a) + strlen(b) + 200;
    char *csv = malloc(cap);
    snprintf(csv, cap, "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
                       "1,\"[\"\"%s\"\"]\",\"[\"\"%s\"\"]\",\"[\"\"%s\"\"]\",1,0,0\n", p, a, b);
    ds_cls_opts o = lmsys_opts();
    o.max_length = max_length;
    o.prompt_share = budget_shares[0], o.response_share = budget_shares[1];
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    int rc = ds_cls_read(write_tmp("budget.csv", csv), &o, t, &x, &n, &st, &e);
    free(p), free(a), free(b), free(csv);
    if (rc) return rc;
    int32_t *ids;
    size_t ni;
    int32_t id[3];
    const char *w[3] = {" p", " x", " y"};
    for (int k = 0; k < 3; k++) {
        tok_encode_cont(t, w[k], 2, &ids, &ni, &e);
        id[k] = ni == 1 ? ids[0] : -1;
        free(ids);
    }
    *kp = count_id(&x[0], id[0]), *ka = count_id(&x[0], id[1]), *kb = count_id(&x[0], id[2]);
    *truncated = st.truncated_parts;
    *total = x[0].n;
    ds_cls_free(x, n);
    return 0;
}

static void test_budgets(void) {
    ft_tokenizer *t = load_tok("smollm-135m");
    int kp, ka, kb, total;
    long tr;
    /* untruncated: the template's own tokens + EOS = fixed */
    CHECK(budget_case(t, 10, 20, 30, 0, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK(kp == 10 && ka == 20 && kb == 30 && tr == 0);
    int fixed = total - 60;
    CHECK_MSG(fixed > 5 && fixed < 40, "fixed %d", fixed);
    /* budget 100 = 20/40/40: the prompt needs 10, its unused 10 go to the responses (45 each) */
    CHECK(budget_case(t, 10, 100, 100, fixed + 100, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 10 && ka == 45 && kb == 45 && tr == 2 && total == fixed + 100, "%d %d %d %ld %d", kp, ka, kb, tr,
              total);
    /* a needs 10 of its 40: the other 90 are shared 0.2 : 0.4, 30 and 60 */
    CHECK(budget_case(t, 50, 10, 100, fixed + 100, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 30 && ka == 10 && kb == 60 && tr == 2 && total == fixed + 100, "%d %d %d %ld", kp, ka, kb, tr);
    /* rounding: 101 = 20.2 + 40.4 + 40.4 -> 20 + 40 + 40, the 1 left to the first part cut */
    CHECK(budget_case(t, 100, 100, 100, fixed + 101, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 21 && ka == 40 && kb == 40 && tr == 3 && total == fixed + 101, "%d %d %d %ld", kp, ka, kb, tr);
    /* exactly the budget: nothing cut */
    CHECK(budget_case(t, 10, 20, 30, fixed + 60, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK(kp == 10 && ka == 20 && kb == 30 && tr == 0 && total == fixed + 60);
    /* one token less: b (the longest over its share) loses it */
    CHECK(budget_case(t, 10, 20, 30, fixed + 59, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 10 && ka == 20 && kb == 29 && tr == 1 && total == fixed + 59, "%d %d %d", kp, ka, kb);
    /* a budget the template alone fills is a setup error */
    CHECK(budget_case(t, 1, 1, 1, fixed, &kp, &ka, &kb, &tr, &total) == FT_EINPUT);
    /* other shares: 0.5 / 0.25 / 0.25 of 100 */
    budget_shares[0] = 0.5f, budget_shares[1] = 0.25f;
    CHECK(budget_case(t, 100, 100, 100, fixed + 100, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 50 && ka == 25 && kb == 25 && tr == 3, "%d %d %d", kp, ka, kb);
    /* only the ratio matters: 0.1 / 0.05 is the same split */
    budget_shares[0] = 0.1f, budget_shares[1] = 0.05f;
    CHECK(budget_case(t, 100, 100, 100, fixed + 100, &kp, &ka, &kb, &tr, &total) == 0);
    CHECK_MSG(kp == 50 && ka == 25 && kb == 25, "%d %d %d", kp, ka, kb);
    budget_shares[0] = budget_shares[1] = 0;

    /* text layout: the text keeps its start; max_length counts EOS */
    ds_cls_opts o = {0};
    o.layout = DS_CLS_TEXT;
    o.num_labels = 2;
    o.add_eos = 1;
    o.require_labels = 1;
    ds_cls_example *x, *y;
    int n, m;
    ds_cls_stats st;
    ft_error e;
    const char *f = write_tmp("long.jsonl", "{\"text\": \"one two three four five six seven eight nine ten\", "
                                            "\"label\": 1}\n");
    CHECK(ds_cls_read(f, &o, t, &x, &n, &st, &e) == 0 && st.truncated_parts == 0);
    o.max_length = 5;
    CHECK(ds_cls_read(f, &o, t, &y, &m, &st, &e) == 0 && st.truncated_parts == 1);
    CHECK(y[0].n == 5 && memcmp(y[0].ids, x[0].ids, 4 * sizeof(int32_t)) == 0 && y[0].ids[4] == tok_eos_id(t));
    ds_cls_free(x, n);
    ds_cls_free(y, m);
    tok_free(t);

    /* SentencePiece (Llama 2): BOS counts too */
    t = load_tok("llama-2");
    o.max_length = 4;
    CHECK(ds_cls_read(f, &o, t, &y, &m, &st, &e) == 0);
    CHECK(y[0].n == 4 && y[0].ids[0] == tok_bos_id(t) && y[0].ids[3] == tok_eos_id(t));
    ds_cls_free(y, m);
    tok_free(t);
}

/* ---------- swap half ---------- */

static void test_swap_half(void) {
    ft_tokenizer *t = load_tok("smollm-135m");
    size_t cap = 400 * 120 + 200, len = 0;
    char *csv = malloc(cap);
    len += (size_t)snprintf(csv + len, cap - len,
                            "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n");
    for (int i = 0; i < 400; i++)
        len += (size_t)snprintf(csv + len, cap - len, "%d,\"[\"\"q%d\"\"]\",\"[\"\"A%d\"\"]\",\"[\"\"B%d\"\"]\",%d,%d,%d\n",
                                i, i, i, i, i % 3 == 0, i % 3 == 1, i % 3 == 2);
    const char *f = write_tmp("swap.csv", csv);
    free(csv);
    ds_cls_opts o = lmsys_opts();
    ds_cls_example *none, *all, *h1, *h2, *h3;
    int n0, n1, n2, n3, n4;
    ds_cls_stats st, s1, s2, s3;
    ft_error e;
    CHECK(ds_cls_read(f, &o, t, &none, &n0, &st, &e) == 0);
    o.swap = DS_CLS_SWAP_ALL;
    CHECK(ds_cls_read(f, &o, t, &all, &n1, &st, &e) == 0);
    o.swap = DS_CLS_SWAP_HALF;
    o.seed = 42;
    CHECK(ds_cls_read(f, &o, t, &h1, &n2, &s1, &e) == 0);
    CHECK(ds_cls_read(f, &o, t, &h2, &n3, &s2, &e) == 0);
    o.seed = 43;
    CHECK(ds_cls_read(f, &o, t, &h3, &n4, &s3, &e) == 0);
    CHECK(n0 == 400 && n1 == 400 && n2 == 400 && n3 == 400 && n4 == 400);
    CHECK_MSG(s1.swapped > 160 && s1.swapped < 240, "swapped %ld of 400", s1.swapped); /* ~half: 5 sigma */
    int same = 1, differ = 0, consistent = 1;
    long counted = 0;
    for (int i = 0; i < 400; i++) {
        same &= h1[i].swapped == h2[i].swapped;
        differ += h1[i].swapped != h3[i].swapped;
        counted += h1[i].swapped;
        const ds_cls_example *ref = h1[i].swapped ? &all[i] : &none[i];
        consistent &= ref->n == h1[i].n && memcmp(ref->ids, h1[i].ids, (size_t)ref->n * sizeof(int32_t)) == 0 &&
                      memcmp(ref->probs, h1[i].probs, 3 * sizeof(float)) == 0;
    }
    CHECK(same && s1.swapped == s2.swapped && counted == s1.swapped); /* seeded */
    CHECK_MSG(differ > 100, "another seed changed %d rows", differ);
    CHECK(consistent); /* a swapped row is exactly the swap-all row, labels included */
    /* a swapped row's label: a <-> b, tie stays */
    CHECK(all[0].probs[1] == 1.0f && all[1].probs[0] == 1.0f && all[2].probs[2] == 1.0f);
    ds_cls_free(none, n0), ds_cls_free(all, n1), ds_cls_free(h1, n2), ds_cls_free(h2, n3), ds_cls_free(h3, n4);
    /* swapping is for pairs */
    ds_cls_opts tx = {0};
    tx.num_labels = 2, tx.swap = DS_CLS_SWAP_HALF;
    CHECK(ds_cls_read(f, &tx, t, &none, &n0, &st, &e) == FT_EINPUT && strstr(e.msg, "lmsys"));
    tok_free(t);
}

/* ---------- text layout ---------- */

static void test_text(void) {
    char path[1024];
    static const char *names[2] = {"neg", "pos"};
    ds_cls_opts o = {0};
    o.layout = DS_CLS_TEXT;
    o.num_labels = 2;
    o.labels = names;
    o.add_eos = 1;
    o.require_labels = 1;
    static const float want[5][2] = {{0, 1}, {1, 0}, {0.3f, 0.7f}, {0, 1}, {1, 0}};
    for (int k = 0; k < 3; k++) {
        ft_tokenizer *t = load_tok(TOKS[k]);
        const cJSON *exp = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, TOKS[k]), "text");
        for (int csv = 0; csv < 2; csv++) {
            ds_cls_opts oo = o;
            if (csv) oo.text_field = "sentence", oo.label_field = "y";
            ds_cls_example *x;
            int n;
            ds_cls_stats st;
            ft_error e;
            int rc = ds_cls_read(fix(csv ? "text.csv" : "text.jsonl", path, sizeof path), &oo, t, &x, &n, &st, &e);
            CHECK_MSG(rc == 0, "%s", e.msg);
            if (rc) continue;
            CHECK(n == 5 && st.rows == 5);
            for (int i = 0; i < n; i++) {
                CHECK_MSG(ids_equal(&x[i], cJSON_GetArrayItem(exp, i)), "%s text row %d", TOKS[k], i);
                CHECK(x[i].has_label && fabsf(x[i].probs[0] - want[i][0]) < 1e-6f &&
                      fabsf(x[i].probs[1] - want[i][1]) < 1e-6f);
            }
            char id[16];
            snprintf(id, sizeof id, csv ? "3" : "t3");
            CHECK(strcmp(x[3].id, id) == 0); /* the id field, else the row number */
            ds_cls_free(x, n);
        }
        tok_free(t);
    }
    ft_tokenizer *t = load_tok("smollm-135m");
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    /* regression */
    ds_cls_opts r = o;
    r.num_labels = 1, r.labels = NULL;
    CHECK(ds_cls_read(fix("regression.jsonl", path, sizeof path), &r, t, &x, &n, &st, &e) == 0);
    CHECK(n == 3 && x[0].probs == NULL && x[0].value == 1.5f && x[1].value == -0.25f && x[2].value == 20.0f);
    ds_cls_free(x, n);
    /* without names, labels must be indices */
    r = o;
    r.labels = NULL;
    CHECK(ds_cls_read(fix("text.jsonl", path, sizeof path), &r, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "text.jsonl:1: field 'label': label 'pos' is not an index"), "%s", e.msg);
    /* no label column: accepted for prediction only */
    r = o;
    r.require_labels = 0, r.label_field = "nolabel";
    CHECK(ds_cls_read(fix("text.jsonl", path, sizeof path), &r, t, &x, &n, &st, &e) == 0 && n == 5 && !x[0].has_label);
    ds_cls_free(x, n);
    r.require_labels = 1;
    CHECK(ds_cls_read(fix("text.jsonl", path, sizeof path), &r, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "text.jsonl:1: missing field 'nolabel'"), "%s", e.msg);
    /* CSV: a missing text or label column is named at the header; an id column named in the recipe must exist */
    r = o;
    CHECK(ds_cls_read(fix("text.csv", path, sizeof path), &r, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "text.csv:1: missing column 'text' (the text); the header has: sentence, y"), "%s", e.msg);
    r.text_field = "sentence";
    CHECK(ds_cls_read(fix("text.csv", path, sizeof path), &r, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "missing column 'label' (the label)"), "%s", e.msg);
    r.label_field = "y", r.id_field = "uid";
    CHECK(ds_cls_read(fix("text.csv", path, sizeof path), &r, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "missing column 'uid' (the id)"), "%s", e.msg);
    /* add_eos off: the text's ids and nothing after them (SmolLM has no BOS) */
    r = o;
    r.add_eos = 0;
    CHECK(ds_cls_read(fix("text.jsonl", path, sizeof path), &r, t, &x, &n, &st, &e) == 0);
    {
        const cJSON *exp = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "smollm-135m"), "text"), 0);
        CHECK(x[0].n == cJSON_GetArraySize(exp) - 1 && x[0].ids[x[0].n - 1] != tok_eos_id(t));
    }
    ds_cls_free(x, n);
    tok_free(t);
}

/* ---------- bad rows ---------- */

static void expect_bad(const ft_tokenizer *t, const ds_cls_opts *o, const char *name, const char *content,
                       const char *msg) {
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    int rc = ds_cls_read(write_tmp(name, content), o, t, &x, &n, &st, &e);
    CHECK_MSG(rc == FT_EINPUT && strstr(e.msg, msg), "%s: rc %d, '%s', expected '%s'", name, rc, e.msg, msg);
    if (!rc) ds_cls_free(x, n);
}

static void test_bad(void) {
    char path[1024];
    ft_tokenizer *t = load_tok("smollm-135m");
    ds_cls_opts o = lmsys_opts();
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    /* skip: every bad row counted, rows == examples + skipped */
    o.on_bad = DS_BAD_SKIP;
    CHECK(ds_cls_read(fix("lmsys-bad.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == 0);
    CHECK_MSG(n == 2 && st.rows == 7 && st.examples == 2 && st.skipped == 5 && st.rows == st.examples + st.skipped,
              "n %d rows %ld skipped %ld", n, st.rows, st.skipped);
    CHECK_MSG(strstr(st.first_skip, "lmsys-bad.csv:3:10: column 'prompt': unparsable JSON list"), "%s", st.first_skip);
    CHECK(n == 2 && strcmp(x[0].id, "53567") == 0 && strcmp(x[1].id, "65089") == 0);
    ds_cls_free(x, n);
    /* fail: the first bad row ends the read */
    o.on_bad = DS_BAD_FAIL;
    CHECK(ds_cls_read(fix("lmsys-bad.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "lmsys-bad.csv:3:10: column 'prompt': unparsable JSON list"), "%s", e.msg);
    /* each kind, alone */
    expect_bad(t, &o, "b1.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,1,0\n",
               "b1.csv:2: label not one-hot: winner_model_a = 1, winner_model_b = 1, winner_tie = 0");
    expect_bad(t, &o, "b2.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",0,0,0\n", "b2.csv:2: label not one-hot");
    expect_bad(t, &o, "b3.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,2\n",
               "b3.csv:2:37: column 'winner_tie': label not one-hot");
    expect_bad(t, &o, "b4.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",yes,0,0\n",
               "b4.csv:2:33: column 'winner_model_a': expected 0 or 1");
    expect_bad(t, &o, "b5.csv", LH "1,\"[\"\"p\"\"]\",\"[1]\",\"[\"\"y\"\"]\",1,0,0\n",
               "b5.csv:2:13: column 'response_a': turn 0 is neither a string nor null");
    expect_bad(t, &o, "b6.csv", LH "1,\"{\"\"p\"\": 1}\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,0\n",
               "b6.csv:2:3: column 'prompt': expected a JSON list of turns");
    expect_bad(t, &o, "b7.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0\n",
               "b7.csv:2: the record has 6 fields, the header has 7 columns");
    expect_bad(t, &o, "b8.csv", LH "1,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",,0,0\n",
               "b8.csv:2:33: column 'winner_model_a': empty");
    expect_bad(t, &o, "b9.csv", LH "1,\"[\"\"\xff\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,0\n",
               "b9.csv:2:3: column 'prompt': invalid UTF-8 at byte 0");
    /* a multi-line record: the line where it starts, the column of the field */
    expect_bad(t, &o, "b10.csv", LH "1,\"[\n\"\"p\"\"]\",\"[\"\"x\"\"]\n\",\"[\"\"y\"\"\",1,0,0\n",
               "b10.csv:4:3: column 'response_b': unparsable JSON list");
    expect_bad(t, &o, "b11.jsonl", "{\"prompt\": [\"p\"], \"response_a\": [\"x\"], \"response_b\": \"[oops\", "
                                   "\"winner_model_a\": 1, \"winner_model_b\": 0, \"winner_tie\": 0}\n",
               "b11.jsonl:1: field 'response_b': unparsable JSON list");
    expect_bad(t, &o, "b12.jsonl", "{\"prompt\": [\"p\"], \"response_a\": [\"x\"], \"winner_model_a\": 1}\n",
               "b12.jsonl:1: missing field 'response_b'");
    /* structural damage ends the file whatever the policy */
    o.on_bad = DS_BAD_SKIP;
    CHECK(ds_cls_read(fix("lmsys-badquote.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "lmsys-badquote.csv:3:7: malformed CSV quoting"), "%s", e.msg);
    CHECK(ds_cls_read(fix("lmsys-unclosed.csv", path, sizeof path), &o, t, &x, &n, &st, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "lmsys-unclosed.csv:3:3: a quoted field is not closed"), "%s", e.msg);
    expect_bad(t, &o, "hdr.csv", LH, "hdr.csv: no data rows after the CSV header");

    /* the text layout's bad rows */
    static const char *names[2] = {"neg", "pos"};
    ds_cls_opts tx = {0};
    tx.layout = DS_CLS_TEXT, tx.num_labels = 2, tx.labels = names, tx.add_eos = 1, tx.require_labels = 1;
    tx.on_bad = DS_BAD_SKIP;
    CHECK(ds_cls_read(fix("text-bad.jsonl", path, sizeof path), &tx, t, &x, &n, &st, &e) == 0);
    CHECK(n == 2 && st.rows == 7 && st.skipped == 5 && st.rows == st.examples + st.skipped);
    CHECK_MSG(strstr(st.first_skip, "text-bad.jsonl:2: field 'label': label 'meh' is not one of: neg, pos"), "%s",
              st.first_skip);
    ds_cls_free(x, n);
    tx.on_bad = DS_BAD_FAIL;
    expect_bad(t, &tx, "t1.jsonl", "{\"text\": \"x\", \"label\": 2}\n", "t1.jsonl:1: field 'label': label 2 is not an index in [0, 2)");
    expect_bad(t, &tx, "t2.jsonl", "{\"text\": \"x\", \"label\": [0.5, 0.6]}\n", "soft label: the probabilities sum to 1.1");
    expect_bad(t, &tx, "t3.jsonl", "{\"text\": \"x\", \"label\": [1]}\n", "soft label has 1 probabilities, expected num_labels = 2");
    expect_bad(t, &tx, "t4.jsonl", "{\"text\": 5, \"label\": 1}\n", "t4.jsonl:1: field 'text': expected a string");
    expect_bad(t, &tx, "t5.jsonl", "[1, 2]\n", "t5.jsonl:1: expected a JSON object per record");
    expect_bad(t, &tx, "t6.jsonl", "{bad\n", "t6.jsonl:1: malformed JSON");
    expect_bad(t, &tx, "t7.csv", "text,label\nhello,maybe\n", "t7.csv:2:7: column 'label': label 'maybe' is not one of: neg, pos");
    expect_bad(t, &tx, "t8.csv", "text,label\nhello,\n", "t8.csv:2:7: column 'label': empty");
    tx.num_labels = 1, tx.labels = NULL;
    expect_bad(t, &tx, "t9.jsonl", "{\"text\": \"x\", \"label\": \"high\"}\n", "expected a number (regression");
    tok_free(t);
}

int main(void) {
    char path[1024], *json;
    size_t len;
    ft_error e;
    if (ft_read_file(fix("expected.json", path, sizeof path), &json, &len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    expected = cJSON_Parse(json);
    free(json);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_classify_data.%d", (int)getpid());
    if (ft_mkdir_p(tmpdir, &e)) return 1;
    test_csv();
    test_csv_large();
    test_encode_cont();
    test_lmsys();
    test_budgets();
    test_swap_half();
    test_text();
    test_bad();
    cJSON_Delete(expected);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_DONE();
}
