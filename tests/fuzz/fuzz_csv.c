/* libFuzzer: CSV and classification data. The input is read by the CSV reader (datasets/csv) from memory:
 * every record it hands out has the header's field count, NUL-terminated fields and positions that never
 * go backwards; an error it can continue from leaves it at the next record. The same bytes are then read
 * as a classification dataset (datasets/classify), as .csv in the LMSYS and text layouts and as .jsonl in
 * the LMSYS layout, under the skip policy, with a SentencePiece (llama-2) and a byte-level (smollm)
 * tokenizer; byte 0 picks max_length, the swap mode and whether labels are required. What is read must
 * keep the contract: rows == examples + skipped, no example over max_length, each ending with EOS, one-hot
 * or soft targets summing to 1. Never a crash, a leak or undefined behaviour. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets/classify.h"
#include "datasets/csv.h"

static ft_tokenizer *toks[2];
static int ntoks = -1;

static void load_tokenizers(void) {
    ntoks = 0;
    /* this file is tests/fuzz/fuzz_csv.c in the source tree: the committed assets are beside it */
    char root[1024];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *cut = strstr(root, "tests/fuzz/");
    if (!cut) return;
    *cut = 0;
    const char *names[] = {"llama-2", "smollm-135m"};
    for (int i = 0; i < 2; i++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%stests/fixtures/assets/tokenizers/%s", root, names[i]);
        ft_error e;
        if (tok_load(dir, &toks[ntoks], &e) == 0) ntoks++;
        else fprintf(stderr, "fuzz_csv: %s\n", e.msg);
    }
}

static void csv_records(const uint8_t *data, size_t size) {
    ds_csv *r;
    ft_error e;
    if (ds_csv_open_mem(data, size, "fuzz.csv", &r, &e)) return;
    long last = 0;
    for (int guard = 0; guard < 100000; guard++) {
        const ds_csv_row *row;
        int rc = ds_csv_next(r, &row, &e);
        if (rc) {
            if (!ds_csv_can_continue(r)) break;
            continue;
        }
        if (!row) break;
        if (row->n != ds_csv_ncols(r) || row->line < last || row->line < 1) abort();
        last = row->line;
        for (int i = 0; i < row->n; i++) {
            const ds_csv_field *f = &row->f[i];
            if (f->s[f->len] != 0 || f->line < row->line || f->col < 1) abort();
            if (i && (f->line < row->f[i - 1].line || (f->line == row->f[i - 1].line && f->col <= row->f[i - 1].col)))
                abort();
        }
    }
    ds_csv_close(r);
}

static void classify(const char *path, ds_cls_layout layout, uint8_t flags, const ft_tokenizer *t) {
    static const char *names[2] = {"neg", "pos"};
    ds_cls_opts o = {0};
    o.layout = layout;
    o.num_labels = layout == DS_CLS_LMSYS ? 3 : 2;
    o.labels = layout == DS_CLS_LMSYS ? NULL : names;
    o.max_length = (flags & 3) == 0 ? 0 : (flags & 3) == 1 ? 32 : 96;
    o.add_eos = 1;
    o.swap = layout == DS_CLS_LMSYS ? (ds_cls_swap)((flags >> 2) % 3) : DS_CLS_SWAP_NONE;
    o.seed = flags;
    o.require_labels = (flags >> 4) & 1;
    o.on_bad = DS_BAD_SKIP;
    ds_cls_example *x;
    int n;
    ds_cls_stats st;
    ft_error e;
    if (ds_cls_read(path, &o, t, &x, &n, &st, &e)) return;
    if (st.rows != st.examples + st.skipped || st.examples != n) abort();
    for (int i = 0; i < n; i++) {
        if (x[i].n < 1 || (o.max_length > 0 && x[i].n > o.max_length)) abort();
        if (x[i].ids[x[i].n - 1] != tok_eos_id(t)) abort();
        for (int k = 0; k < x[i].n; k++)
            if (x[i].ids[k] < 0 || x[i].ids[k] >= tok_vocab_size(t)) abort();
        if (o.require_labels && !x[i].has_label) abort();
        if (x[i].has_label) {
            double s = 0;
            for (int k = 0; k < o.num_labels; k++) s += x[i].probs[k];
            if (fabs(s - 1) > 1e-3) abort();
        }
    }
    ds_cls_free(x, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (ntoks < 0) load_tokenizers();
    csv_records(data, size);
    if (size < 1 || ntoks == 0) return 0;
    uint8_t flags = data[0];
    char path[2][64];
    snprintf(path[0], sizeof path[0], "/tmp/fuzz_csv_%d.csv", (int)getpid());
    snprintf(path[1], sizeof path[1], "/tmp/fuzz_csv_%d.jsonl", (int)getpid());
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path[k], "wb");
        if (!f) return 0;
        fwrite(data + 1, 1, size - 1, f);
        fclose(f);
    }
    const ft_tokenizer *t = toks[(flags >> 5) % ntoks];
    classify(path[0], DS_CLS_LMSYS, flags, t);
    classify(path[0], DS_CLS_TEXT, flags, t);
    classify(path[1], DS_CLS_LMSYS, flags, t);
    remove(path[0]);
    remove(path[1]);
    return 0;
}
