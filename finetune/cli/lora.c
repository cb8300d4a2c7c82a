/* finetune merge: fold a PEFT LoRA adapter into its base (W + scaling * B A, in fp32) and write an HF model dir.
 * finetune quantize: write a bitsandbytes 4-bit (NF4, double-quantized) checkpoint of a model.
 *
 * Both stream tensor by tensor: one tensor is read (mmapped pages dropped after use), transformed and
 * written, so peak memory is a few times the largest tensor, not the model. Everything that can be
 * checked up front (adapter config and shapes against the base, the base's tensors) is checked before
 * anything is written; the output is built in DIR.tmp-<pid> and renamed into place at the end, so a
 * failure leaves nothing behind. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "finetune/backend/backend.h"
#include "finetune/base/paths.h"
#include "finetune/cli/cli.h"
#include "finetune/model/config.h"
#include "finetune/io/export.h"
#include "lora/lora.h"
#include "lora/lora_merge.h"
#include "lora/nf4.h"
#include "finetune/model/model.h"
#include "finetune/io/safetensors.h"
#include "finetune/model/modelpath.h"

#define NEED_VALUE(cmd, i, argc, argv)                                                                     \
    do {                                                                                                   \
        if ((i) + 1 >= (argc)) return cli_usage_error(cmd, "missing value after %s", (argv)[i]);           \
    } while (0)

/* ---------- shared helpers ---------- */

static int parse_dtype(const char *s, ft_dtype *dt, ft_error *e) {
    if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32")) *dt = FT_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *dt = FT_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "f16") || !strcmp(s, "float16")) *dt = FT_F16;
    else return ft_fail(e, FT_EINPUT, "--dtype %s: expected bf16, fp16 or fp32", s);
    return FT_OK;
}

/* The dtype a checkpoint says it is in (config torch_dtype), fp32 when it says nothing. */
static ft_dtype config_dtype(const ft_config *c) {
    if (!strcmp(c->torch_dtype, "bfloat16")) return FT_BF16;
    if (!strcmp(c->torch_dtype, "float16")) return FT_F16;
    return FT_F32;
}

static const char *torch_name(ft_dtype dt) {
    return dt == FT_BF16 ? "bfloat16" : dt == FT_F16 ? "float16" : "float32";
}

/* Give the kernel back the pages of a tensor we are done with: a mmapped checkpoint would otherwise stay
 * resident (and count in RSS) as it is read through. The pages stay in the page cache. */
static void drop_pages(const void *p, size_t n) {
    if (!p || !n) return;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(ps - 1), end = ((uintptr_t)p + n + (uintptr_t)ps - 1) & ~(uintptr_t)(ps - 1);
    madvise((void *)a, end - a, MADV_DONTNEED);
}

/* fp32 -> dt in place semantics: dst has room for n elements of dt. */
static void convert_out(const float *src, void *dst, size_t n, ft_dtype dt) {
    if (dt == FT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = dt == FT_F16 ? ft_f32_to_f16(src[i]) : ft_f32_to_bf16(src[i]);
}

/* Round fp32 values through dt (what a model loaded in dt holds). */
static void round_through(float *x, size_t n, ft_dtype dt) {
    if (dt == FT_BF16)
        for (size_t i = 0; i < n; i++) x[i] = ft_bf16_to_f32(ft_f32_to_bf16(x[i]));
    else if (dt == FT_F16)
        for (size_t i = 0; i < n; i++) x[i] = ft_f16_to_f32(ft_f32_to_f16(x[i]));
}

/* The output dir must not exist or be empty; returns a fresh temp dir next to it to build in. */
static int out_prepare_as(const char *what, const char *out, char **tmp, ft_error *e) {
    DIR *d = opendir(out);
    if (d) {
        struct dirent *de;
        int nonempty = 0;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) nonempty = 1;
        closedir(d);
        if (nonempty)
            return ft_fail(e, FT_EINPUT, "%s %s: directory exists and is not empty (choose a new one)", what, out);
    } else if (errno != ENOENT) {
        return ft_fail(e, FT_EIO, "%s %s: %s", what, out, strerror(errno));
    }
    /* what an earlier, killed run into the same --out left beside it (OUT.tmp-PID of a dead PID) */
    char *dir = ft_xstrdup(out), *prefix = ft_xmalloc(strlen(out) + 8);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0; /* "x/" is x */
    char *slash = strrchr(dir, '/');
    sprintf(prefix, "%s.tmp-", slash ? slash + 1 : dir);
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    ft_remove_stale_tmp(slash ? dir : ".", prefix);
    free(prefix);
    free(dir);
    size_t n = strlen(out) + 32;
    *tmp = ft_xmalloc(n);
    snprintf(*tmp, n, "%s.tmp-%ld", out, (long)getpid());
    return ft_mkdir_p(*tmp, e);
}

static int out_prepare(const char *out, char **tmp, ft_error *e) { return out_prepare_as("--out", out, tmp, e); }

static void rm_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = ft_path_join(dir, de->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static int out_commit(const char *tmp, const char *out, ft_error *e) {
    rmdir(out); /* an empty dir given as --out */
    if (rename(tmp, out) != 0) return ft_fail_sys(e, errno, "rename %s -> %s", tmp, out);
    return FT_OK;
}

/* A full disk: nothing was written under --out (the temp dir beside it is removed), the inputs are read only. */
static void no_space_hint(const char *cmd, ft_error *e) {
    if (ft_error_no_space(e))
        ft_error_append(e, ". The disk is full: nothing was written under --out and the inputs are unchanged; free "
                           "space and run 'finetune %s' again", cmd);
}

/* tokenizer files from the first of dirs that has tokenizer.json or is a GGUF file (none: nothing to copy). */
static int copy_tokenizer(const char *const *dirs, int n, const char *out, const char *chat_template, ft_error *e) {
    for (int i = 0; i < n; i++)
        if (dirs[i] && export_has_tokenizer(dirs[i])) return export_tokenizer(dirs[i], out, chat_template, e);
    fprintf(stderr, "note: no tokenizer.json in the base or adapter dir; the output has no tokenizer files\n");
    return FT_OK;
}

static int is_float(ft_dtype dt) { return dt == FT_F32 || dt == FT_F16 || dt == FT_BF16; }

/* ---------- merge ---------- */

static void merge_usage(FILE *f) {
    fprintf(f,
            "usage: finetune merge --base DIR --adapter DIR --out DIR [--dtype bf16|fp16|fp32]\n"
            "                      [--max-shard-bytes N]\n\n"
            "Fold a PEFT LoRA adapter into its base model: W + scaling * B A, computed in fp32, written as a\n"
            "Hugging Face model dir (config.json, generation_config.json, model safetensors sharded as\n"
            "save_pretrained does, the base's tokenizer files with the adapter dir's chat template).\n"
            "A bitsandbytes 4-bit base is dequantized first, as PEFT does. Streams tensor by tensor.\n"
            "--dtype defaults to the base config's torch_dtype (fp32 when it has none).\n"
            "--out must not exist or be empty; nothing is written unless the merge succeeds.\n");
}

/* The base's own head: a classifier merged from a causal base writes the adapter's score instead. */
static int is_lm_head(const char *name) { return !strcmp(name, "lm_head.weight") || !strcmp(name, "score.weight"); }

/* A SEQ_CLS adapter holds base_model.model.score.weight [K, D]: *cls = 1 and cfg becomes a classifier of K
 * labels (the base's own when it is one already, else the names and pad id of the adapter dir's
 * classify.json, else LABEL_i). */
static int seq_cls_head(const char *adapter, ft_config *cfg, int *cls, ft_error *e) {
    char *path = ft_path_join(adapter, "adapter_model.safetensors");
    st_file *f = NULL;
    *cls = 0;
    int rc = st_open(path, &f, e);
    free(path);
    if (rc) return rc;
    const st_tensor_info *t = st_find(f, "base_model.model.score.weight");
    int K = t && t->ndim == 2 ? (int)t->shape[0] : 0;
    st_close(f);
    if (!t) return FT_OK;
    *cls = 1;
    if (cfg->num_labels > 0) return FT_OK; /* lora_load checks the shape against the base's head */
    char names[FT_MAX_LABELS][FT_LABEL_LEN];
    const char *nm[FT_MAX_LABELS];
    int n = 0, pad = -1;
    char *cp = ft_path_join(adapter, "classify.json"), *text = NULL;
    if (ft_file_exists(cp) && ft_read_file(cp, &text, NULL, e) == FT_OK) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *l = cJSON_GetObjectItem(j, "labels"), *it, *p = cJSON_GetObjectItem(j, "pad_token_id");
        cJSON_ArrayForEach(it, l) if (cJSON_IsString(it) && n < FT_MAX_LABELS) {
            snprintf(names[n], FT_LABEL_LEN, "%s", it->valuestring);
            nm[n] = names[n];
            n++;
        }
        if (cJSON_IsNumber(p)) pad = p->valueint;
        cJSON_Delete(j);
    }
    free(text);
    free(cp);
    rc = cfg_set_labels(cfg, K, n == K ? nm : NULL, K == 1 ? "regression" : "single_label_classification", e);
    if (!rc && pad >= 0) cfg->pad_token_id = pad;
    return rc;
}

typedef struct merge_args {
    const char *base, *adapter, *out, *dtype;
    uint64_t max_shard;
} merge_args;

static int merge_run(const merge_args *a, ft_error *e) {
    ft_config cfg;
    int rc = cfg_load(a->base, &cfg, e);
    if (rc) return rc;
    ft_dtype dt = config_dtype(&cfg);
    if (a->dtype && (rc = parse_dtype(a->dtype, &dt, e))) return rc;
    ft_backend *cpu = ft_backend_cpu_create();
    ft_model stub;
    memset(&stub, 0, sizeof stub);
    stub.cfg = cfg;
    stub.b = cpu;
    lora_adapter *ad = NULL;
    st_model *st = NULL;
    char *tmp = NULL, *tmpl = NULL;
    st_sharded *w = NULL;
    float *buf = NULL;
    void *conv = NULL;
    /* A SEQ_CLS adapter (finetune classify with LoRA, or PEFT's): the output is a classifier with the adapter's
     * head; the base's lm_head is left out. */
    int cls = 0;
    rc = seq_cls_head(a->adapter, &cfg, &cls, e);
    if (!rc) stub.cfg = cfg;
    if (!rc && cls) {
        weights_shape(&cfg, FT_DEV_CPU, &stub.w);
        stub.w.score.data = ft_xcalloc((size_t)ft_numel(&stub.w.score), sizeof(float));
    }
    lora_merge_scratch scratch = {0};
    /* 1. everything checked before writing: the adapter (config, tensors, shapes against the config), and the
     * base's tensors (every adapted linear present with the config's shape, all tensors usable) */
    if (!rc) rc = lora_load(a->adapter, &stub, &ad, e);
    if (!rc) rc = st_model_open(a->base, &st, e);
    int64_t biggest = 0;
    if (!rc) rc = lora_merge_check(st, &cfg, ad, a->base, a->adapter, &biggest, e);
    /* 2. build the output in a temp dir */
    if (!rc) rc = out_prepare(a->out, &tmp, e);
    if (!rc) {
        ft_config oc = cfg;
        snprintf(oc.torch_dtype, sizeof oc.torch_dtype, "%s", torch_name(dt));
        rc = cfg_write(tmp, &oc, e);
    }
    if (!rc) rc = export_generation_config(cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, tmp, e);
    if (!rc) {
        tmpl = lora_adapter_chat_template(a->adapter);
        const char *dirs[2] = {a->base, a->adapter};
        rc = copy_tokenizer(dirs, 2, tmp, tmpl, e);
    }
    if (!rc && cls) { /* how `finetune predict` reads data for this classifier, kept beside it */
        char *src = ft_path_join(a->adapter, "classify.json"), *dst = ft_path_join(tmp, "classify.json"), *text = NULL;
        size_t len = 0;
        if (ft_file_exists(src)) {
            rc = ft_read_file(src, &text, &len, e);
            if (!rc) rc = ft_write_file_atomic(dst, text, len, e);
        }
        free(text);
        free(src);
        free(dst);
    }
    if (!rc) rc = st_sharded_open(tmp, "model", a->max_shard, &w, e);
    if (!rc) rc = st_sharded_metadata(w, "format", "pt", e);
    for (size_t i = 0; !rc && i < st_model_count(st); i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int l;
        ft_linear which;
        if (lora_is_bnb4_aux(t->name)) continue;
        if (cls && is_lm_head(t->name)) continue;
        if (t->dtype == FT_U8 && lora_merge_linear_name(t->name, cfg.num_layers, &l, &which)) {
            int64_t shape[2];
            lora_linear_shape(&cfg, which, &shape[0], &shape[1]);
            rc = st_sharded_declare(w, t->name, dt, 2, shape, e);
        } else {
            rc = st_sharded_declare(w, t->name, dt, t->ndim, t->shape, e);
        }
    }
    if (!rc && cls) rc = st_sharded_declare(w, "score.weight", dt, 2, stub.w.score.shape, e);
    /* 3. stream: read one tensor in fp32, add the adapter's delta, convert, write, forget */
    if (!rc) {
        buf = malloc((size_t)(biggest > 0 ? biggest : 1) * sizeof(float));
        conv = malloc((size_t)(biggest > 0 ? biggest : 1) * ft_dtype_size(dt));
        if (!buf || !conv)
            rc = ft_fail(e, FT_ENOMEM, "out of host memory (the largest tensor has %lld elements)", (long long)biggest);
    }
    int merged = 0;
    if (!rc && cls) { /* the head, from the adapter */
        size_t n = (size_t)ft_numel(&stub.w.score);
        convert_out(stub.w.score.data, conv, n, dt);
        rc = st_sharded_write(w, "score.weight", conv, e);
    }
    for (size_t i = 0; !rc && i < st_model_count(st); i++) {
        const st_tensor_info *t = st_model_at(st, i);
        if (lora_is_bnb4_aux(t->name)) continue;
        if (cls && is_lm_head(t->name)) continue;
        int one;
        rc = lora_merge_read(st, &cfg, ad, t, buf, &scratch, a->base, &one, e);
        if (rc) break;
        merged += one;
        int l;
        ft_linear which;
        int64_t n = 1, ro, co;
        if (t->dtype == FT_U8 && lora_merge_linear_name(t->name, cfg.num_layers, &l, &which)) {
            lora_linear_shape(&cfg, which, &ro, &co);
            n = ro * co;
        } else {
            for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        }
        convert_out(buf, conv, (size_t)n, dt);
        rc = st_sharded_write(w, t->name, conv, e);
        if (!rc && i == st_model_count(st) / 2) ft_fault_point("merge-mid-write"); /* test-only kill point */
    }
    int shards = w && !rc ? st_sharded_num_shards(w) : 0; /* finish frees w */
    if (w) {
        if (rc) st_sharded_abort(w);
        else rc = st_sharded_finish(w, e);
    }
    if (!rc) rc = out_commit(tmp, a->out, e);
    else if (tmp) rm_flat_dir(tmp);
    if (!rc)
        printf("merged %d LoRA linears (r=%d, scaling=%g) into %s (%s, %d shard%s)\n", merged, ad->cfg.r,
               (double)ad->scaling, a->out, torch_name(dt), shards, shards == 1 ? "" : "s");
    free(buf);
    free(conv);
    lora_merge_scratch_free(&scratch);
    free(tmp);
    free(tmpl);
    if (st) st_model_close(st);
    lora_free(ad);
    if (cls) {
        free(stub.w.score.data);
        free(stub.w.layers);
    }
    cpu->destroy(cpu);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    merge_args a = {0};
    ft_error e = {0};
    int rc = FT_OK;
    for (int i = 1; i < argc && !rc; i++) {
        if (cli_is_help(argv[i])) {
            merge_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--base")) {
            NEED_VALUE("merge", i, argc, argv);
            a.base = argv[++i];
        } else if (!strcmp(argv[i], "--adapter")) {
            NEED_VALUE("merge", i, argc, argv);
            a.adapter = argv[++i];
        } else if (!strcmp(argv[i], "--out")) {
            NEED_VALUE("merge", i, argc, argv);
            a.out = argv[++i];
        } else if (!strcmp(argv[i], "--dtype")) {
            NEED_VALUE("merge", i, argc, argv);
            a.dtype = argv[++i];
        } else if (!strcmp(argv[i], "--max-shard-bytes")) {
            NEED_VALUE("merge", i, argc, argv);
            long v;
            rc = cli_parse_int("--max-shard-bytes", argv[++i], 1, 0x7fffffffffffffffL, &v, &e);
            a.max_shard = (uint64_t)v;
        } else {
            return cli_usage_error("merge", "unknown option %s", argv[i]);
        }
    }
    if (!rc && (!a.base || !a.adapter || !a.out))
        return cli_usage_error("merge", "--base, --adapter and --out are required");
    if (!rc) {
        const ft_path_input in[2] = {{a.base, "--base model directory"}, {a.adapter, "--adapter directory"}};
        rc = ft_path_guard_output(a.out, "--out", in, 2, &e);
    }
    if (!rc) rc = merge_run(&a, &e);
    if (rc) no_space_hint("merge", &e);
    return rc ? cli_report("merge", &e) : 0;
}

/* ---------- quantize ---------- */

static void quantize_usage(FILE *f) {
    fprintf(f,
            "usage: finetune quantize MODEL_DIR --out DIR [--dtype bf16|fp16|fp32]\n\n"
            "Write a bitsandbytes 4-bit checkpoint (NF4, blocksize 64, double-quantized absmax) that\n"
            "transformers + bitsandbytes load, and that `finetune sft` takes as a QLoRA base: every decoder\n"
            "linear becomes weight (U8 packed) + absmax, quant_map, nested_absmax, nested_quant_map and\n"
            "quant_state.bitsandbytes__nf4; other tensors are stored in --dtype (also the compute dtype;\n"
            "default: the config's torch_dtype, fp32 when it has none), and config.json gets\n"
            "quantization_config. The bytes equal bitsandbytes' (for the weights as loaded in --dtype).\n");
}

/* config.json with bitsandbytes' quantization_config (the keys transformers 5.23 writes), sorted in. */
static int write_quant_config(const char *dir, const ft_config *cfg, ft_dtype dt, ft_error *e) {
    ft_config oc = *cfg;
    snprintf(oc.torch_dtype, sizeof oc.torch_dtype, "%s", torch_name(dt));
    int rc = cfg_write(dir, &oc, e);
    if (rc) return rc;
    char *path = ft_path_join(dir, "config.json"), *text = NULL;
    rc = ft_read_file(path, &text, NULL, e);
    cJSON *o = rc ? NULL : cJSON_Parse(text);
    if (!rc && !o) rc = ft_fail(e, FT_EINTERNAL, "%s: cannot re-read the config just written", path);
    if (!rc) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddBoolToObject(q, "_load_in_4bit", 1);
        cJSON_AddBoolToObject(q, "_load_in_8bit", 0);
        cJSON_AddStringToObject(q, "bnb_4bit_compute_dtype", torch_name(dt));
        cJSON_AddStringToObject(q, "bnb_4bit_quant_storage", "uint8");
        cJSON_AddStringToObject(q, "bnb_4bit_quant_type", "nf4");
        cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", 1);
        cJSON_AddBoolToObject(q, "llm_int8_enable_fp32_cpu_offload", 0);
        cJSON_AddBoolToObject(q, "llm_int8_has_fp16_weight", 0);
        cJSON_AddNullToObject(q, "llm_int8_skip_modules");
        cJSON_AddItemToObject(q, "llm_int8_threshold", cJSON_CreateRaw("6.0"));
        cJSON_AddBoolToObject(q, "load_in_4bit", 1);
        cJSON_AddBoolToObject(q, "load_in_8bit", 0);
        cJSON_AddStringToObject(q, "quant_method", "bitsandbytes");
        /* insert before the first key that sorts after it */
        cJSON *it = o->child;
        while (it && strcmp(it->string, "quantization_config") < 0) it = it->next;
        if (it) {
            q->string = ft_xstrdup("quantization_config");
            q->prev = it->prev;
            q->next = it;
            if (it == o->child) o->child = q;
            else it->prev->next = q;
            it->prev = q;
        } else {
            cJSON_AddItemToObject(o, "quantization_config", q);
        }
        char *out = cJSON_Print(o);
        size_t n = strlen(out);
        out = ft_xrealloc(out, n + 2);
        out[n] = '\n';
        out[n + 1] = 0;
        rc = ft_write_file_atomic(path, out, n + 1, e);
        free(out);
    }
    cJSON_Delete(o);
    free(text);
    free(path);
    return rc;
}

/* Names of the six tensors of one 4-bit weight. */
static const char *const QSUFFIX[6] = {"", ".absmax", ".nested_absmax", ".nested_quant_map", ".quant_map",
                                       ".quant_state.bitsandbytes__nf4"};

static int quantize_run(const char *src, const char *out, const char *dtype, ft_error *e) {
    ft_config cfg;
    int rc = cfg_load(src, &cfg, e);
    if (rc) return rc;
    ft_dtype dt = config_dtype(&cfg);
    if (dtype && (rc = parse_dtype(dtype, &dt, e))) return rc;
    st_model *st = NULL;
    rc = st_model_open(src, &st, e);
    size_t cnt = rc ? 0 : st_model_count(st);
    char **qstate = ft_xcalloc(cnt + 1, sizeof *qstate); /* quant_state JSON per tensor (linears) */
    int64_t biggest = 0;
    float *buf = NULL;
    void *conv = NULL;
    char *tmp = NULL;
    st_sharded *w = NULL;
    /* 1. check and find every linear's quant-state JSON (its nested_offset needs the quantization) */
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        if (n > biggest) biggest = n;
        if (!is_float(t->dtype))
            rc = ft_fail(e, FT_EINPUT, "%s: tensor %s is %s; quantize takes a F32/F16/BF16 checkpoint%s", src, t->name,
                         ft_dtype_name(t->dtype), t->dtype == FT_U8 ? " (this one looks 4-bit already)" : "");
    }
    if (!rc) buf = malloc((size_t)(biggest > 0 ? biggest : 1) * sizeof(float));
    if (!rc && !buf) rc = ft_fail(e, FT_ENOMEM, "out of host memory");
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int l;
        ft_linear which;
        if (!lora_merge_linear_name(t->name, cfg.num_layers, &l, &which)) continue;
        int64_t ro, co;
        lora_linear_shape(&cfg, which, &ro, &co);
        if (t->ndim != 2 || t->shape[0] != ro || t->shape[1] != co) {
            rc = ft_fail(e, FT_EINPUT, "%s: tensor %s should be [%lld, %lld] for this config", src, t->name,
                         (long long)ro, (long long)co);
            break;
        }
        nf4_weight q;
        rc = st_read_f32(t, buf, (size_t)(ro * co), e);
        drop_pages(t->data, t->nbytes);
        round_through(buf, (size_t)(ro * co), dt);
        if (!rc) rc = nf4_weight_quantize(buf, ro, co, &q, e);
        if (!rc) {
            qstate[i] = nf4_quant_state_json(&q, torch_name(dt));
            nf4_weight_free(&q);
        }
    }
    for (int l = 0; !rc && l < cfg.num_layers; l++)
        for (int k = 0; !rc && k < FT_LIN_COUNT; k++) {
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, FT_LINEAR_NAMES[k]);
            if (!st_model_find(st, name)) rc = ft_fail(e, FT_EINPUT, "%s: missing tensor %s", src, name);
        }
    /* 2. declare */
    if (!rc) rc = out_prepare(out, &tmp, e);
    if (!rc) rc = write_quant_config(tmp, &cfg, dt, e);
    if (!rc) rc = export_generation_config(cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, tmp, e);
    if (!rc && export_has_tokenizer(src)) rc = export_tokenizer(src, tmp, NULL, e);
    if (!rc) rc = st_sharded_open(tmp, "model", 0, &w, e);
    if (!rc) rc = st_sharded_metadata(w, "format", "pt", e);
    char key[200];
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        if (!qstate[i]) {
            rc = st_sharded_declare(w, t->name, dt, t->ndim, t->shape, e);
            continue;
        }
        int64_t n = t->shape[0] * t->shape[1], nb = (n + NF4_BLOCK - 1) / NF4_BLOCK;
        int64_t shapes[6][2] = {{(n + 1) / 2, 1}, {nb, 0}, {(nb + NF4_NESTED_BLOCK - 1) / NF4_NESTED_BLOCK, 0},
                                {256, 0},         {16, 0}, {(int64_t)strlen(qstate[i]), 0}};
        const ft_dtype dts[6] = {FT_U8, FT_U8, FT_F32, FT_F32, FT_F32, FT_U8};
        for (int j = 0; j < 6 && !rc; j++) {
            snprintf(key, sizeof key, "%s%s", t->name, QSUFFIX[j]);
            rc = st_sharded_declare(w, key, dts[j], j == 0 ? 2 : 1, shapes[j], e);
        }
    }
    /* 3. write, one tensor at a time */
    if (!rc) conv = malloc((size_t)(biggest > 0 ? biggest : 1) * ft_dtype_size(dt));
    if (!rc && !conv) rc = ft_fail(e, FT_ENOMEM, "out of host memory");
    float dmap[256];
    nf4_dynamic_map(dmap);
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        rc = st_read_f32(t, buf, (size_t)n, e);
        drop_pages(t->data, t->nbytes);
        if (rc) break;
        if (!qstate[i]) {
            convert_out(buf, conv, (size_t)n, dt);
            rc = st_sharded_write(w, t->name, conv, e);
            continue;
        }
        nf4_weight q;
        round_through(buf, (size_t)n, dt);
        rc = nf4_weight_quantize(buf, t->shape[0], t->shape[1], &q, e);
        if (rc) break;
        const void *data[6] = {q.packed, q.absmax_q, q.nested, dmap, NF4_CODE, qstate[i]};
        for (int j = 0; j < 6 && !rc; j++) {
            snprintf(key, sizeof key, "%s%s", t->name, QSUFFIX[j]);
            rc = st_sharded_write(w, key, data[j], e);
        }
        nf4_weight_free(&q);
    }
    if (w) {
        if (rc) st_sharded_abort(w);
        else rc = st_sharded_finish(w, e);
    }
    if (!rc) rc = out_commit(tmp, out, e);
    else if (tmp) rm_flat_dir(tmp);
    if (!rc) printf("wrote a 4-bit NF4 checkpoint (bitsandbytes layout, compute dtype %s) to %s\n", torch_name(dt), out);
    for (size_t i = 0; i < cnt; i++) free(qstate[i]);
    free(qstate);
    free(buf);
    free(conv);
    free(tmp);
    if (st) st_model_close(st);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *src = NULL, *out = NULL, *dtype = NULL;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            quantize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out")) {
            NEED_VALUE("quantize", i, argc, argv);
            out = argv[++i];
        } else if (!strcmp(argv[i], "--dtype")) {
            NEED_VALUE("quantize", i, argc, argv);
            dtype = argv[++i];
        } else if (argv[i][0] == '-' || src) {
            return cli_usage_error("quantize", "unknown option %s", argv[i]);
        } else {
            src = argv[i];
        }
    }
    if (!src || !out) return cli_usage_error("quantize", "MODEL_DIR and --out are required");
    const ft_path_input in = {src, "model directory"};
    int rc = ft_path_guard_output(out, "--out", &in, 1, &e);
    if (!rc) rc = quantize_run(src, out, dtype, &e);
    return rc ? cli_report("quantize", &e) : 0;
}

/* ---------- convert: a GGUF model file to a Hugging Face model dir ---------- */

static void convert_usage(FILE *f) {
    fprintf(f,
            "usage: finetune convert FILE.gguf OUT_DIR [--dtype bf16|fp16|fp32]\n\n"
            "Write the Hugging Face model dir of a GGUF model file (llama architecture: Llama, Mistral,\n"
            "SmolLM, ...): config.json and generation_config.json from its metadata, model.safetensors\n"
            "(sharded above 5 GB) with every tensor dequantized (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,\n"
            "Q4_K, Q5_K, Q6_K) and q_proj/k_proj un-permuted as transformers does, and tokenizer.json +\n"
            "tokenizer_config.json (with the chat template) built from the tokenizer metadata. --dtype:\n"
            "default the file's float type for an F16/BF16 file, fp32 for a quantized one (exact).\n"
            "OUT_DIR must not exist or be empty; it appears whole or not at all. Every command that takes\n"
            "a model dir also takes the .gguf file itself, converting in memory.\n");
}

static int convert_run(const char *src, const char *out, const char *dtype, ft_error *e) {
    if (!modelpath_is_gguf(src))
        return ft_fail(e, FT_EINPUT, "%s: not a GGUF file (convert reads a .gguf model file; a model dir is "
                       "already Hugging Face)", src);
    ft_config cfg;
    int n_checked = 0, rc = model_check_checkpoint(src, &cfg, &n_checked, NULL, e);
    if (rc) return rc;
    ft_dtype dt = config_dtype(&cfg);
    if (dtype && (rc = parse_dtype(dtype, &dt, e))) return rc;
    st_model *st = NULL;
    st_sharded *w = NULL;
    char *tmp = NULL;
    float *buf = NULL;
    void *conv = NULL;
    rc = st_model_open(src, &st, e);
    size_t cnt = rc ? 0 : st_model_count(st);
    int64_t biggest = 1;
    for (size_t i = 0; i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        if (n > biggest) biggest = n;
    }
    if (!rc) {
        buf = malloc((size_t)biggest * sizeof(float));
        conv = malloc((size_t)biggest * ft_dtype_size(dt));
        if (!buf || !conv) rc = ft_fail(e, FT_ENOMEM, "out of host memory (the largest tensor has %lld elements)",
                                        (long long)biggest);
    }
    if (!rc) rc = out_prepare_as("OUT_DIR", out, &tmp, e);
    if (!rc) {
        ft_config oc = cfg;
        snprintf(oc.torch_dtype, sizeof oc.torch_dtype, "%s", torch_name(dt));
        rc = cfg_write(tmp, &oc, e);
    }
    if (!rc) rc = export_generation_config(cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, tmp, e);
    if (!rc && export_has_tokenizer(src)) rc = export_tokenizer(src, tmp, NULL, e);
    if (!rc) rc = st_sharded_open(tmp, "model", 0, &w, e);
    if (!rc) rc = st_sharded_metadata(w, "format", "pt", e);
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        rc = st_sharded_declare(w, t->name, dt, t->ndim, t->shape, e);
    }
    for (size_t i = 0; !rc && i < cnt; i++) {
        const st_tensor_info *t = st_model_at(st, i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        rc = st_read_f32(t, buf, (size_t)n, e);
        drop_pages(t->data, t->nbytes);
        if (!rc) {
            convert_out(buf, conv, (size_t)n, dt);
            rc = st_sharded_write(w, t->name, conv, e);
        }
    }
    if (w) {
        if (rc) st_sharded_abort(w);
        else rc = st_sharded_finish(w, e);
    }
    if (!rc) rc = out_commit(tmp, out, e);
    else if (tmp) rm_flat_dir(tmp);
    if (rc) no_space_hint("convert", e);
    else printf("wrote %s: %zu tensors in %s (%d checked against the config), config, tokenizer\n", out, cnt,
                torch_name(dt), n_checked);
    free(buf);
    free(conv);
    free(tmp);
    st_model_close(st);
    return rc;
}

int cmd_convert(int argc, char **argv) {
    const char *src = NULL, *out = NULL, *dtype = NULL;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            convert_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--dtype")) {
            NEED_VALUE("convert", i, argc, argv);
            dtype = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("convert", "unknown option %s", argv[i]);
        } else if (!src) {
            src = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            return cli_usage_error("convert", "unexpected argument %s", argv[i]);
        }
    }
    if (!src || !out) return cli_usage_error("convert", "FILE.gguf and OUT_DIR are required");
    const ft_path_input in = {src, "GGUF file"};
    int rc = ft_path_guard_output(out, "OUT_DIR", &in, 1, &e);
    if (!rc) rc = convert_run(src, out, dtype, &e);
    return rc ? cli_report("convert", &e) : 0;
}
