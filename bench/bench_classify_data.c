/* bench_classify_data: reading a classification dataset into examples (datasets/classify), one thread.
 *   bench_classify_data TOKENIZER_DIR FILE [--layout lmsys|text] [--max-length N] [--repeat N]
 * Reads FILE (CSV, JSONL, ...) N times (default 3) as ds_cls_read does for `finetune classify` (default
 * template, EOS, swap none) and prints rows/s and tokens/s for the best pass. Compare with
 * bench/classify_data_hf.py, which does the same with pandas, json and HF tokenizers (bench/README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/classify.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_classify_data TOKENIZER_DIR FILE [--layout lmsys|text] [--max-length N] "
                        "[--repeat N]\n");
        return 2;
    }
    ds_cls_opts o = {0};
    o.layout = DS_CLS_LMSYS;
    o.add_eos = 1;
    o.require_labels = 0;
    o.on_bad = DS_BAD_SKIP;
    int repeat = 3;
    ft_error e = {0};
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--layout") == 0 && i + 1 < argc) {
            if (ds_cls_layout_parse(argv[++i], &o.layout, &e)) {
                fprintf(stderr, "bench_classify_data: %s\n", e.msg);
                return 2;
            }
        } else if (strcmp(argv[i], "--max-length") == 0 && i + 1 < argc) {
            o.max_length = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else {
            fprintf(stderr, "bench_classify_data: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    o.num_labels = o.layout == DS_CLS_LMSYS ? 3 : 2;
    ft_tokenizer *t = NULL;
    if (tok_load(argv[1], &t, &e)) {
        fprintf(stderr, "bench_classify_data: %s\n", e.msg);
        return e.code;
    }
    double best = 1e30;
    long tokens = 0;
    ds_cls_stats st = {0};
    for (int r = 0; r < (repeat < 1 ? 1 : repeat); r++) {
        ds_cls_example *x;
        int n;
        double t0 = ft_now();
        if (ds_cls_read(argv[2], &o, t, &x, &n, &st, &e)) {
            fprintf(stderr, "bench_classify_data: %s\n", e.msg);
            tok_free(t);
            return e.code;
        }
        double s = ft_now() - t0;
        if (s < best) best = s;
        tokens = 0;
        for (int i = 0; i < n; i++) tokens += x[i].n;
        ds_cls_free(x, n);
    }
    printf("rows %ld examples %ld skipped %ld tokens %ld truncated_parts %ld best %.3f s: %.0f rows/s, %.2f M tokens/s\n",
           st.rows, st.examples, st.skipped, tokens, st.truncated_parts, best, st.rows / best, tokens / best / 1e6);
    tok_free(t);
    return 0;
}
