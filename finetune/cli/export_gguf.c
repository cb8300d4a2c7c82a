/* finetune export-gguf: a Hugging Face model dir (optionally with a PEFT adapter merged in) as one llama.cpp GGUF
 * file (finetune/io/gguf_export.h says what goes in it).
 *
 * Everything that can be checked is checked before the file is built: the --type, the output against the inputs,
 * the config, the adapter against the config and the base (lora_merge_check, the same checks `finetune merge`
 * makes), every tensor's GGUF name, the tokenizer against the vocab size. Tensors are read one at a time
 * (lora_merge_read: the adapter's delta folded in as `merge` does), permuted, converted and added to the in-memory
 * GGUF, which is written to FILE.tmp.PID and renamed over FILE only when complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "datasets/template.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/backend/backend.h"
#include "finetune/base/paths.h"
#include "finetune/cli/cli.h"
#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf_export.h"
#include "finetune/io/gguf_write.h"
#include "finetune/io/safetensors.h"
#include "finetune/model/config.h"
#include "lora/lora.h"
#include "lora/lora_merge.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: finetune export-gguf MODEL_DIR [--adapter DIR] --type f16|bf16|q8_0|q4_0 -o FILE.gguf\n\n"
            "Write MODEL_DIR (LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM safetensors + config.json +\n"
            "tokenizer.json) as a GGUF v3 file for llama.cpp, laid out as its convert_hf_to_gguf.py writes it:\n"
            "general.* and <arch>.* metadata, Q/K rows permuted for llama.cpp's rope, the tokenizer (tokens,\n"
            "scores or merges, token types, special ids incl. the chat template's end-of-turn id as eot) and the\n"
            "model's own chat template in tokenizer.chat_template.\n"
            "  --type     f16 / bf16: 2-D weights in 16 bits; q8_0 / q4_0: ggml's 8-bit / 4-bit blocks of 32\n"
            "             (bit-exact with gguf-py). Norms, biases and 1-D tensors stay F32; a weight whose rows\n"
            "             are not a multiple of 32 is stored F16.\n"
            "  --adapter  a PEFT LoRA/DoRA adapter dir, merged into the weights first (as `finetune merge`);\n"
            "             its chat template, when it has one, is the one exported.\n"
            "  -o         the output file; written beside it and renamed into place, never inside an input.\n");
}

typedef struct export_args {
    const char *model, *adapter, *type, *out;
} export_args;

/* The dir whose tokenizer.json the GGUF carries: the model's, else the adapter's. */
static const char *tokenizer_dir(const export_args *a) {
    const char *dirs[2] = {a->model, a->adapter};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i]) continue;
        char *p = ft_path_join(dirs[i], "tokenizer.json");
        int has = ft_file_exists(p);
        free(p);
        if (has) return dirs[i];
    }
    return NULL;
}

/* The chat template (the adapter's, else the model's) and its end-of-turn token id (-1: it ends with EOS). */
static char *chat_template(const export_args *a, const char *tokdir, int *eot) {
    const char *dirs[2] = {a->adapter, a->model};
    tmpl *t = NULL;
    ft_error e = {0};
    char *text = NULL;
    *eot = -1;
    if (tmpl_auto(dirs, 2, &t, &e) != FT_OK) {
        /* a template our Jinja cannot run is still exported as text; only its end-of-turn id is unknown */
        fprintf(stderr, "finetune export-gguf: note: %s; the template text is exported, no eot id\n", e.msg);
        for (int i = 0; i < 2 && !text; i++)
            if (dirs[i]) text = lora_adapter_chat_template(dirs[i]);
        return text;
    }
    if (!t) return NULL;
    text = tmpl_jinja(t);
    char marker[64];
    ft_tokenizer *tok = NULL;
    if (tmpl_end_of_turn(t, marker, sizeof marker) && tok_load(tokdir, &tok, &e) == FT_OK) *eot = tok_token_id(tok, marker);
    tok_free(tok);
    tmpl_free(t);
    return text;
}

static int is_qk(const char *gguf_name, int *k) {
    const char *s = strrchr(gguf_name, '.'); /* ".weight" / ".bias" */
    size_t n = s ? (size_t)(s - gguf_name) : 0;
    if (n >= 7 && !strncmp(gguf_name + n - 7, ".attn_q", 7)) return *k = 0, 1;
    if (n >= 7 && !strncmp(gguf_name + n - 7, ".attn_k", 7)) return *k = 1, 1;
    return 0;
}

static int export_run(const export_args *a, int file_type, int weight_type, ft_error *e) {
    ft_config cfg;
    int rc = cfg_load(a->model, &cfg, e);
    if (rc) return rc;
    const char *arch = cfg.arch == FT_ARCH_QWEN2 ? "qwen2" : "llama";
    const char *tokdir = tokenizer_dir(a);
    if (!tokdir)
        return ft_fail(e, FT_EINPUT, "%s: no tokenizer.json (nor in the adapter dir); a GGUF file carries the tokenizer",
                       a->model);
    ft_backend *cpu = ft_backend_cpu_create();
    ft_model stub;
    memset(&stub, 0, sizeof stub);
    stub.cfg = cfg;
    stub.b = cpu;
    lora_adapter *ad = NULL;
    st_model *st = NULL;
    gguf_writer *w = NULL;
    float *buf = NULL, *tmp = NULL;
    char *tmpl_text = NULL;
    lora_merge_scratch scratch = {0};
    int64_t biggest = 0;
    char gname[128];
    /* 1. checks */
    if (a->adapter) rc = lora_load(a->adapter, &stub, &ad, e);
    if (!rc) rc = st_model_open(a->model, &st, e);
    if (!rc) rc = lora_merge_check(st, &cfg, ad, a->model, a->adapter, &biggest, e);
    for (size_t i = 0; !rc && i < st_model_count(st); i++) {
        const st_tensor_info *t = st_model_at(st, i);
        if (lora_is_bnb4_aux(t->name)) continue;
        if (gguf_export_tensor_name(t->name, cfg.num_layers, gname, sizeof gname) < 0)
            rc = ft_fail(e, FT_EINPUT, "%s: tensor %s has no place in a GGUF %s model", a->model, t->name, arch);
    }
    const char *need[2] = {"model.embed_tokens.weight", "model.norm.weight"};
    for (int i = 0; !rc && i < 2; i++)
        if (!st_model_find(st, need[i])) rc = ft_fail(e, FT_EINPUT, "%s: missing tensor %s", a->model, need[i]);
    if (!rc && !cfg.tie_word_embeddings && !st_model_find(st, "lm_head.weight"))
        rc = ft_fail(e, FT_EINPUT, "%s: missing tensor lm_head.weight (tie_word_embeddings is false)", a->model);
    for (int l = 0; !rc && l < cfg.num_layers; l++)
        for (int k = 0; !rc && k < FT_LIN_COUNT; k++) {
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, FT_LINEAR_NAMES[k]);
            if (!st_model_find(st, name)) rc = ft_fail(e, FT_EINPUT, "%s: missing tensor %s", a->model, name);
        }
    if (!rc && cfg.rope_type == FT_ROPE_DYNAMIC)
        fprintf(stderr, "finetune export-gguf: note: llama.cpp has no dynamic NTK rope scaling; the GGUF uses plain "
                        "rope (as convert_hf_to_gguf writes it)\n");
    /* 2. metadata and vocabulary */
    int eot = -1;
    if (!rc) {
        w = gguf_writer_new();
        tmpl_text = chat_template(a, tokdir, &eot);
        const char *base = strrchr(a->model, '/');
        char name[256];
        snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : a->model);
        size_t nl = strlen(name);
        while (nl > 1 && name[nl - 1] == '/') name[--nl] = 0;
        gguf_export_hparams h = {
            .arch = arch, .name = name, .file_type = file_type, .n_params = cfg_param_count(&cfg),
            .context_length = cfg.max_position_embeddings, .embedding_length = cfg.hidden_size,
            .block_count = cfg.num_layers, .feed_forward_length = cfg.intermediate_size, .head_count = cfg.num_heads,
            .head_count_kv = cfg.num_kv_heads, .head_dim = cfg.head_dim, .rope_freq_base = cfg.rope_theta,
            .rms_norm_eps = cfg.rms_norm_eps, .vocab_size = cfg.vocab_size,
            .rope_scaling_type = cfg.rope_type == FT_ROPE_LINEAR ? "linear" : NULL, .rope_scaling_factor = cfg.rope_factor,
            .sliding_window = cfg.sliding_window};
        rc = gguf_export_hparams_write(w, &h, e);
    }
    if (!rc) {
        gguf_export_ids ids = {cfg.bos_token_id, cfg.eos_token_id, -1, -1, cfg.pad_token_id, -1, -1};
        rc = gguf_export_vocab(w, tokdir, cfg.vocab_size, &ids, eot, tmpl_text, e);
    }
    /* 3. tensors, one at a time */
    if (!rc && cfg.rope_type == FT_ROPE_LLAMA3) {
        float *f = ft_xmalloc((size_t)cfg.head_dim / 2 * sizeof(float));
        gguf_export_llama3_rope_factors(cfg.head_dim, cfg.rope_theta, cfg.rope_factor, cfg.rope_low_freq_factor,
                                        cfg.rope_high_freq_factor, cfg.rope_original_max_position, f);
        int64_t n = cfg.head_dim / 2;
        rc = gguf_export_add_tensor(w, "rope_freqs.weight", f, 1, &n, weight_type, NULL, e);
        free(f);
    }
    if (!rc) {
        buf = malloc((size_t)(biggest > 0 ? biggest : 1) * sizeof(float));
        if (!buf) rc = ft_fail(e, FT_ENOMEM, "out of host memory (the largest tensor has %lld elements)", (long long)biggest);
    }
    int merged = 0, n_tensors = 0, fallback = 0;
    for (size_t i = 0; !rc && i < st_model_count(st); i++) {
        const st_tensor_info *t = st_model_at(st, i);
        if (lora_is_bnb4_aux(t->name)) continue;
        if (gguf_export_tensor_name(t->name, cfg.num_layers, gname, sizeof gname) != 1) continue;
        if (cfg.tie_word_embeddings && !strcmp(gname, "output.weight")) continue; /* llama.cpp reuses token_embd */
        int one;
        rc = lora_merge_read(st, &cfg, ad, t, buf, &scratch, a->model, &one, e);
        if (rc) break;
        merged += one;
        int64_t shape[2];
        int ndim = t->ndim, l;
        ft_linear which;
        if (t->dtype == FT_U8 && lora_merge_linear_name(t->name, cfg.num_layers, &l, &which)) {
            lora_linear_shape(&cfg, which, &shape[0], &shape[1]);
            ndim = 2;
        } else if (ndim <= 2) {
            shape[0] = t->shape[0];
            shape[1] = ndim == 2 ? t->shape[1] : 1;
        } else {
            rc = ft_fail(e, FT_EINPUT, "%s: tensor %s has %d dims", a->model, t->name, ndim);
            break;
        }
        int k;
        if (!strcmp(arch, "llama") && is_qk(gname, &k)) {
            int heads = k ? cfg.num_kv_heads : cfg.num_heads;
            int64_t cols = ndim == 2 ? shape[1] : 1;
            if (shape[0] % (2 * heads)) {
                rc = ft_fail(e, FT_EINPUT, "%s: tensor %s has %lld rows, not 2 * %d heads' worth", a->model, t->name,
                             (long long)shape[0], heads);
                break;
            }
            tmp = ft_xrealloc(tmp, (size_t)(shape[0] / heads * cols) * sizeof(float));
            gguf_export_permute(buf, shape[0], cols, heads, tmp);
        }
        int type;
        rc = gguf_export_add_tensor(w, gname, buf, ndim, shape, weight_type, &type, e);
        if (!rc && type == GGML_TYPE_F16 && weight_type != GGML_TYPE_F16) fallback++;
        n_tensors++;
    }
    if (!rc) rc = gguf_writer_finish(w, a->out, e);
    if (!rc) {
        struct stat sb;
        double mib = stat(a->out, &sb) == 0 ? (double)sb.st_size / (1024.0 * 1024.0) : 0;
        printf("wrote %s: GGUF v3, %s, %s, %d tensors, %.1f MiB", a->out, arch, a->type, n_tensors, mib);
        if (ad) printf(", %d LoRA linears merged (r=%d, scaling=%g)", merged, ad->cfg.r, (double)ad->scaling);
        printf("\n");
        if (fallback)
            printf("note: %d weight%s with rows not a multiple of 32 stored as F16 (as gguf-py does)\n", fallback,
                   fallback == 1 ? "" : "s");
        if (eot >= 0) printf("end-of-turn token id %d written as tokenizer.ggml.eot_token_id\n", eot);
    }
    gguf_writer_free(w);
    free(buf);
    free(tmp);
    free(tmpl_text);
    lora_merge_scratch_free(&scratch);
    if (st) st_model_close(st);
    lora_free(ad);
    cpu->destroy(cpu);
    return rc;
}

int cmd_export_gguf(int argc, char **argv) {
    export_args a = {0};
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--adapter") || !strcmp(argv[i], "--type") || !strcmp(argv[i], "-o") ||
                   !strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) return cli_usage_error("export-gguf", "missing value after %s", argv[i]);
            const char **dst = !strcmp(argv[i], "--adapter") ? &a.adapter : !strcmp(argv[i], "--type") ? &a.type : &a.out;
            *dst = argv[++i];
        } else if (argv[i][0] == '-' || a.model) {
            return cli_usage_error("export-gguf", "unknown option %s", argv[i]);
        } else {
            a.model = argv[i];
        }
    }
    if (!a.model || !a.type || !a.out) return cli_usage_error("export-gguf", "MODEL_DIR, --type and -o are required");
    int file_type, weight_type;
    int rc = gguf_export_parse_type(a.type, &file_type, &weight_type, &e);
    if (!rc) {
        const ft_path_input in[2] = {{a.model, "model directory"}, {a.adapter, "--adapter directory"}};
        rc = ft_path_guard_output(a.out, "-o", in, 2, &e);
    }
    struct stat sb;
    if (!rc && stat(a.out, &sb) == 0 && S_ISDIR(sb.st_mode))
        rc = ft_fail(&e, FT_EINPUT, "-o %s is a directory; name the .gguf file to write", a.out);
    if (!rc) rc = export_run(&a, file_type, weight_type, &e);
    return rc ? cli_report("export-gguf", &e) : 0;
}
