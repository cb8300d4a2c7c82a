#include "finetune/train/job.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/export.h"
#include "finetune/model/memplan.h"
#include "finetune/model/modelpath.h"
#include "finetune/train/trainer.h"

#define GET(call)                 \
    do {                          \
        int _rc = (call);         \
        if (_rc) return _rc;      \
    } while (0)

int job_parse_dtype(const char *s, const char *torch_dtype, ft_dtype *out, ft_error *e) {
    if (strcmp(s, "auto") == 0) {
        *out = strcmp(torch_dtype, "bfloat16") == 0 ? FT_BF16 : strcmp(torch_dtype, "float16") == 0 ? FT_F16 : FT_F32;
        return FT_OK;
    }
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) *out = FT_F32;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) *out = FT_BF16;
    else if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0) *out = FT_F16;
    else return ft_fail(e, FT_EINPUT, "save_dtype '%s': expected auto, f32, bf16 or f16", s);
    return FT_OK;
}

/* The "lora" or "qlora" recipe section. */
static int job_read_lora(rcp *r, ft_job *j, ft_error *e) {
    int has_l = rcp_has(r, "lora"), has_q = rcp_has(r, "qlora");
    if (!has_l && !has_q) return FT_OK;
    if (has_l && has_q)
        return ft_fail(e, FT_EINPUT, "%s: give either a 'lora' or a 'qlora' section, not both", rcp_name(r));
    const char *sec = has_q ? "qlora" : "lora";
    char k[64];
    int v;
    double d;
    const char *s;
    j->use_lora = 1;
#define KEY(name) (snprintf(k, sizeof k, "%s.%s", sec, name), k)
    GET(rcp_get_int(r, KEY("r"), 16, &j->lora.r, e));
    GET(rcp_get_float(r, KEY("alpha"), 2.0 * j->lora.r, &d, e));
    j->lora.alpha = (float)d;
    GET(rcp_get_float(r, KEY("dropout"), 0.0, &d, e));
    j->lora.dropout = (float)d;
    GET(rcp_get_bool(r, KEY("use_rslora"), 0, &v, e));
    j->lora.use_rslora = v;
    GET(rcp_get_bool(r, KEY("use_dora"), 0, &v, e));
    j->lora.use_dora = v;
    char *json = NULL;
    GET(rcp_get_json(r, KEY("target_modules"), &json, e));
    int rc = lora_parse_targets(json ? json : "\"all-linear\"", &j->lora, KEY("target_modules"), e);
    free(json);
    if (rc) return rc;
    json = NULL;
    GET(rcp_get_json(r, KEY("layers_to_transform"), &json, e));
    if (json) {
        char cfgtext[4096];
        snprintf(cfgtext, sizeof cfgtext, "%s", json);
        free(json);
        /* reuse the adapter_config reader's rules: an integer or a list of integers */
        int n = 0, cap = 8, *L = ft_xmalloc((size_t)cap * sizeof(int));
        for (char *p = cfgtext; *p;) {
            if ((*p >= '0' && *p <= '9') || *p == '-') {
                if (n == cap) L = ft_xrealloc(L, (size_t)(cap *= 2) * sizeof(int));
                L[n++] = (int)strtol(p, &p, 10);
            } else if (*p == '[' || *p == ']' || *p == ',' || *p == ' ' || *p == '\n') {
                p++;
            } else {
                free(L);
                return ft_fail(e, FT_EINPUT, "%s: key '%s': expected an integer or a list of integers", rcp_name(r), k);
            }
        }
        j->lora.layers = L;
        j->lora.n_layers = n;
    }
    GET(rcp_get_path(r, KEY("init_from"), NULL, &j->lora_init_from, e));
    GET(rcp_get_string(r, KEY("quantize_base"), has_q ? "nf4" : "none", &s, e));
    if (strcmp(s, "nf4") == 0)
        j->quantize_nf4 = 1;
    else if (strcmp(s, "none") != 0)
        return ft_fail(e, FT_EINPUT, "%s: key '%s': '%s' (expected nf4 or none)", rcp_name(r), k, s);
#undef KEY
    return lora_check_cfg(&j->lora, sec, e);
}

int job_load_recipe(const job_args *a, rcp **r, ft_error *e) {
    int rc = rcp_load(a->recipe, r, e);
    for (int i = 1; i < a->argc && !rc; i++)
        if (a->argv[i][0] != '-' && strchr(a->argv[i], '=')) rc = rcp_override(*r, a->argv[i], e);
    return rc;
}

int job_write_resolved(ft_job *j, const rcp *r, ft_error *e) {
    free(j->recipe_text);
    j->recipe_text = rcp_dump_resolved(r);
    if (dist_rank(j->comm) != 0) return FT_OK; /* rank 0 writes the outputs */
    int rc = ft_mkdir_p(j->output_dir, e);
    if (rc) return rc;
    char *path = ft_path_join(j->output_dir, "recipe.resolved.json");
    rc = ft_write_file_atomic(path, j->recipe_text, strlen(j->recipe_text), e);
    free(path);
    return rc;
}

int job_read_common(rcp *r, ft_job *j, int resume, ft_error *e) {
    const char *s;
    double d;
    int v;
    memset(j, 0, sizeof *j);
    GET(rcp_get_path(r, "model", NULL, &j->model_dir, e));
    GET(rcp_get_path(r, "model_init", NULL, &j->model_init, e));
    if (!j->model_dir && !j->model_init)
        return ft_fail(e, FT_EINPUT, "%s: key 'model' (an HF model directory) is required", rcp_name(r));
    if (j->model_dir && j->model_init)
        return ft_fail(e, FT_EINPUT, "%s: give either 'model' or 'model_init', not both", rcp_name(r));
    GET(rcp_get_path(r, "tokenizer", j->model_dir, &j->tokenizer_dir, e));
    if (!j->tokenizer_dir)
        return ft_fail(e, FT_EINPUT, "%s: key 'tokenizer' is required with 'model_init'", rcp_name(r));
    GET(rcp_get_path(r, "output_dir", NULL, &j->output_dir, e));
    if (!j->output_dir) return ft_fail(e, FT_EINPUT, "%s: key 'output_dir' is required", rcp_name(r));
    GET(rcp_get_path_list(r, "data", &j->data, &j->n_data, e));
    if (j->n_data == 0) return ft_fail(e, FT_EINPUT, "%s: key 'data' (a file or list of files) is required", rcp_name(r));
    GET(rcp_get_path_list(r, "eval_data", &j->eval_data, &j->n_eval_data, e));
    GET(rcp_get_string(r, "format", "auto", &j->format, e));
    GET(rcp_get_string(r, "on_bad_record", "fail", &s, e));
    GET(ds_parse_on_bad(s, &j->on_bad, e));
    GET(rcp_get_int(r, "max_length", 2048, &j->ex.max_length, e));
    if (j->ex.max_length < 2) return ft_fail(e, FT_EINPUT, "%s: max_length must be at least 2", rcp_name(r));
    GET(rcp_get_string(r, "truncation", "keep_start", &s, e));
    GET(ds_trunc_parse(s, &j->ex.trunc, e));
    GET(rcp_get_string(r, "overlong", "truncate", &s, e));
    GET(ds_overlong_parse(s, &j->ex.overlong, e));
    GET(rcp_get_string(r, "train_on", "all_assistant", &s, e));
    if (strcmp(s, "all_assistant") == 0) j->ex.loss_last_only = 0;
    else if (strcmp(s, "last_assistant") == 0) j->ex.loss_last_only = 1;
    else return ft_fail(e, FT_EINPUT, "%s: train_on '%s': expected all_assistant or last_assistant", rcp_name(r), s);
    GET(rcp_get_bool(r, "packing", 1, &j->packing, e));
    GET(rcp_get_int(r, "batch_size", 1, &j->batch_size, e));
    GET(rcp_get_int(r, "bucket_window", 64, &j->bucket_window, e));
    if (j->batch_size < 1) return ft_fail(e, FT_EINPUT, "%s: batch_size must be >= 1", rcp_name(r));

    ft_train_cfg *t = &j->train;
    t->output_dir = j->output_dir;
    t->resume = resume;
    GET(rcp_get_string(r, "device", "auto", &j->device, e));
    t->device = j->device;
    GET(rcp_get_int(r, "epochs", 1, &t->epochs, e));
    GET(rcp_get_int(r, "max_steps", 0, &t->max_steps, e));
    GET(rcp_get_int(r, "grad_accum", 1, &t->grad_accum, e));
    if (t->grad_accum < 1 || t->epochs < 0)
        return ft_fail(e, FT_EINPUT, "%s: grad_accum must be >= 1 and epochs >= 0", rcp_name(r));
    t->optim = optim_defaults();
    GET(rcp_get_float(r, "lr", 1e-5, &d, e));
    t->optim.lr = (float)d;
    GET(rcp_get_string(r, "schedule", "cosine", &s, e));
    if (optim_parse_schedule(s, &t->optim.schedule))
        return ft_fail(e, FT_EINPUT, "%s: schedule '%s': expected constant, linear or cosine", rcp_name(r), s);
    GET(rcp_get_int(r, "warmup_steps", 0, &t->optim.warmup_steps, e));
    GET(rcp_get_float(r, "warmup_ratio", 0.0, &d, e));
    t->warmup_ratio = (float)d;
    GET(rcp_get_float(r, "min_lr_ratio", 0.0, &d, e));
    t->optim.min_lr_ratio = (float)d;
    GET(rcp_get_float(r, "weight_decay", 0.0, &d, e));
    t->optim.weight_decay = (float)d;
    GET(rcp_get_float(r, "adam_beta1", 0.9, &d, e));
    t->optim.beta1 = (float)d;
    GET(rcp_get_float(r, "adam_beta2", 0.999, &d, e));
    t->optim.beta2 = (float)d;
    GET(rcp_get_float(r, "adam_eps", 1e-8, &d, e));
    t->optim.eps = (float)d;
    GET(rcp_get_float(r, "grad_clip", 1.0, &d, e));
    t->optim.grad_clip = (float)d;
    int64_t seed;
    GET(rcp_get_i64(r, "seed", 42, &seed, e));
    t->seed = (uint64_t)seed;
    GET(rcp_get_float(r, "eval_fraction", 0.0, &j->eval_fraction, e));
    if (j->eval_fraction < 0 || j->eval_fraction >= 1)
        return ft_fail(e, FT_EINPUT, "%s: eval_fraction must be in [0, 1)", rcp_name(r));
    GET(rcp_get_int(r, "eval_every", 0, &t->eval_every, e));
    GET(rcp_get_int(r, "save_every", 0, &t->save_every, e));
    GET(rcp_get_int(r, "keep_last", 2, &t->keep_last, e));
    GET(rcp_get_int(r, "log_every", 10, &t->log_every, e));
    GET(rcp_get_int(r, "max_bad_steps", 5, &t->max_bad_steps, e));
    GET(rcp_get_int(r, "zero", 0, &t->zero, e));
    if (t->zero != 0 && t->zero != 1)
        return ft_fail(e, FT_EINPUT, "%s: zero %d: expected 0 (off) or 1 (ZeRO-1: AdamW's moments sharded over the ranks)",
                       rcp_name(r), t->zero);
    /* mixed precision (the trainer applies it once the backend is known) */
    GET(rcp_get_string(r, "precision", "auto", &t->precision, e));
    if (strcmp(t->precision, "auto") && strcmp(t->precision, "fp32") && strcmp(t->precision, "bf16") &&
        strcmp(t->precision, "fp16"))
        return ft_fail(e, FT_EINPUT, "%s: precision '%s': expected auto, fp32, bf16 or fp16", rcp_name(r),
                       t->precision);
    GET(rcp_get_bool(r, "offload_activations", 0, &t->offload_activations, e));
    char *lim = NULL; /* a size string ("15GiB") or a byte count */
    GET(rcp_get_json(r, "gpu_memory_limit", &lim, e));
    if (lim) {
        size_t n = strlen(lim);
        if (n >= 2 && lim[0] == '"' && lim[n - 1] == '"') lim[n - 1] = 0;
        const char *val = lim[0] == '"' ? lim + 1 : lim;
        int bad = ft_parse_bytes(val, &j->gpu_memory_limit);
        j->has_gpu_memory_limit = 1;
        if (bad) {
            int frc = ft_fail(e, FT_EINPUT, "%s: gpu_memory_limit %s: expected a size such as \"15GiB\" or \"512MiB\", or a "
                                       "byte count (0: no limit)", rcp_name(r), val);
            free(lim);
            return frc;
        }
        free(lim);
    }
    GET(rcp_get_float(r, "loss_scale_init", 65536.0, &d, e));
    t->loss_scale_init = (float)d;
    GET(rcp_get_int(r, "loss_scale_growth_interval", 2000, &t->loss_scale_growth_interval, e));
    if (t->loss_scale_init <= 0 || t->loss_scale_growth_interval < 1)
        return ft_fail(e, FT_EINPUT, "%s: loss_scale_init must be > 0 and loss_scale_growth_interval >= 1",
                       rcp_name(r));
    GET(rcp_get_bool(r, "freeze_embeddings", 0, &j->freeze_embeddings, e));
    GET(rcp_get_bool(r, "allow_nonfinite_weights", 0, &j->allow_nonfinite_weights, e));
    char *layers = NULL;
    GET(rcp_get_json(r, "freeze_layers", &layers, e));
    if (layers) {
        cJSON *a = cJSON_Parse(layers);
        free(layers);
        if (!cJSON_IsArray(a)) {
            cJSON_Delete(a);
            return ft_fail(e, FT_EINPUT, "%s: freeze_layers must be a list of layer indices", rcp_name(r));
        }
        j->n_freeze_layers = (size_t)cJSON_GetArraySize(a);
        j->freeze_layers = ft_xcalloc(j->n_freeze_layers + 1, sizeof(int));
        for (size_t i = 0; i < j->n_freeze_layers; i++) {
            const cJSON *x = cJSON_GetArrayItem(a, (int)i);
            if (!cJSON_IsNumber(x) || x->valuedouble < 0) {
                cJSON_Delete(a);
                return ft_fail(e, FT_EINPUT, "%s: freeze_layers[%zu] is not a layer index", rcp_name(r), i);
            }
            j->freeze_layers[i] = x->valueint;
        }
        cJSON_Delete(a);
    }
    (void)v;
    GET(job_read_lora(r, j, e));
    /* the launcher's environment (--master-addr/--master-port/--dist-timeout reach it as MASTER_ADDR, ...) */
    GET(dist_init(NULL, &j->comm, e));
    j->train.world_size = dist_world(j->comm);
    return FT_OK;
}

int job_claim_output_dir(ft_job *j, const ft_path_input *extra, int n_extra, int dry_run, ft_error *e) {
    int n = 0, cap = 4 + (int)j->n_data + (int)j->n_eval_data + n_extra;
    ft_path_input *in = ft_xcalloc((size_t)cap, sizeof *in);
    in[n++] = (ft_path_input){j->model_dir, "model directory"};
    in[n++] = (ft_path_input){j->model_init, "model_init file"};
    if (!j->model_dir || strcmp(j->tokenizer_dir, j->model_dir) != 0)
        in[n++] = (ft_path_input){j->tokenizer_dir, "tokenizer directory"};
    in[n++] = (ft_path_input){j->lora_init_from, "LoRA init_from adapter directory"};
    for (size_t i = 0; i < j->n_data; i++) in[n++] = (ft_path_input){j->data[i], "data file"};
    for (size_t i = 0; i < j->n_eval_data; i++) in[n++] = (ft_path_input){j->eval_data[i], "eval_data file"};
    for (int i = 0; i < n_extra; i++) in[n++] = extra[i];
    int rc = ft_path_guard_output(j->output_dir, "output_dir", in, n, e);
    free(in);
    if (!rc && !dry_run && dist_rank(j->comm) == 0) rc = ft_dirlock_acquire(j->output_dir, &j->lock, e);
    return rc;
}

static int read_template(ft_job *j, rcp *r, ft_error *e) {
    char *json = NULL;
    GET(rcp_get_json(r, "template", &json, e));
    cJSON *t = json ? cJSON_Parse(json) : NULL;
    free(json);
    int rc;
    if (!t || cJSON_IsString(t)) {
        /* auto (the default): the tokenizer's (or model's) own chat_template, else the built-in danube */
        const char *dirs[2] = {j->tokenizer_dir, j->model_dir};
        const char *name = t ? t->valuestring : "auto";
        rc = modelpath_template(name, dirs, 2, "danube", &j->tmpl, e);
        if (!rc && !j->tmpl)
            rc = ft_fail(e, FT_EINPUT, "%s: template none: training needs a chat template (auto or one of %s)",
                         rcp_name(r), tmpl_builtin_names());
    } else if (cJSON_IsObject(t)) {
        const char *k[] = {"system_prefix", "system_suffix", "user_prefix", "user_suffix",
                           "assistant_prefix", "assistant_suffix", "generation_prompt"};
        const char *v[7];
        for (int i = 0; i < 7; i++) {
            const cJSON *x = cJSON_GetObjectItem(t, k[i]);
            if (x && !cJSON_IsString(x)) {
                cJSON_Delete(t);
                return ft_fail(e, FT_EINPUT, "%s: template.%s must be a string", rcp_name(r), k[i]);
            }
            v[i] = x ? x->valuestring : "";
        }
        const cJSON *bos = cJSON_GetObjectItem(t, "bos");
        rc = tmpl_custom_simple(v[0], v[1], v[2], v[3], v[4], v[5], v[6], cJSON_IsTrue(bos), &j->tmpl, e);
    } else {
        rc = ft_fail(e, FT_EINPUT, "%s: template must be a name (%s) or an object of strings", rcp_name(r),
                     tmpl_builtin_names());
    }
    cJSON_Delete(t);
    return rc;
}

int job_setup_data(ft_job *j, rcp *r, ft_error *e) {
    GET(read_template(j, r, e));
    return modelpath_tokenizer(j->tokenizer_dir, &j->tok, e);
}

static int job_setup_lora(ft_job *j, ft_error *e) {
    int rc;
    if (j->quantize_nf4 && !j->model_dir)
        return ft_fail(e, FT_EINPUT, "qlora needs 'model' (a checkpoint to quantize), not model_init");
    if (j->lora_init_from)
        rc = lora_load(j->lora_init_from, j->model, &j->adapter, e);
    else
        rc = lora_create(j->model, &j->lora, j->train.seed, &j->adapter, e);
    if (!rc && j->quantize_nf4) rc = lora_quantize_base(j->adapter, j->model, j->model_dir, e);
    if (!rc) lora_attach(j->adapter, j->model);
    return rc;
}

int job_check_weights(const ft_job *j, const ft_model *m, const char *what, const char *dir, ft_error *e) {
    if (!m || m->nonfinite.values == 0) return FT_OK;
    char d[1024];
    model_nonfinite_describe(&m->nonfinite, d, sizeof d);
    if (!j->allow_nonfinite_weights)
        return ft_fail(e, FT_EINPUT,
                       "%s: the %s's weights hold %s; training from them gives NaN losses. Fix or re-export the "
                       "checkpoint, or set allow_nonfinite_weights=true to train anyway",
                       dir, what, d);
    fprintf(stderr, "warning: %s: the %s's weights hold %s (allow_nonfinite_weights=true: training anyway)\n", dir,
            what, d);
    return FT_OK;
}

int job_setup_model(ft_job *j, ft_error *e) { return job_setup_model_cls(j, NULL, e); }

int job_setup_model_cls(ft_job *j, const ft_cls_load *cls, ft_error *e) {
    GET(ft_backend_create(j->device, &j->backend, e));
    GET(dist_bind(j->comm, j->backend, e));
    if (j->has_gpu_memory_limit) j->backend->mem_limit = j->gpu_memory_limit;
    if (j->model_dir && j->use_lora) { /* the base is frozen: straight into the compute dtype */
        ft_dtype compute;
        GET(trainer_compute_dtype(j->train.precision, j->backend, &compute, e));
        if (cls) {
            ft_cls_load o = *cls;
            o.trainable_score = 1; /* the head trains whole beside the adapters (PEFT's modules_to_save) */
            GET(model_load_cls(j->model_dir, j->backend, j->quantize_nf4, compute, &o, &j->model, e));
        } else {
            GET(model_load_frozen(j->model_dir, j->backend, j->quantize_nf4, compute, &j->model, e));
        }
        GET(job_setup_lora(j, e)); /* QLoRA reads (and counts) the base linears here */
        return job_check_weights(j, j->model, "model", j->model_dir, e);
    }
    if (j->model_dir) {
        if (cls)
            GET(model_load_cls(j->model_dir, j->backend, 0, FT_F32, cls, &j->model, e));
        else
            GET(model_load(j->model_dir, j->backend, &j->model, e));
        return job_check_weights(j, j->model, "model", j->model_dir, e);
    }
    char *text = NULL;
    size_t len = 0;
    ft_config c;
    int rc = ft_read_file(j->model_init, &text, &len, e);
    if (!rc) rc = cfg_parse(text, len, j->model_init, &c, e);
    free(text);
    if (!rc && cls && c.num_labels == 0) rc = cfg_set_labels(&c, cls->num_labels, cls->labels, cls->problem_type, e);
    if (!rc) rc = model_init_random(&c, j->backend, j->train.seed, 0.02f, &j->model, e);
    if (!rc && j->use_lora) rc = job_setup_lora(j, e);
    return rc;
}

int job_add_params(void *ctx, ft_optim *o, ft_error *e) {
    ft_job *j = ctx;
    if (!j->adapter) return FT_OK;
    int rc = lora_grads_create(j->adapter, e), n = 0;
    ft_param *w = NULL, *g = NULL;
    if (!rc) lora_params(j->adapter, &w, &g, &n);
    for (int i = 0; i < n && !rc; i++) rc = optim_add_param(o, w[i].name, w[i].t, g[i].t, e);
    free(w);
    free(g);
    return rc;
}

int job_model_config(const ft_job *j, ft_config *c, ft_error *e) {
    if (j->model_dir) return cfg_load(j->model_dir, c, e);
    char *text = NULL;
    size_t len = 0;
    int rc = ft_read_file(j->model_init, &text, &len, e);
    if (!rc) rc = cfg_parse(text, len, j->model_init, c, e);
    free(text);
    return rc;
}

static void print_estimate(const ft_job *j, int rows, int num_labels) {
    ft_config c;
    ft_error e = {0};
    if (job_model_config(j, &c, &e) || (num_labels > 0 && c.num_labels == 0 && cfg_set_labels(&c, num_labels, NULL, NULL, &e))) {
        fprintf(stderr, "memory estimate: unavailable (%s)\n", e.msg);
        return;
    }
    ft_train_mode mode = !j->use_lora ? FT_TRAIN_FULL : j->quantize_nf4 ? FT_TRAIN_QLORA : FT_TRAIN_LORA;
    static const char *NAMES[] = {"full fine-tune", "LoRA", "QLoRA"};
    ft_memplan mp;
    memplan_estimate(&c, mode, j->ex.max_length, rows, j->use_lora ? j->lora.r : 0, &mp);
    fprintf(stderr,
            "memory estimate (%s, 16-bit compute, recomputed activations, %d x %d tokens): %.2f GiB "
            "(weights %.2f, trainable state %.2f, activations %.2f, overhead %.2f)\n",
            NAMES[mode], rows, j->ex.max_length, mp.total / (1u << 30), mp.weights / (1u << 30),
            mp.trainable / (1u << 30), mp.activations / (1u << 30), mp.overhead / (1u << 30));
    /* our own device cap counts our allocations, not the context: compare the estimate without its overhead */
    size_t lim = 0;
    const char *env = getenv("FT_GPU_MEMORY_LIMIT");
    if (j->has_gpu_memory_limit) lim = j->gpu_memory_limit;
    else if (env && *env && ft_parse_bytes(env, &lim)) lim = 0;
    if (lim) {
        double need = mp.total - mp.overhead;
        fprintf(stderr, "gpu_memory_limit %.2f GiB: the estimate without its overhead, %.2f GiB, %s\n",
                (double)lim / (1u << 30), need / (1u << 30), need <= (double)lim ? "fits" : "does not fit");
    }
}

void job_print_memory_estimate(const ft_job *j, int rows) { print_estimate(j, rows, 0); }
void job_print_memory_estimate_cls(const ft_job *j, int rows, int num_labels) { print_estimate(j, rows, num_labels); }

void job_explain_oom(const ft_job *j, int rows, ft_error *e) {
    ft_config c;
    ft_error ce = {0};
    char hint[768];
    size_t n = strlen(e->msg);
    if (job_model_config(j, &c, &ce) == 0) {
        ft_train_mode mode = !j->use_lora ? FT_TRAIN_FULL : j->quantize_nf4 ? FT_TRAIN_QLORA : FT_TRAIN_LORA;
        ft_memplan mp;
        memplan_estimate(&c, mode, j->ex.max_length, rows, j->use_lora ? j->lora.r : 0, &mp);
        snprintf(hint, sizeof hint,
                 ". This recipe needs about %.2f GiB (weights %.2f, trainable state %.2f, activations %.2f); "
                 "lower batch_size (%d) or max_length (%d), train a lora or qlora section instead of all weights, "
                 "or set offload_activations=true",
                 mp.total / (1u << 30), mp.weights / (1u << 30), mp.trainable / (1u << 30),
                 mp.activations / (1u << 30), j->batch_size, j->ex.max_length);
        if (j->backend && j->backend->mem_limit) {
            size_t k = strlen(hint);
            snprintf(hint + k, sizeof hint - k, " (the device is capped at gpu_memory_limit %.2f GiB)",
                     (double)j->backend->mem_limit / (1u << 30));
        }
    } else {
        snprintf(hint, sizeof hint, "; lower batch_size or max_length, or use a lora or qlora section");
    }
    snprintf(e->msg + n, sizeof e->msg - n, "%s", hint);
}

int job_trainable(const char *name, void *ctx) {
    const ft_job *j = ctx;
    if (strcmp(name, "score.weight") == 0) return 1; /* a classifier's head always trains (LoRA: modules_to_save) */
    if (j->use_lora) return 0; /* the base is frozen: no weight gradients, no optimizer state */
    if (j->freeze_embeddings && strcmp(name, "model.embed_tokens.weight") == 0) return 0;
    int layer;
    if (sscanf(name, "model.layers.%d.", &layer) == 1)
        for (size_t i = 0; i < j->n_freeze_layers; i++)
            if (j->freeze_layers[i] == layer) return 0;
    return 1;
}

int job_save_output(void *ctx, ft_model *m, ft_error *e) {
    ft_job *j = ctx;
    char *jinja = tmpl_jinja(j->tmpl);
    if (j->adapter) { /* a PEFT adapter dir, not a full model */
        int rc = lora_save(j->adapter, j->output_dir, j->model_dir ? j->model_dir : j->model_init, e);
        if (!rc) rc = export_tokenizer(j->tokenizer_dir, j->output_dir, jinja, e);
        free(jinja);
        return rc;
    }
    int rc = model_save(m, j->output_dir, j->train.save_dtype, e);
    /* the end-of-turn token the template trained (chatml <|im_end|>, Llama-3 <|eot_id|>, ...) stops generate() too */
    char eot[64];
    int eot_id = j->tok && tmpl_end_of_turn(j->tmpl, eot, sizeof eot) ? tok_token_id(j->tok, eot) : -1;
    if (!rc)
        rc = export_generation_config_eot(m->cfg.bos_token_id, m->cfg.eos_token_id, &eot_id, 1, m->cfg.pad_token_id,
                                          j->output_dir, e);
    if (!rc) rc = export_tokenizer(j->tokenizer_dir, j->output_dir, jinja, e);
    free(jinja);
    return rc;
}

void job_free(ft_job *j) {
    ft_dirlock_release(j->lock);
    dist_free(j->comm); /* before the backend: NCCL's communicator lives on its device */
    free(j->recipe_text);
    lora_free(j->adapter);
    lora_cfg_free(&j->lora);
    free(j->lora_init_from);
    model_free(j->model);
    if (j->backend) j->backend->destroy(j->backend);
    tok_free(j->tok);
    tmpl_free(j->tmpl);
    free(j->model_dir);
    free(j->model_init);
    free(j->tokenizer_dir);
    free(j->output_dir);
    rcp_free_list(j->data, j->n_data);
    rcp_free_list(j->eval_data, j->n_eval_data);
    free(j->freeze_layers);
    memset(j, 0, sizeof *j);
}
