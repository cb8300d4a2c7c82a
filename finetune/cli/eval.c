/* finetune eval: score a model (optionally with a LoRA adapter) on a dataset.
 *
 * Conversations: the mean negative log-likelihood per trained (assistant) token and its perplexity,
 * exactly the loss `finetune sft` trains. Preference pairs: how often the model gives the chosen reply
 * a higher log-probability than the rejected one (summed, and per token), and the mean margins. One
 * JSON object on stdout; the data summary on stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "datasets/dataset.h"
#include "datasets/example.h"
#include "datasets/template.h"
#include "dpo/dpo_batch.h"
#include "lora/lora.h"
#include "finetune/model/model.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/model/modelpath.h"

static const char EVAL_HELP[] =
    "usage: finetune eval MODEL_DIR --data FILE [--template auto|T] [--format F] [--tokenizer DIR]\n"
    "                     [--adapter DIR] [--max-length N] [--batch-size N] [--on-bad-record fail|skip]\n"
    "                     [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16]\n"
    "\n"
    "Score a model on a dataset and print one JSON object. Conversations: mean loss per\n"
    "trained token and perplexity (the SFT loss). Preference pairs: accuracy (chosen\n"
    "log-prob > rejected), per-token accuracy, mean margins. --adapter applies a PEFT\n"
    "LoRA adapter; the tokenizer defaults to MODEL_DIR's. --precision: the compute\n"
    "dtype, as the recipe key (auto: fp32 on the CPU, bf16 on sm_80+, fp16 on sm_75).\n";

typedef struct eval_opts {
    const char *model, *data, *format, *template_name, *tokenizer, *adapter, *device, *precision;
    ds_example_opts ex;
    int batch;
    ds_on_bad on_bad;
} eval_opts;

static int eval_conversations(ft_model *m, ds_dataset *d, const tmpl *t, const ft_tokenizer *tok, const eval_opts *o,
                              ft_error *e) {
    ds_example_stats st = {0};
    ds_example *ex = NULL;
    int n = 0, cap = 0, rc = FT_OK;
    for (;;) {
        ds_conv c;
        int done = 0, kept = 0;
        rc = ds_next_conv(d, &c, &done, e);
        if (rc || done) break;
        if (n == cap) ex = ft_xrealloc(ex, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *ex);
        rc = ds_build_example(t, &c, tok, &o->ex, &ex[n], &kept, &st, e);
        ds_conv_free(&c);
        if (rc) break;
        n += kept;
    }
    ds_batch *b = NULL;
    int nb = 0;
    double nll = 0, count = 0;
    if (!rc && n) rc = ds_batches_bucketed(ex, n, o->batch, 1 << 30, 0, 0, &b, &nb, e);
    for (int i = 0; i < nb && !rc; i++) {
        float *logp = ft_xmalloc((size_t)b[i].n_tokens * sizeof(float));
        rc = model_forward(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].targets, logp, e);
        for (int k = 0; !rc && k < b[i].n_tokens; k++)
            if (b[i].targets[k] >= 0) {
                nll -= logp[k];
                count++;
            }
        free(logp);
    }
    if (!rc) {
        double mean = count > 0 ? nll / count : NAN;
        fprintf(stderr, "%d examples (%ld truncated, %ld dropped), %.0f trained tokens\n", n, st.truncated,
                st.dropped_too_long + st.dropped_no_trained, count);
        printf("{\"examples\": %d, \"trained_tokens\": %.0f, \"loss\": %.6f, \"perplexity\": %.6f}\n", n, count, mean,
               exp(mean));
    }
    ds_batches_free(b, nb);
    for (int i = 0; i < n; i++) ds_example_free(&ex[i]);
    free(ex);
    return rc;
}

static int eval_pairs(ft_model *m, ds_dataset *d, const tmpl *t, const ft_tokenizer *tok, const eval_opts *o,
                      ft_error *e) {
    ds_example_stats st = {0};
    ds_pref_example *p = NULL;
    int n = 0, cap = 0, rc = FT_OK;
    for (;;) {
        ds_pref pr;
        int done = 0, kept = 0;
        rc = ds_next_pref(d, &pr, &done, e);
        if (rc || done) break;
        if (n == cap) p = ft_xrealloc(p, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *p);
        rc = ds_build_pref_example(t, &pr, tok, &o->ex, &p[n], &kept, &st, e);
        ds_pref_free(&pr);
        if (rc) break;
        n += kept;
    }
    int *order = ft_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) order[i] = i;
    ds_batch *b = NULL;
    int nb = 0;
    if (!rc && n) dpo_build_batches(p, order, n, o->batch, NULL, &b, &nb);
    double acc = 0, acc_avg = 0, margin = 0, margin_avg = 0;
    for (int i = 0; i < nb && !rc; i++) {
        float *logp = ft_xmalloc((size_t)b[i].n_tokens * sizeof(float));
        rc = model_forward(m, b[i].n_tokens, b[i].ids, b[i].pos, b[i].doc_start, b[i].targets, logp, e);
        if (!rc) {
            int cap2 = b[i].n_samples, *pair = ft_xmalloc((size_t)cap2 * sizeof(int)),
                *nc = ft_xmalloc((size_t)cap2 * sizeof(int)), *nr = ft_xmalloc((size_t)cap2 * sizeof(int));
            double *pc = ft_xmalloc((size_t)cap2 * 8), *prr = ft_xmalloc((size_t)cap2 * 8);
            int k = dpo_gather(&b[i], logp, pair, pc, prr, nc, nr);
            for (int j = 0; j < k; j++) {
                double avg_c = pc[j] / (nc[j] ? nc[j] : 1), avg_r = prr[j] / (nr[j] ? nr[j] : 1);
                acc += pc[j] > prr[j];
                acc_avg += avg_c > avg_r;
                margin += pc[j] - prr[j];
                margin_avg += avg_c - avg_r;
            }
            free(pair), free(nc), free(nr), free(pc), free(prr);
        }
        free(logp);
    }
    if (!rc) {
        double dn = n ? n : NAN;
        fprintf(stderr, "%d pairs (%ld truncated, %ld dropped)\n", n, st.truncated,
                st.dropped_too_long + st.dropped_no_trained + st.dropped_mismatch);
        printf("{\"pairs\": %d, \"accuracy\": %.6f, \"accuracy_per_token\": %.6f, \"margin\": %.6f, "
               "\"margin_per_token\": %.6f}\n",
               n, acc / dn, acc_avg / dn, margin / dn, margin_avg / dn);
    }
    ds_batches_free(b, nb);
    for (int i = 0; i < n; i++) ds_pref_example_free(&p[i]);
    free(p);
    free(order);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {.format = "auto", .device = "auto", .precision = "auto", .batch = 4, .on_bad = DS_BAD_FAIL};
    o.ex.max_length = 2048;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (cli_is_help(a)) {
            fputs(EVAL_HELP, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (o.model) return cli_usage_error("eval", "unexpected argument %s", a);
            o.model = a;
            continue;
        }
        static const char *const VALUED[] = {"--data", "--format", "--template", "--tokenizer", "--adapter",
                                             "--device", "--precision", "--on-bad-record", "--max-length",
                                             "--batch-size", NULL};
        if (!cli_is_one_of(a, VALUED)) return cli_usage_error("eval", "unknown option %s", a);
        if (i + 1 >= argc) return cli_usage_error("eval", "option %s needs a value", a);
        const char *val = argv[++i];
        if (strcmp(a, "--data") == 0) o.data = val;
        else if (strcmp(a, "--format") == 0) o.format = val;
        else if (strcmp(a, "--template") == 0) o.template_name = val;
        else if (strcmp(a, "--tokenizer") == 0) o.tokenizer = val;
        else if (strcmp(a, "--adapter") == 0) o.adapter = val;
        else if (strcmp(a, "--device") == 0) o.device = val;
        else if (strcmp(a, "--precision") == 0) o.precision = val;
        else if (strcmp(a, "--on-bad-record") == 0) {
            if (ds_parse_on_bad(val, &o.on_bad, &e)) return cli_report("eval", &e);
        } else if (strcmp(a, "--max-length") == 0) {
            if (cli_parse_int("--max-length", val, 2, 1 << 24, &v, &e)) return cli_report("eval", &e);
            o.ex.max_length = (int)v;
        } else if (strcmp(a, "--batch-size") == 0) {
            if (cli_parse_int("--batch-size", val, 1, 1 << 16, &v, &e)) return cli_report("eval", &e);
            o.batch = (int)v;
        }
    }
    if (!o.model) return cli_usage_error("eval", "missing MODEL_DIR");
    if (!o.data) return cli_usage_error("eval", "missing --data");
    ft_backend *b = NULL;
    ft_model *m = NULL;
    ft_tokenizer *tok = NULL;
    tmpl *t = NULL;
    ds_dataset *d = NULL;
    lora_adapter *ad = NULL;
    const char *dirs[1] = {o.tokenizer ? o.tokenizer : o.model};
    int rc = modelpath_template(o.template_name, dirs, 1, NULL, &t, &e);
    if (rc) return cli_report("eval", &e);
    if (!t)
        return cli_usage_error("eval", "missing --template: %s has no chat template of its own (auto); name one of %s",
                               dirs[0], tmpl_builtin_names());
    if (!rc) rc = modelpath_tokenizer(o.tokenizer ? o.tokenizer : o.model, &tok, &e);
    if (!rc) rc = ds_open(o.data, o.format, o.on_bad, &d, &e);
    if (!rc) rc = ft_backend_create(o.device, &b, &e);
    if (!rc) rc = cli_load_model(o.model, b, o.precision, &m, &e);
    if (!rc && o.adapter) rc = lora_load(o.adapter, m, &ad, &e);
    if (!rc && ad) lora_attach(ad, m);
    if (!rc) rc = ds_dataset_is_preference(d) ? eval_pairs(m, d, t, tok, &o, &e) : eval_conversations(m, d, t, tok, &o, &e);
    if (!rc && d && ds_dataset_stats(d)->skipped_total)
        fprintf(stderr, "%ld records skipped as bad (first: %s)\n", ds_dataset_stats(d)->skipped_total,
                ds_dataset_stats(d)->first_skip);
    ds_close(d);
    lora_free(ad);
    model_free(m);
    if (b) b->destroy(b);
    tok_free(tok);
    tmpl_free(t);
    return rc ? cli_report("eval", &e) : 0;
}
