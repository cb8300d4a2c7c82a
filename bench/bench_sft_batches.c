/* bench_sft_batches: print the exact micro-batches `finetune sft` trains on, as JSON lines, so that the
 * Python side of bench/train_cpu.sh and bench/train_gpu.sh trains on the same tokens in the same order.
 *   bench_sft_batches RECIPE.json [key=value ...] --epochs K
 * One line per micro-batch of epochs 0..K-1: {"epoch", "rows", "row_len", "ids", "targets", "pos",
 * "doc_start"} (datasets/batch.h). It reads the data as cli_sft.c does (eval_fraction must be 0: the
 * benchmark holds nothing out) and plans each epoch with cli_sft.c's seed rule (seed + epoch * 1000003).
 * Without arguments it prints this usage and exits 0 (tests/gpu/run.sh runs every bench_* bare). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"

static const char HELP[] = "usage: bench_sft_batches RECIPE.json [key=value ...] --epochs K\n"
                           "  prints the packed micro-batches finetune sft would train on, one JSON line each\n"
                           "  (a helper of bench/train_cpu.sh and bench/train_gpu.sh)\n";

static void put_array(const char *name, const int32_t *v, int n) {
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)v[i]);
    putchar(']');
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(HELP, stdout);
        return 0;
    }
    int epochs = 1, n = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args); /* argv without --epochs K */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--epochs") == 0 && i + 1 < argc) epochs = atoi(argv[++i]);
        else args[n++] = argv[i];
    }
    if (epochs < 1) {
        fprintf(stderr, "bench_sft_batches: --epochs must be >= 1\n");
        free(args);
        return 2;
    }
    job_args a;
    int exit_now = cli_parse_job_args("bench_sft_batches", HELP, n, args, &a);
    if (exit_now >= 0) {
        free(args);
        return exit_now;
    }
    ft_error e = {0};
    rcp *r = NULL;
    ft_job j;
    memset(&j, 0, sizeof j);
    ds_example *ex = NULL;
    int n_ex = 0, cap = 0;
    ds_example_stats st = {0};
    int rc = job_load_recipe(&a, &r, &e);
    if (!rc) rc = job_read_common(r, &j, 0, &e);
    if (!rc) rc = job_setup_data(&j, r, &e);
    if (!rc && j.eval_fraction > 0)
        rc = ft_fail(&e, FT_EINPUT, "%s: eval_fraction must be 0 for the benchmark (its batches would differ)", a.recipe);
    if (!rc && !j.packing) rc = ft_fail(&e, FT_EINPUT, "%s: the benchmark needs packing=true", a.recipe);
    for (size_t f = 0; !rc && f < j.n_data; f++) { /* as cli_sft.c's read_examples */
        ds_dataset *d = NULL;
        rc = ds_open(j.data[f], j.format, j.on_bad, &d, &e);
        while (!rc) {
            ds_conv c;
            int done = 0, kept = 0;
            rc = ds_next_conv(d, &c, &done, &e);
            if (rc || done) break;
            if (n_ex == cap) {
                cap = cap ? cap * 2 : 256;
                ex = ft_xrealloc(ex, (size_t)cap * sizeof *ex);
            }
            rc = ds_build_example(j.tmpl, &c, j.tok, &j.ex, &ex[n_ex], &kept, &st, &e);
            ds_conv_free(&c);
            n_ex += kept;
        }
        if (d) ds_close(d);
    }
    int32_t pad = 0;
    if (!rc) {
        int32_t p = tok_token_id(j.tok, "<pad>");
        pad = p >= 0 ? p : (tok_eos_id(j.tok) >= 0 ? tok_eos_id(j.tok) : 0);
    }
    for (int ep = 0; !rc && ep < epochs; ep++) {
        ds_batch *b = NULL;
        int nb = 0;
        uint64_t seed = j.train.seed + (uint64_t)ep * 1000003ULL;
        rc = ds_batches_packed(ex, n_ex, j.ex.max_length, j.batch_size, seed, pad, &b, &nb, &e);
        for (int i = 0; !rc && i < nb; i++) {
            printf("{\"epoch\":%d,\"rows\":%d,\"row_len\":%d,", ep, b[i].rows, b[i].row_len);
            put_array("ids", b[i].ids, b[i].n_tokens);
            putchar(',');
            put_array("targets", b[i].targets, b[i].n_tokens);
            putchar(',');
            put_array("pos", b[i].pos, b[i].n_tokens);
            putchar(',');
            put_array("doc_start", b[i].doc_start, b[i].n_tokens);
            puts("}");
        }
        ds_batches_free(b, nb);
    }
    for (int i = 0; i < n_ex; i++) ds_example_free(&ex[i]);
    free(ex);
    job_free(&j);
    rcp_free(r);
    free(args);
    if (rc) {
        fprintf(stderr, "bench_sft_batches: %s\n", e.msg);
        return rc;
    }
    return 0;
}
