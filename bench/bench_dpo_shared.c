/* bench_dpo_shared: DPO's shared-prompt layout against TRL's [chosen; rejected] layout, on the same pairs
 * and the same model: tokens processed per epoch and the time of a training micro-batch (forward with
 * log-probs, the SimPO loss, backward of every parameter) and of a reference pass (forward only).
 *   bench_dpo_shared RECIPE.json [key=value ...] [--reps R]
 * The recipe is a `finetune dpo` recipe (model or model_init, data, format, template, tokenizer,
 * max_length, batch_size, device); the pairs are read and truncated as `finetune dpo` does, then the
 * micro-batches of one epoch (in file order) run in both layouts, alternating, R times (default 3); the
 * best time of each is reported with the ratios. Numbers, never assertions (bench/README.md).
 * Without arguments it prints this usage and exits 0 (tests/gpu/run.sh runs every bench_* bare). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpo/dpo_batch.h"
#include "finetune/cli/cli.h"

static const char HELP[] = "usage: bench_dpo_shared RECIPE.json [key=value ...] [--reps R]\n"
                           "  DPO micro-batches in the shared-prompt layout vs TRL's layout: tokens and step time\n"
                           "  (bench/dpo_shared_cpu.sh runs it on orca_dpo_pairs rows)\n";

/* Seconds for one epoch of micro-batches: forward (+ loss and backward when g is given). */
static double epoch_time(ft_model *m, ft_weights *g, const ds_batch *b, int nb, int n_pairs, ft_error *e) {
    dpo_config cfg;
    dpo_config_default(&cfg, DPO_SIMPO);
    double t0 = ft_now();
    for (int i = 0; i < nb; i++) {
        float *logp = ft_xmalloc((size_t)b[i].n_tokens * 4), *dlogp = ft_xmalloc((size_t)b[i].n_tokens * 4);
        double loss = 0;
        int rc = g ? model_forward_train_excl(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].excl_start,
                                              b[i].excl_end, b[i].targets, logp, e)
                   : model_forward_excl(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].excl_start,
                                        b[i].excl_end, b[i].targets, logp, e);
        if (!rc && g)
            rc = dpo_batch_loss(&cfg, &b[i], logp, NULL, NULL, (double)(b[i].n_samples / 2) / n_pairs, dlogp, &loss,
                                NULL, e);
        if (!rc && g) rc = model_backward(m, dlogp, g, e);
        free(logp);
        free(dlogp);
        if (rc) return -1;
    }
    m->b->sync(m->b);
    return ft_now() - t0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(HELP, stdout);
        return 0;
    }
    int reps = 3, n = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args); /* argv without --reps R */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else args[n++] = argv[i];
    }
    job_args a;
    int exit_now = cli_parse_job_args("bench_dpo_shared", HELP, n, args, &a);
    if (exit_now >= 0 || reps < 1) {
        free(args);
        return exit_now >= 0 ? exit_now : 2;
    }
    ft_error e = {0};
    rcp *r = NULL;
    ft_job j;
    memset(&j, 0, sizeof j);
    ds_pref_example *pairs = NULL;
    int np = 0, cap = 0;
    ds_example_stats st = {0};
    int rc = job_load_recipe(&a, &r, &e);
    if (!rc) rc = job_read_common(r, &j, 0, &e);
    if (!rc) rc = job_setup_data(&j, r, &e);
    for (size_t f = 0; !rc && f < j.n_data; f++) { /* as cli/dpo.c's read_pairs */
        ds_dataset *d = NULL;
        rc = ds_open(j.data[f], j.format, j.on_bad, &d, &e);
        while (!rc) {
            ds_pref p;
            int done = 0, kept = 0;
            rc = ds_next_pref(d, &p, &done, &e);
            if (rc || done) break;
            if (np == cap) pairs = ft_xrealloc(pairs, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *pairs);
            rc = ds_build_pref_example(j.tmpl, &p, j.tok, &j.ex, &pairs[np], &kept, &st, &e);
            ds_pref_free(&p);
            np += kept;
        }
        if (d) ds_close(d);
    }
    if (!rc && np == 0) rc = ft_fail(&e, FT_EINPUT, "%s: no preference pairs", a.recipe);
    if (!rc) rc = job_setup_model(&j, &e);
    ft_weights g = {0};
    if (!rc) rc = grads_create(j.model, NULL, NULL, &g, &e);
    dpo_layout lay[2] = {{0, 0}, {1, 0}};
    if (!rc) lay[1].span_limit = dpo_shared_span_limit(&j.model->cfg, 0);
    ds_batch *b[2] = {NULL, NULL};
    int nb[2] = {0, 0};
    long tokens[2] = {0, 0}, prompt = 0, completion = 0;
    double best_train[2] = {1e30, 1e30}, best_fwd[2] = {1e30, 1e30};
    int *order = ft_xmalloc((size_t)(np ? np : 1) * sizeof(int));
    for (int i = 0; i < np; i++) {
        order[i] = i;
        prompt += pairs[i].n_prompt;
        completion += pairs[i].n_chosen + pairs[i].n_rejected;
    }
    for (int k = 0; !rc && k < 2; k++) {
        dpo_build_batches(pairs, order, np, j.batch_size, &lay[k], &b[k], &nb[k]);
        for (int i = 0; i < nb[k]; i++) tokens[k] += b[k][i].n_tokens;
    }
    if (!rc) {
        fprintf(stderr, "%d pairs (%ld truncated), batch_size %d, %d micro-batches; mean prompt %.1f tokens, "
                "mean reply %.1f\n", np, st.truncated, j.batch_size, nb[0], (double)prompt / np,
                (double)completion / (2.0 * np));
        rc = epoch_time(j.model, &g, b[1], nb[1], np, &e) < 0; /* warm-up: first touch of the arena */
    }
    for (int rep = 0; !rc && rep < reps; rep++)
        for (int k = 0; !rc && k < 2; k++) {
            double t = epoch_time(j.model, &g, b[k], nb[k], np, &e);
            double f = t < 0 ? -1 : epoch_time(j.model, NULL, b[k], nb[k], np, &e);
            if (t < 0 || f < 0) rc = 1;
            else {
                if (t < best_train[k]) best_train[k] = t;
                if (f < best_fwd[k]) best_fwd[k] = f;
            }
        }
    if (!rc) {
        printf("| layout | tokens per epoch | train s/epoch (best of %d) | ms per micro-batch | reference pass "
               "s/epoch |\n", reps);
        printf("|---|---|---|---|---|\n");
        const char *names[2] = {"TRL [chosen; rejected]", "shared prompt"};
        for (int k = 0; k < 2; k++)
            printf("| %s | %ld | %.3f | %.1f | %.3f |\n", names[k], tokens[k], best_train[k],
                   1e3 * best_train[k] / nb[k], best_fwd[k]);
        printf("\nshared prompt vs TRL's layout: %.2fx fewer tokens, training %.2fx faster, reference pass %.2fx "
               "faster\n", (double)tokens[0] / tokens[1], best_train[0] / best_train[1], best_fwd[0] / best_fwd[1]);
    }
    for (int k = 0; k < 2; k++) ds_batches_free(b[k], nb[k]);
    if (j.model) grads_free(j.model, &g);
    for (int i = 0; i < np; i++) ds_pref_example_free(&pairs[i]);
    free(pairs);
    free(order);
    job_free(&j);
    rcp_free(r);
    free(args);
    if (rc) {
        fprintf(stderr, "bench_dpo_shared: %s\n", e.msg[0] ? e.msg : "failed");
        return 1;
    }
    return 0;
}
