/* finetune classify (train a sequence classifier from a recipe) and finetune predict (its probabilities as a
 * CSV submission). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "finetune/base/paths.h"
#include "finetune/cli/cli.h"
#include "finetune/model/memplan.h"
#include "finetune/train/cls_data.h"
#include "finetune/train/cls_loss.h"
#include "finetune/train/job.h"

static const char CLASSIFY_HELP[] =
    "usage: finetune classify RECIPE.json [key=value ...] [--dry-run] [--resume] [--nproc N]\n"
    "\n"
    "Trains a sequence classifier (transformers' *ForSequenceClassification: the decoder, then a linear\n"
    "`score` head on each sample's last token) from a causal-LM or classifier checkpoint: full, LoRA or\n"
    "QLoRA (the head trains whole: PEFT's modules_to_save). Data: layout text (a text and a label per row) or\n"
    "lmsys (Kaggle's LMSYS Chatbot Arena CSV: prompt, response_a, response_b -> a, b or tie), .csv or\n"
    ".jsonl. Loss: cross-entropy over the labels (soft labels, label_smoothing) or MSE with one label.\n"
    "Writes an HF classifier dir (or a PEFT SEQ_CLS adapter) and classify.json (how predict reads data)\n"
    "to output_dir, with metrics.jsonl and checkpoints/. task=reward trains a reward model (one score)\n"
    "on preference pairs of any format finetune reads: -log sigmoid(r_chosen - r_rejected - reward_margin),\n"
    "as TRL's RewardTrainer. See docs/classify.md.\n"
    "\n"
    "  --dry-run   print the plan (examples, tokens, steps, memory) and stop\n"
    "  --resume    continue from the newest complete checkpoint in output_dir\n"
    "  --nproc N   data parallel: start N ranks here (one per GPU; on the CPU through\n"
    "              mpirun) and wait for them; under mpirun/srun leave it out\n"
    "              (--master-addr, --master-port, --dist-timeout as for sft)\n";

static const char *const LMSYS_LABELS[3] = {"winner_model_a", "winner_model_b", "winner_tie"};

/* The data options a classifier was trained with, as written to classify.json. */
typedef struct cls_opts_store {
    ds_cls_opts o;
    const char *layout_name;
    const char **labels; /* from the recipe (array owned by the caller) */
    size_t n_labels;
    const char **winners; /* winner_columns from the recipe (array owned by the caller) */
    size_t n_winners;
} cls_opts_store;

static cJSON *opts_json(const ds_cls_opts *o, const char *layout, const ft_config *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "layout", layout);
    cJSON *l = cJSON_CreateArray();
    for (int i = 0; i < c->num_labels; i++) cJSON_AddItemToArray(l, cJSON_CreateString(c->labels[i]));
    cJSON_AddItemToObject(j, "labels", l);
    cJSON_AddNumberToObject(j, "pad_token_id", c->pad_token_id);
    if (o->text_field) cJSON_AddStringToObject(j, "text_field", o->text_field);
    if (o->label_field) cJSON_AddStringToObject(j, "label_field", o->label_field);
    if (o->id_field) cJSON_AddStringToObject(j, "id_field", o->id_field);
    if (o->prompt_col) cJSON_AddStringToObject(j, "prompt_column", o->prompt_col);
    if (o->response_a_col) cJSON_AddStringToObject(j, "response_a_column", o->response_a_col);
    if (o->response_b_col) cJSON_AddStringToObject(j, "response_b_column", o->response_b_col);
    if (o->winner_cols[0]) {
        cJSON *w = cJSON_CreateArray();
        for (int k = 0; k < 3; k++) cJSON_AddItemToArray(w, cJSON_CreateString(o->winner_cols[k]));
        cJSON_AddItemToObject(j, "winner_columns", w);
    }
    cJSON_AddStringToObject(j, "pair_template", o->pair_template ? o->pair_template : DS_CLS_DEFAULT_PAIR_TEMPLATE);
    cJSON_AddNumberToObject(j, "prompt_share", o->prompt_share);
    cJSON_AddNumberToObject(j, "response_share", o->response_share);
    cJSON_AddNumberToObject(j, "max_length", o->max_length);
    cJSON_AddBoolToObject(j, "add_eos", o->add_eos);
    return j;
}

static int write_opts(const char *dir, const ds_cls_opts *o, const char *layout, const ft_config *c, ft_error *e) {
    cJSON *j = opts_json(o, layout, c);
    char *text = cJSON_Print(j), *path = ft_path_join(dir, "classify.json");
    cJSON_Delete(j);
    int rc = ft_write_file_atomic(path, text, strlen(text), e);
    free(text);
    free(path);
    return rc;
}

typedef struct classify_save {
    ft_job *j;
    const ds_cls_opts *o;
    const char *layout;
} classify_save;

static int classify_save_output(void *ctx, ft_model *m, ft_error *e) {
    classify_save *s = ctx;
    int rc = job_save_output(s->j, m, e);
    return rc ? rc : write_opts(s->j->output_dir, s->o, s->layout, &m->cfg, e);
}

/* The pad id a classifier records: transformers pools the last token that is not pad_token_id, so it must
 * never be a sample's last token (EOS when add_eos): the model's own, else <pad>, else <unk>. */
static int32_t choose_pad(const ft_config *c, const ft_tokenizer *tok, int add_eos) {
    int32_t eos = tok_eos_id(tok);
    if (c->pad_token_id >= 0 && !(add_eos && c->pad_token_id == eos)) return c->pad_token_id;
    const char *names[] = {"<pad>", "<|pad|>", "[PAD]", "<unk>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int32_t id = tok_token_id(tok, names[i]);
        if (id >= 0 && !(add_eos && id == eos)) return id;
    }
    return c->pad_token_id >= 0 ? c->pad_token_id : 0;
}

static int read_cls_keys(rcp *r, ft_job *j, cls_opts_store *s, int *num_labels, double *smoothing, int *reward,
                         double *margin, ft_error *e) {
    const char *str;
    double d = 0;
    int v = 0;
    memset(&s->o, 0, sizeof s->o);
    int rc = rcp_get_string(r, "task", "classify", &str, e);
    if (!rc && strcmp(str, "classify") && strcmp(str, "reward"))
        rc = ft_fail(e, FT_EINPUT, "%s: task '%s': expected classify or reward", rcp_name(r), str);
    *reward = !rc && strcmp(str, "reward") == 0;
    if (!rc) rc = rcp_get_float(r, "reward_margin", 0.0, margin, e);
    if (!rc && *reward) { /* TRL's reward model: one score per sequence, pairs from any preference format */
        *num_labels = 1;
        s->layout_name = "text"; /* predict scores single texts */
        s->o.num_labels = 1;
        s->o.max_length = j->ex.max_length;
        return FT_OK;
    }
    if (!rc) rc = rcp_get_string(r, "layout", "text", &s->layout_name, e);
    if (!rc) rc = ds_cls_layout_parse(s->layout_name, &s->o.layout, e);
    int lmsys = s->o.layout == DS_CLS_LMSYS;
    if (!rc) rc = rcp_get_string_list(r, "labels", lmsys ? LMSYS_LABELS : NULL, lmsys ? 3 : 0, &s->labels, &s->n_labels, e);
    if (!rc) rc = rcp_get_int(r, "num_labels", (int)s->n_labels, num_labels, e);
    if (!rc && *num_labels < 1)
        rc = ft_fail(e, FT_EINPUT, "%s: give 'labels' (a list of label names) or 'num_labels' (1 = regression)", rcp_name(r));
    if (!rc && s->n_labels && (int)s->n_labels != *num_labels)
        rc = ft_fail(e, FT_EINPUT, "%s: num_labels %d but %zu labels are named", rcp_name(r), *num_labels, s->n_labels);
    if (!rc && lmsys && *num_labels != 3)
        rc = ft_fail(e, FT_EINPUT, "%s: layout lmsys has 3 labels (a, b, tie), not %d", rcp_name(r), *num_labels);
    if (!rc) rc = rcp_get_string(r, "text_field", NULL, &s->o.text_field, e);
    if (!rc) rc = rcp_get_string(r, "label_field", NULL, &s->o.label_field, e);
    if (!rc) rc = rcp_get_string(r, "id_field", NULL, &s->o.id_field, e);
    if (!rc) rc = rcp_get_string(r, "pair_template", NULL, &s->o.pair_template, e);
    /* the LMSYS layout's columns under other names (NULL: Kaggle's) */
    if (!rc) rc = rcp_get_string(r, "prompt_column", NULL, &s->o.prompt_col, e);
    if (!rc) rc = rcp_get_string(r, "response_a_column", NULL, &s->o.response_a_col, e);
    if (!rc) rc = rcp_get_string(r, "response_b_column", NULL, &s->o.response_b_col, e);
    if (!rc) rc = rcp_get_string_list(r, "winner_columns", NULL, 0, &s->winners, &s->n_winners, e);
    if (!rc && s->n_winners && s->n_winners != 3)
        rc = ft_fail(e, FT_EINPUT, "%s: winner_columns names the 3 columns of a, b and tie, not %zu", rcp_name(r),
                     s->n_winners);
    for (int k = 0; !rc && k < 3 && s->n_winners; k++) s->o.winner_cols[k] = s->winners[k];
    s->o.id_col = s->o.id_field;
    if (!rc) rc = rcp_get_float(r, "prompt_share", 0.2, &d, e);
    s->o.prompt_share = (float)d;
    if (!rc) rc = rcp_get_float(r, "response_share", 0.4, &d, e);
    s->o.response_share = (float)d;
    if (!rc) rc = rcp_get_bool(r, "add_eos", 1, &s->o.add_eos, e);
    if (!rc) rc = rcp_get_bool(r, "swap_augment", 0, &v, e);
    s->o.swap = !rc && v ? DS_CLS_SWAP_HALF : DS_CLS_SWAP_NONE;
    if (!rc && v && !lmsys) rc = ft_fail(e, FT_EINPUT, "%s: swap_augment needs layout lmsys", rcp_name(r));
    if (!rc) rc = rcp_get_float(r, "label_smoothing", 0.0, smoothing, e);
    if (!rc && (*smoothing < 0 || *smoothing >= 1))
        rc = ft_fail(e, FT_EINPUT, "%s: label_smoothing must be in [0, 1)", rcp_name(r));
    s->o.num_labels = *num_labels;
    s->o.labels = s->n_labels ? s->labels : NULL;
    s->o.max_length = j->ex.max_length;
    s->o.seed = j->train.seed;
    s->o.require_labels = 1;
    s->o.on_bad = j->on_bad;
    return rc;
}

int cmd_classify(int argc, char **argv) {
    job_args args;
    int exit_now = cli_parse_job_args("classify", CLASSIFY_HELP, argc, argv, &args);
    if (exit_now >= 0) return exit_now;
    ft_error e = {0};
    rcp *r = NULL;
    ft_job j;
    memset(&j, 0, sizeof j);
    cls_data train = {0}, eval = {0};
    ds_batch *probe = NULL;
    int n_probe = 0, num_labels = 0, reward = 0;
    double smoothing = 0, margin = 0;
    cls_opts_store so = {0};
    int rc = job_load_recipe(&args, &r, &e);
    if (!rc) rc = job_read_common(r, &j, args.resume, &e);
    if (!rc) rc = job_claim_output_dir(&j, NULL, 0, args.dry_run, &e);
    if (!rc) rc = rcp_get_string(r, "save_dtype", "auto", &j.train.save_dtype_name, &e);
    if (!rc) rc = read_cls_keys(r, &j, &so, &num_labels, &smoothing, &reward, &margin, &e);
    if (!rc) rc = job_setup_data(&j, r, &e);
    if (!rc) rc = rcp_check_unused(r, &e);
    if (!rc && reward) {
        rc = cls_data_read_pairs(&j, j.data, j.n_data, &train, &e);
        if (!rc && j.n_eval_data) rc = cls_data_read_pairs(&j, j.eval_data, j.n_eval_data, &eval, &e);
    } else if (!rc) {
        rc = cls_data_read(j.data, j.n_data, &so.o, j.tok, &train, &e);
    }
    if (!rc && j.n_eval_data && !reward) {
        ds_cls_opts eo = so.o;
        eo.swap = DS_CLS_SWAP_NONE;
        rc = cls_data_read(j.eval_data, j.n_eval_data, &eo, j.tok, &eval, &e);
    }
    if (!rc && !j.n_eval_data) cls_data_split_eval(&train, &eval, j.eval_fraction, j.train.seed);
    if (!rc && train.n == 0) rc = ft_fail(&e, FT_EINPUT, "%s: no training examples left after reading the data", args.recipe);
    ft_config mc;
    if (!rc) rc = job_model_config(&j, &mc, &e);
    cls_job cj = {&j, &train, &eval, 0, num_labels, smoothing, margin};
    if (!rc) {
        cj.pad = choose_pad(&mc, j.tok, so.o.add_eos);
        rc = cls_plan_epoch(&cj, 0, &probe, &n_probe, &e);
    }
    if (!rc) {
        cls_data_print_stats("train", &train);
        if (eval.n) cls_data_print_stats("eval", &eval);
        int total = trainer_total_steps(&j.train, n_probe);
        fprintf(stderr, "plan: %d labels, %d micro-batches of %d %s per epoch, grad_accum %d, %d optimizer steps\n",
                num_labels, n_probe, j.batch_size, j.packing ? "packed rows" : "padded rows", j.train.grad_accum, total);
        if (args.dry_run) {
            job_print_memory_estimate_cls(&j, j.batch_size, num_labels);
            fprintf(stderr, "dry run: nothing trained\n");
        }
    }
    if (!rc && !args.dry_run) {
        ft_cls_load cl = {.num_labels = num_labels,
                          .labels = so.n_labels ? so.labels : NULL,
                          .problem_type = reward ? NULL : num_labels == 1 ? "regression" : "single_label_classification",
                          .seed = j.train.seed};
        rc = job_setup_model_cls(&j, &cl, &e);
        if (!rc) j.model->cfg.pad_token_id = cj.pad;
        if (!rc) rc = job_parse_dtype(j.train.save_dtype_name, j.model->cfg.torch_dtype, &j.train.save_dtype, &e);
        if (!rc) rc = job_write_resolved(&j, r, &e);
        static const char *const extra_names[] = {"accuracy", "margin"}, *const extra_labels[] = {"acc", "margin"};
        static const char *const eval_names[] = {"loss", "accuracy", "log_loss"},
                                 *const reward_eval_names[] = {"loss", "accuracy", "margin"};
        classify_save cs = {&j, &so.o, so.layout_name};
        ft_train_job job = {.cfg = &j.train,
                            .model = j.model,
                            .loss = {.ctx = &cj,
                                     .cls_loss = cls_loss_fn,
                                     .n_extra = reward ? 2 : num_labels > 1 ? 1 : 0,
                                     .extra_names = extra_names,
                                     .extra_labels = extra_labels},
                            .trainable = job_trainable,
                            .trainable_ctx = &j,
                            .plan = cls_plan_epoch,
                            .plan_ctx = &cj,
                            .sample_where = cls_sample_where,
                            .batches_per_epoch = n_probe,
                            .eval_fn = {.ctx = &cj, .run = eval.n ? cls_eval_fn : NULL, .n_values = 3,
                                        .names = reward ? reward_eval_names : eval_names},
                            .add_params = j.use_lora ? job_add_params : NULL,
                            .params_ctx = &j,
                            .comm = j.comm,
                            .recipe_text = j.recipe_text,
                            .save_output = classify_save_output,
                            .save_ctx = &cs};
        if (!rc) rc = trainer_run(&job, &e);
        if (rc == FT_ENOMEM) job_explain_oom(&j, j.batch_size, &e);
    }
    ds_batches_free(probe, n_probe);
    cls_data_free(&train);
    cls_data_free(&eval);
    free(so.labels);
    free(so.winners);
    job_free(&j);
    rcp_free(r);
    return rc ? cli_report("classify", &e) : 0;
}

/* ---------------------------------------------------------------- predict */

static const char PREDICT_HELP[] =
    "usage: finetune predict MODEL_DIR --data FILE [--adapter DIR] --out FILE.csv [options]\n"
    "\n"
    "Runs a sequence classifier (an HF *ForSequenceClassification dir, or a base model with a PEFT SEQ_CLS\n"
    "adapter) over a .csv/.jsonl file and writes one row per input: id, then the probability of each label\n"
    "(the Kaggle LMSYS submission: id,winner_model_a,winner_model_b,winner_tie; with one label, the value).\n"
    "The data is read as the classifier was trained (classify.json in the adapter or model dir), batched\n"
    "by length. A labelled file also gets its log loss and accuracy printed.\n"
    "\n"
    "  --data FILE          the rows to classify (labels optional)\n"
    "  --adapter DIR        a PEFT SEQ_CLS adapter trained on MODEL_DIR (finetune classify with lora/qlora)\n"
    "  --out FILE.csv       the submission (streamed into a temp file, renamed into place at the end)\n"
    "  --tta swap           LMSYS: also predict with response_a and response_b swapped and average\n"
    "  --layout text|lmsys  override classify.json's layout;  --max-length N  its token budget\n"
    "  --batch-tokens N     tokens per forward (default 8192)\n"
    "  --chunk-rows N       rows predicted and written per chunk (default 2048)\n"
    "  --device D           auto | cpu | cuda;  --precision P  auto | fp32 | bf16 | fp16\n"
    "  --tokenizer DIR      default: the adapter dir if it has one, else MODEL_DIR\n";

/* classify.json (from the adapter dir, else the model dir): the data options; labels into names. */
static int read_opts(const char *dir, ds_cls_opts *o, cJSON **keep, char names[FT_MAX_LABELS][FT_LABEL_LEN],
                     int *n_names, ft_error *e) {
    char *path = ft_path_join(dir, "classify.json"), *text = NULL;
    *keep = NULL;
    *n_names = 0;
    if (!ft_file_exists(path)) {
        free(path);
        return FT_OK;
    }
    int rc = ft_read_file(path, &text, NULL, e);
    cJSON *j = rc ? NULL : cJSON_Parse(text);
    free(text);
    if (!rc && !cJSON_IsObject(j)) rc = ft_fail(e, FT_EINPUT, "%s: not a JSON object", path);
    const cJSON *v;
    if (!rc && (v = cJSON_GetObjectItem(j, "layout")) && cJSON_IsString(v)) rc = ds_cls_layout_parse(v->valuestring, &o->layout, e);
#define STR(k, dst) if ((v = cJSON_GetObjectItem(j, k)) && cJSON_IsString(v)) dst = v->valuestring
    if (!rc) {
        STR("text_field", o->text_field);
        STR("label_field", o->label_field);
        STR("id_field", o->id_field);
        o->id_col = o->id_field;
        STR("prompt_column", o->prompt_col);
        STR("response_a_column", o->response_a_col);
        STR("response_b_column", o->response_b_col);
        STR("pair_template", o->pair_template);
    }
#undef STR
    if (!rc && (v = cJSON_GetObjectItem(j, "prompt_share")) && cJSON_IsNumber(v)) o->prompt_share = (float)v->valuedouble;
    if (!rc && (v = cJSON_GetObjectItem(j, "response_share")) && cJSON_IsNumber(v)) o->response_share = (float)v->valuedouble;
    if (!rc && (v = cJSON_GetObjectItem(j, "max_length")) && cJSON_IsNumber(v)) o->max_length = v->valueint;
    if (!rc && (v = cJSON_GetObjectItem(j, "add_eos")) && cJSON_IsBool(v)) o->add_eos = cJSON_IsTrue(v);
    if (!rc && (v = cJSON_GetObjectItem(j, "winner_columns")) && cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3)
        for (int k = 0; k < 3; k++) {
            const cJSON *w = cJSON_GetArrayItem(v, k);
            if (cJSON_IsString(w)) o->winner_cols[k] = w->valuestring;
        }
    if (!rc && (v = cJSON_GetObjectItem(j, "labels")) && cJSON_IsArray(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v) if (cJSON_IsString(it) && *n_names < FT_MAX_LABELS)
            snprintf(names[(*n_names)++], FT_LABEL_LEN, "%s", it->valuestring);
    }
    free(path);
    if (rc) cJSON_Delete(j);
    else *keep = j;
    return rc;
}

/* One CSV field, quoted when it holds a comma, quote or line break (RFC 4180). */
static void csv_field(char **buf, size_t *len, size_t *cap, const char *s) {
    int q = strpbrk(s, ",\"\r\n") != NULL;
    size_t need = *len + 2 * strlen(s) + 4;
    if (need > *cap) {
        *cap = need * 2;
        *buf = ft_xrealloc(*buf, *cap);
    }
    char *o = *buf + *len;
    if (q) *o++ = '"';
    for (; *s; s++) {
        if (*s == '"') *o++ = '"';
        *o++ = *s;
    }
    if (q) *o++ = '"';
    *len = (size_t)(o - *buf);
}

static void csv_printf(char **buf, size_t *len, size_t *cap, const char *fmt, double v) {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *buf = ft_xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
}

int cmd_predict(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *adapter = NULL, *out = NULL, *tta = NULL, *layout = NULL,
               *device = "auto", *precision = "auto", *tokdir = NULL;
    long max_length = 0, batch_tokens = 8192, CHUNK = 2048;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(PREDICT_HELP, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (model) return cli_usage_error("predict", "unexpected argument %s", a);
            model = a;
            continue;
        }
        static const char *const VALUED[] = {"--data", "--adapter", "--out", "--tta", "--layout", "--max-length",
                                             "--batch-tokens", "--chunk-rows", "--device", "--precision",
                                             "--tokenizer", NULL};
        if (!cli_is_one_of(a, VALUED)) return cli_usage_error("predict", "unknown option %s", a);
        if (i + 1 >= argc) return cli_usage_error("predict", "option %s needs a value", a);
        const char *val = argv[++i];
        if (strcmp(a, "--data") == 0) data = val;
        else if (strcmp(a, "--adapter") == 0) adapter = val;
        else if (strcmp(a, "--out") == 0) out = val;
        else if (strcmp(a, "--tta") == 0) tta = val;
        else if (strcmp(a, "--layout") == 0) layout = val;
        else if (strcmp(a, "--device") == 0) device = val;
        else if (strcmp(a, "--precision") == 0) precision = val;
        else if (strcmp(a, "--tokenizer") == 0) tokdir = val;
        else if (strcmp(a, "--max-length") == 0) {
            if (cli_parse_int("--max-length", val, 2, 1 << 24, &max_length, &e)) return cli_report("predict", &e);
        } else if (strcmp(a, "--chunk-rows") == 0) {
            if (cli_parse_int("--chunk-rows", val, 1, 1 << 24, &CHUNK, &e)) return cli_report("predict", &e);
        } else if (cli_parse_int("--batch-tokens", val, 16, 1 << 26, &batch_tokens, &e)) {
            return cli_report("predict", &e);
        }
    }
    if (!model) return cli_usage_error("predict", "missing MODEL_DIR");
    if (!data) return cli_usage_error("predict", "missing --data");
    if (!out) return cli_usage_error("predict", "missing --out FILE.csv");
    if (tta && strcmp(tta, "swap") != 0) return cli_usage_error("predict", "--tta %s: only 'swap' is known", tta);
    ft_path_input in[4] = {{model, "model directory"}, {data, "data file"}, {adapter, "adapter directory"}, {tokdir, "tokenizer directory"}};
    int rc = ft_path_guard_output(out, "--out", in, 4, &e);
    ds_cls_opts o = {.add_eos = 1, .on_bad = DS_BAD_FAIL, .max_length = 2048};
    cJSON *keep = NULL;
    char names[FT_MAX_LABELS][FT_LABEL_LEN];
    int n_names = 0;
    if (!rc) rc = read_opts(adapter ? adapter : model, &o, &keep, names, &n_names, &e);
    if (!rc && layout) rc = ds_cls_layout_parse(layout, &o.layout, &e);
    if (max_length) o.max_length = (int)max_length;
    if (!rc && tta && o.layout != DS_CLS_LMSYS) rc = ft_fail(&e, FT_EINPUT, "--tta swap needs the lmsys layout");
    ft_backend *b = NULL;
    ft_model *m = NULL;
    ft_tokenizer *tok = NULL;
    lora_adapter *ad = NULL;
    cls_data d = {0}, ds = {0};
    float *lg = NULL, *lgs = NULL;
    if (!rc) {
        char *tp = ft_path_join(adapter ? adapter : model, "tokenizer.json");
        const char *td = tokdir ? tokdir : adapter && ft_file_exists(tp) ? adapter : model;
        rc = tok_load(td, &tok, &e);
        free(tp);
    }
    if (!rc) rc = ft_backend_create(device, &b, &e);
    if (!rc && adapter) {
        ft_dtype dt;
        const char *nm[FT_MAX_LABELS];
        for (int i = 0; i < n_names; i++) nm[i] = names[i];
        ft_config bc;
        rc = cfg_load(model, &bc, &e);
        int K = bc.num_labels > 0 ? bc.num_labels : n_names;
        if (!rc && K < 1) rc = ft_fail(&e, FT_EINPUT, "%s: no classify.json naming the labels, and %s is not a classifier", adapter, model);
        ft_cls_load cl = {.num_labels = K, .labels = bc.num_labels > 0 || !n_names ? NULL : nm};
        if (!rc) rc = trainer_compute_dtype(precision, b, &dt, &e);
        if (!rc) rc = model_load_cls(model, b, 0, dt, &cl, &m, &e);
        if (!rc) rc = lora_load(adapter, m, &ad, &e);
        if (!rc) lora_attach(ad, m);
    } else if (!rc) {
        rc = cli_load_model(model, b, precision, &m, &e);
        if (!rc && m->cfg.num_labels <= 0)
            rc = ft_fail(&e, FT_EINPUT, "%s is a %s, not a sequence classifier (give --adapter for a base model)", model,
                         m->cfg.architecture);
    }
    int K = m ? m->cfg.num_labels : 0;
    const char *lab[FT_MAX_LABELS];
    for (int i = 0; i < K; i++) lab[i] = m->cfg.labels[i];
    o.num_labels = K;
    o.labels = lab;
    if (!rc && o.layout == DS_CLS_LMSYS && K != 3) rc = ft_fail(&e, FT_EINPUT, "layout lmsys needs 3 labels; the model has %d", K);
    if (!rc) rc = cls_data_read(&(char *){(char *)data}, 1, &o, tok, &d, &e);
    if (!rc) cls_data_print_stats("data", &d);
    if (!rc && tta) {
        ds_cls_opts so = o;
        so.swap = DS_CLS_SWAP_ALL;
        rc = cls_data_read(&(char *){(char *)data}, 1, &so, tok, &ds, &e);
        if (!rc && ds.n != d.n) rc = ft_fail(&e, FT_EINTERNAL, "--tta swap: %d rows, then %d swapped", d.n, ds.n);
    }
    /* Streamed: chunks of rows in file order, each run in length-sorted batches, its rows appended to
     * OUT.tmp.PID as soon as it is done; renamed into place at the end (never half a file at OUT). */
    char *tmp = NULL, *csv = NULL;
    size_t cap = 4096, len = 0;
    int fd = -1, n_lab = 0;
    double mse = 0, ll = 0, hits = 0;
    if (!rc) {
        tmp = ft_xmalloc(strlen(out) + 32);
        sprintf(tmp, "%s.tmp.%d", out, (int)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) rc = ft_fail_sys(&e, errno, "%s: cannot create", tmp);
        lg = ft_xmalloc((size_t)CHUNK * K * sizeof *lg);
        lgs = ft_xmalloc((size_t)CHUNK * K * sizeof *lgs);
        csv = ft_xmalloc(cap);
        csv_field(&csv, &len, &cap, "id");
        for (int k = 0; k < K; k++) {
            csv[len++] = ',';
            csv_field(&csv, &len, &cap, m->cfg.labels[k]);
        }
        csv[len++] = '\n';
    }
    for (int c0 = 0; !rc && c0 < d.n; c0 += CHUNK) {
        int cn = d.n - c0 < CHUNK ? d.n - c0 : (int)CHUNK;
        cls_data view = {.cx = d.cx + c0, .n = cn};
        rc = cls_logits(m, &view, (int)batch_tokens, 0, lg, &e);
        for (int i = 0; !rc && K > 1 && i < cn; i++) { /* probabilities (regression: the value itself) */
            double p[FT_MAX_LABELS];
            cls_softmax(lg + (size_t)i * K, K, p);
            for (int k = 0; k < K; k++) lg[(size_t)i * K + k] = (float)p[k];
        }
        if (!rc && tta) {
            cls_data sview = {.cx = ds.cx + c0, .n = cn};
            rc = cls_logits(m, &sview, (int)batch_tokens, 0, lgs, &e);
            for (int i = 0; !rc && i < cn; i++) {
                double p[FT_MAX_LABELS];
                cls_softmax(lgs + (size_t)i * K, K, p);
                float q[FT_MAX_LABELS];
                for (int k = 0; k < K; k++) q[k] = (float)p[k];
                ds_cls_unswap_probs(q, K);
                for (int k = 0; k < K; k++) lg[(size_t)i * K + k] = 0.5f * (lg[(size_t)i * K + k] + q[k]);
            }
        }
        for (int i = 0; !rc && i < cn; i++) {
            const ds_cls_example *x = &d.cx[c0 + i];
            const float *p = lg + (size_t)i * K;
            csv_field(&csv, &len, &cap, x->id);
            for (int k = 0; k < K; k++) {
                csv[len++] = ',';
                csv_printf(&csv, &len, &cap, "%.9g", p[k]);
            }
            csv[len++] = '\n';
            if (!x->has_label) continue; /* metrics on the probabilities written (after --tta) */
            n_lab++;
            if (K == 1) {
                mse += (p[0] - x->value) * (p[0] - x->value);
                continue;
            }
            int arg = 0, best = 0;
            for (int k = 0; k < K; k++) {
                if (p[k] > p[arg]) arg = k;
                if (x->probs[k] > x->probs[best]) best = k;
                /* Kaggle's log loss clips probabilities at 1e-15 */
                if (x->probs[k] > 0) ll -= x->probs[k] * log(fmax((double)p[k], 1e-15));
            }
            hits += arg == best;
        }
        if (!rc && ft_write_all(fd, csv, len, -1, tmp) != 0) rc = ft_fail_sys(&e, errno, "%s: write failed", tmp);
        len = 0;
        if (!rc) fprintf(stderr, "\rpredicted %d of %d rows", c0 + cn, d.n);
    }
    if (!rc && len && ft_write_all(fd, csv, len, -1, tmp) != 0) rc = ft_fail_sys(&e, errno, "%s: write failed", tmp);
    if (!rc && d.n) fprintf(stderr, "\n");
    if (!rc && fsync(fd) != 0) rc = ft_fail_sys(&e, errno, "%s: fsync failed", tmp);
    if (fd >= 0 && close(fd) != 0 && !rc) rc = ft_fail_sys(&e, errno, "%s: close failed", tmp);
    if (!rc && rename(tmp, out) != 0) rc = ft_fail_sys(&e, errno, "%s: rename to %s failed", tmp, out);
    if (rc && fd >= 0) unlink(tmp);
    free(tmp);
    free(csv);
    if (!rc) fprintf(stderr, "wrote %d rows to %s\n", d.n, out);
    if (!rc && n_lab && K == 1) printf("%d labelled rows: mse %.6f\n", n_lab, mse / n_lab);
    if (!rc && n_lab && K > 1) printf("%d labelled rows: log loss %.6f, accuracy %.4f\n", n_lab, ll / n_lab, hits / n_lab);
    free(lg);
    free(lgs);
    cls_data_free(&d);
    cls_data_free(&ds);
    lora_free(ad);
    model_free(m);
    tok_free(tok);
    if (b) b->destroy(b);
    cJSON_Delete(keep);
    return rc ? cli_report("predict", &e) : 0;
}
