/* finetune export-gguf, read back through io/gguf:
 * - tiny-random-llama (the Hub checkpoint) with the Llama-2 tokenizer, each --type: llama.cpp's metadata keys and
 *   values, the vocabulary as "llama" (tokens, merge-rank scores, token types, special ids, add_bos, the chat
 *   template), every tensor: F32 norms exact, F16/BF16 weights equal to the HF weights rounded (after undoing the
 *   Q/K permutation, written here independently of the exporter), Q8_0 within half a step of each block, Q4_0
 *   within one step, and the F16 fallback where rows are not a multiple of 32;
 * - a byte-level (SmolLM tokenizer) model made by `finetune init`, tied embeddings: "gpt2" with merges, pre
 *   "smollm", the chat template's end-of-turn id as eot, no output.weight;
 * - --adapter: PEFT's own merge_and_unload result (tests/fixtures/lora/peft_grads.safetensors "merged/...",
 *   adapter peft_a on llama-gqa, 2 KV heads) is what the GGUF holds, K permuted with the KV head count;
 * - refusals exit 2 and leave no file: -o inside the model dir, an unknown --type, an adapter of another model,
 *   a tokenizer with more ids than the model's vocab_size. */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../test.h"
#include "finetune/base/util.h"
#include "finetune/cli/cli.h"
#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf.h"
#include "finetune/io/safetensors.h"

static char tmp[512];

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd)) fprintf(stderr, "command failed: %s\n", cmd);
}

static int export(const char *model, const char *adapter, const char *type, const char *out) {
    char *argv[10] = {"export-gguf", (char *)model, "--type", (char *)type, "-o", (char *)out};
    int n = 6;
    if (adapter) argv[n++] = "--adapter", argv[n++] = (char *)adapter;
    argv[n] = NULL;
    return cmd_export_gguf(n, argv);
}

static int64_t kv_int(gguf_file *f, const char *key) {
    int64_t v = -999;
    ft_error e;
    CHECK_MSG(gguf_get_int(f, key, &v, &e) == FT_OK, "%s", key);
    return v;
}
static double kv_float(gguf_file *f, const char *key) {
    double v = -999;
    ft_error e;
    CHECK_MSG(gguf_get_float(f, key, &v, &e) == FT_OK, "%s", key);
    return v;
}
static int kv_str_is(gguf_file *f, const char *key, const char *want) {
    char *s = NULL;
    ft_error e;
    int ok = gguf_get_str(f, key, &s, &e) == FT_OK && !strcmp(s, want);
    if (!ok) fprintf(stderr, "  %s = %s, expected %s\n", key, s ? s : "(absent)", want);
    free(s);
    return ok;
}
static int arr_str_is(gguf_file *f, const char *key, uint64_t i, const char *want) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    const char *s;
    uint64_t n;
    if (!kv || i >= kv->n || gguf_kv_str(kv, i, &s, &n)) return 0;
    return n == strlen(want) && !memcmp(s, want, n);
}
static int64_t arr_int(gguf_file *f, const char *key, uint64_t i) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    int64_t v = -999;
    if (kv && i < kv->n) gguf_kv_int(kv, i, &v);
    return v;
}

static float round_to(int type, float x) {
    if (type == GGML_TYPE_F16) return ft_f16_to_f32(ft_f32_to_f16(x));
    if (type == GGML_TYPE_BF16) return ft_bf16_to_f32(ft_f32_to_bf16(x));
    return x;
}

/* The HF tensor hf (n values, rows x cols) against GGUF tensor gname: undo llama.cpp's Q/K permutation (heads > 0)
 * and compare: F32/F16/BF16 exactly to the rounded value, Q8_0 within about half a block step (d = max|x| / 127),
 * Q4_0 within about one step (max|x| / 8). Returns the tensor's type (-1 when absent). */
static int check_tensor(gguf_file *f, const char *gname, const float *hf, int64_t rows, int64_t cols, int heads,
                        float tol) {
    const gguf_tensor *t = gguf_find_tensor(f, gname);
    CHECK_MSG(t != NULL, "tensor %s", gname);
    if (!t) return -1;
    int64_t n = rows * cols;
    CHECK_MSG((int64_t)t->n_elems == n && t->ne[0] == (uint64_t)cols, "%s shape", gname);
    if ((int64_t)t->n_elems != n) return t->type;
    float *g = malloc((size_t)n * sizeof(float)), *want = malloc((size_t)n * sizeof(float));
    ft_error e;
    CHECK(gguf_read_f32(f, t, g, (uint64_t)n, &e) == FT_OK);
    memcpy(want, hf, (size_t)n * sizeof(float));
    if (heads > 0) { /* gguf row h*hd + 2i + j holds HF row h*hd + j*hd/2 + i */
        int64_t hd = rows / heads, half = hd / 2;
        for (int h = 0; h < heads; h++)
            for (int64_t i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    memcpy(want + (h * hd + 2 * i + j) * cols, hf + (h * hd + j * half + i) * cols,
                           (size_t)cols * sizeof(float));
    }
    int bad = 0;
    for (int64_t b = 0; b < n; b += (t->type == GGML_TYPE_Q8_0 || t->type == GGML_TYPE_Q4_0) ? 32 : n) {
        int64_t len = (t->type == GGML_TYPE_Q8_0 || t->type == GGML_TYPE_Q4_0) ? 32 : n;
        float amax = 0;
        for (int64_t i = b; i < b + len; i++) amax = fmaxf(amax, fabsf(want[i]));
        /* Q8_0: half a step, plus the scale's rounding to f16 (up to 127 steps * 2^-11); Q4_0: one step (an x near
         * -max of the other sign clips at q = 15), plus the same */
        float step = t->type == GGML_TYPE_Q8_0 ? amax / 127 * 0.57f : t->type == GGML_TYPE_Q4_0 ? amax / 8 * 1.01f : 0;
        for (int64_t i = b; i < b + len; i++) {
            float exp = round_to(t->type, want[i]), d = fabsf(g[i] - exp);
            if (d > step + tol * (1 + fabsf(exp))) {
                if (!bad)
                    fprintf(stderr, "  %s[%lld] = %g, expected %g (type %d, block max %g)\n", gname, (long long)i, g[i],
                            exp, t->type, amax);
                bad++;
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d values off", gname, bad);
    free(g);
    free(want);
    return t->type;
}

static float *st_all(const char *dir, const char *name, int64_t *rows, int64_t *cols) {
    st_model *m;
    ft_error e;
    if (st_model_open(dir, &m, &e)) return NULL;
    const st_tensor_info *t = st_model_find(m, name);
    float *v = NULL;
    if (t) {
        *rows = t->ndim == 2 ? t->shape[0] : 1;
        *cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
        v = malloc((size_t)(*rows * *cols) * sizeof(float));
        if (st_read_f32(t, v, (size_t)(*rows * *cols), &e)) free(v), v = NULL;
    }
    st_model_close(m);
    return v;
}

static const char *const LIN_HF[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const char *const LIN_GG[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

/* Every tensor of the HF dir `src` (names from `prefix`) against the GGUF; q/k heads given. */
static void check_all_tensors(gguf_file *f, const char *src, const char *prefix, int layers, int heads, int kv_heads,
                              int tied, float tol, int *n_q) {
    char hn[256], gn[128];
    int64_t r, c;
    for (int l = 0; l < layers; l++) {
        for (int k = 0; k < 7; k++) {
            snprintf(hn, sizeof hn, "%smodel.layers.%d.%s.weight", prefix, l, LIN_HF[k]);
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", l, LIN_GG[k]);
            float *x = st_all(src, hn, &r, &c);
            CHECK_MSG(x != NULL, "%s", hn);
            if (!x) continue;
            int t = check_tensor(f, gn, x, r, c, k == 0 ? heads : k == 1 ? kv_heads : 0, tol);
            if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0) (*n_q)++;
            free(x);
        }
        const char *norms[2][2] = {{"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}};
        for (int k = 0; k < 2; k++) {
            snprintf(hn, sizeof hn, "%smodel.layers.%d.%s.weight", prefix, l, norms[k][0]);
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", l, norms[k][1]);
            float *x = st_all(src, hn, &r, &c);
            CHECK_MSG(x && check_tensor(f, gn, x, r, c, 0, 0) == GGML_TYPE_F32, "%s is F32", gn);
            free(x);
        }
    }
    snprintf(hn, sizeof hn, "%smodel.norm.weight", prefix);
    float *x = st_all(src, hn, &r, &c);
    CHECK(x && check_tensor(f, "output_norm.weight", x, r, c, 0, 0) == GGML_TYPE_F32);
    free(x);
    snprintf(hn, sizeof hn, "%smodel.embed_tokens.weight", prefix);
    x = st_all(src, hn, &r, &c);
    CHECK(x && check_tensor(f, "token_embd.weight", x, r, c, 0, tol) >= 0);
    free(x);
    if (tied) {
        CHECK_MSG(gguf_find_tensor(f, "output.weight") == NULL, "tied: no output.weight");
    } else {
        snprintf(hn, sizeof hn, "%slm_head.weight", prefix);
        x = st_all(src, hn, &r, &c);
        CHECK(x && check_tensor(f, "output.weight", x, r, c, 0, tol) >= 0);
        free(x);
    }
}

static void test_llama2_tokenizer(void) {
    char model[600], out[700], a[512];
    snprintf(model, sizeof model, "%s/tl", tmp);
    sh("mkdir -p '%s'%s", model, "");
    sh("cp '%s'/* '%s'/", t_asset("models/tiny-random-llama", a, sizeof a), model);
    sh("cp '%s'/* '%s'/", t_asset("tokenizers/llama-2", a, sizeof a), model);
    const char *types[4] = {"f16", "bf16", "q8_0", "q4_0"};
    const int ftypes[4] = {1, 32, 7, 2}, wtypes[4] = {GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    for (int ti = 0; ti < 4; ti++) {
        snprintf(out, sizeof out, "%s/tl-%s.gguf", tmp, types[ti]);
        CHECK_MSG(export(model, NULL, types[ti], out) == 0, "export %s", types[ti]);
        gguf_file *f;
        ft_error e;
        if (gguf_open(out, &f, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            continue;
        }
        CHECK(gguf_version(f) == 3);
        CHECK(kv_str_is(f, "general.architecture", "llama"));
        CHECK(kv_str_is(f, "general.type", "model"));
        CHECK(kv_str_is(f, "general.name", "tl"));
        CHECK(kv_int(f, "general.file_type") == ftypes[ti]);
        CHECK(kv_int(f, "general.quantization_version") == 2);
        CHECK(kv_int(f, "llama.block_count") == 2);
        CHECK(kv_int(f, "llama.context_length") == 2048);
        CHECK(kv_int(f, "llama.embedding_length") == 16);
        CHECK(kv_int(f, "llama.feed_forward_length") == 64);
        CHECK(kv_int(f, "llama.attention.head_count") == 4);
        CHECK(kv_int(f, "llama.attention.head_count_kv") == 4);
        CHECK(kv_int(f, "llama.vocab_size") == 32000);
        CHECK(kv_int(f, "llama.rope.dimension_count") == 4);
        CHECK(kv_float(f, "llama.rope.freq_base") == 10000.0);
        CHECK(kv_float(f, "llama.attention.layer_norm_rms_epsilon") == (double)1e-6f);
        CHECK(gguf_find_kv(f, "llama.rope.scaling.type") == NULL);
        /* vocabulary */
        CHECK(kv_str_is(f, "tokenizer.ggml.model", "llama"));
        CHECK(kv_str_is(f, "tokenizer.ggml.pre", "default"));
        const gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
        CHECK(toks && toks->n == 32000);
        CHECK(arr_str_is(f, "tokenizer.ggml.tokens", 1, "<s>"));
        CHECK(arr_str_is(f, "tokenizer.ggml.tokens", 13, "<0x0A>"));
        CHECK(arr_str_is(f, "tokenizer.ggml.tokens", 260, "\xe2\x96\x81t")); /* "▁t", made by merge 0 */
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 1) == 3);              /* CONTROL */
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 13) == 6);             /* BYTE */
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 260) == 1);            /* NORMAL */
        const gguf_kv *sc = gguf_find_kv(f, "tokenizer.ggml.scores");
        double s260 = 0, s1 = 1;
        CHECK(sc && sc->n == 32000 && !gguf_kv_float(sc, 260, &s260) && !gguf_kv_float(sc, 1, &s1));
        CHECK_MSG(s260 == -1.0 && s1 == 0.0, "scores: ▁t %g, <s> %g", s260, s1);
        CHECK(gguf_find_kv(f, "tokenizer.ggml.merges") == NULL);
        CHECK(kv_int(f, "tokenizer.ggml.bos_token_id") == 1); /* tokenizer_config's <s>, not config.json's 0 */
        CHECK(kv_int(f, "tokenizer.ggml.eos_token_id") == 2);
        CHECK(kv_int(f, "tokenizer.ggml.unk_token_id") == 0);
        int flag = -1;
        CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &flag, &e) == FT_OK && flag == 1);
        CHECK(gguf_find_kv(f, "tokenizer.ggml.eot_token_id") == NULL); /* llama-2's turns end with EOS */
        char *tmplt = NULL;
        CHECK(gguf_get_str(f, "tokenizer.chat_template", &tmplt, &e) == FT_OK && tmplt &&
              strstr(tmplt, "[INST]") != NULL);
        free(tmplt);
        /* tensors */
        int n_q = 0;
        check_all_tensors(f, model, "", 2, 4, 4, 0, 0, &n_q);
        if (wtypes[ti] == GGML_TYPE_Q8_0 || wtypes[ti] == GGML_TYPE_Q4_0) {
            CHECK_MSG(n_q == 2, "%s: the two ffn_down (rows of 64) quantized, the rest (rows of 16) F16: %d", types[ti], n_q);
            const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
            CHECK(q && q->type == GGML_TYPE_F16);
        } else {
            const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
            CHECK(q && q->type == wtypes[ti]);
        }
        gguf_close(f);
    }
}

static void test_byte_level(void) {
    char model[600], cfgp[600], out[700], a[512], b[512];
    snprintf(model, sizeof model, "%s/sm", tmp);
    snprintf(cfgp, sizeof cfgp, "%s/smol.json", tmp);
    FILE *fp = fopen(cfgp, "w");
    fputs("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 49152, "
          "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
          "\"num_key_value_heads\": 2, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5, \"rope_theta\": 100000.0, "
          "\"tie_word_embeddings\": true, \"bos_token_id\": 0, \"eos_token_id\": 0, \"torch_dtype\": \"bfloat16\"}\n", fp);
    fclose(fp);
    char *iargv[] = {"init", "--config", cfgp, "--out", model, "--seed", "3", NULL};
    CHECK(cmd_init(7, iargv) == 0);
    sh("cp '%s'/* '%s'/", t_asset("tokenizers/smollm-135m", a, sizeof a), model);
    sh("cp '%s' '%s'/chat_template.jinja",
       t_src("tests/fixtures/templates/jinja/HuggingFaceTB-SmolLM2-135M-Instruct.jinja", b, sizeof b), model);
    const char *types[2] = {"bf16", "q4_0"};
    for (int ti = 0; ti < 2; ti++) {
        snprintf(out, sizeof out, "%s/sm-%s.gguf", tmp, types[ti]);
        CHECK_MSG(export(model, NULL, types[ti], out) == 0, "export %s", types[ti]);
        gguf_file *f;
        ft_error e;
        if (gguf_open(out, &f, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            continue;
        }
        CHECK(kv_str_is(f, "general.name", "sm"));
        CHECK(kv_int(f, "llama.attention.head_count_kv") == 2);
        CHECK(kv_float(f, "llama.rope.freq_base") == 100000.0);
        CHECK(kv_str_is(f, "tokenizer.ggml.model", "gpt2"));
        CHECK(kv_str_is(f, "tokenizer.ggml.pre", "smollm"));
        const gguf_kv *m = gguf_find_kv(f, "tokenizer.ggml.merges");
        CHECK(m && m->n == 48900);
        CHECK(arr_str_is(f, "tokenizer.ggml.merges", 0, "\xc4\xa0 t")); /* "Ġ t" */
        CHECK(arr_str_is(f, "tokenizer.ggml.tokens", 2, "<|im_end|>"));
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 2) == 3);
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 300) == 1);
        CHECK(gguf_find_kv(f, "tokenizer.ggml.scores") == NULL);
        CHECK(kv_int(f, "tokenizer.ggml.bos_token_id") == 0);
        CHECK(kv_int(f, "tokenizer.ggml.eos_token_id") == 0);
        CHECK(kv_int(f, "tokenizer.ggml.eot_token_id") == 2); /* <|im_end|>, the template's end of turn */
        int flag = -1;
        CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &flag, &e) == FT_OK && flag == 0);
        char *tmplt = NULL;
        CHECK(gguf_get_str(f, "tokenizer.chat_template", &tmplt, &e) == FT_OK && tmplt && strstr(tmplt, "<|im_start|>"));
        free(tmplt);
        int n_q = 0;
        check_all_tensors(f, model, "", 2, 4, 2, 1, 0, &n_q);
        if (ti == 1) CHECK_MSG(n_q == 14, "q4_0: all 14 linears quantized (%d)", n_q);
        const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
        CHECK(emb && emb->type == (ti ? GGML_TYPE_Q4_0 : GGML_TYPE_BF16));
        gguf_close(f);
    }
}

/* A minimal SentencePiece-style tokenizer.json for llama-gqa's 256 ids: <unk> <s> </s>, 250 byte tokens; ids
 * 253..255 become [PAD]. */
static void write_small_tokenizer(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\", "
          "\"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}], \"decoder\": {\"type\": \"Sequence\", "
          "\"decoders\": []}, \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, "
          "\"</s>\": 2",
          f);
    for (int i = 0; i < 250; i++) fprintf(f, ", \"<0x%02X>\": %d", i, i + 3);
    fputs("}, \"merges\": []}}\n", f);
    fclose(f);
}

static void test_adapter(void) {
    char model[600], out[700], fix[512], adapter[600], grads[600], a[512];
    snprintf(model, sizeof model, "%s/gqa", tmp);
    sh("mkdir -p '%s'%s", model, "");
    t_src("tests/fixtures/models/llama-gqa", a, sizeof a);
    sh("cp '%s'/config.json '%s'/", a, model);
    sh("cp '%s'/model.safetensors '%s'/", a, model);
    write_small_tokenizer(model);
    t_src("tests/fixtures/lora", fix, sizeof fix);
    snprintf(adapter, sizeof adapter, "%s/peft_a", fix);
    snprintf(grads, sizeof grads, "%s/peft_grads.safetensors", fix);
    /* PEFT's merged model as an HF dir the checker reads ("merged/<name>" keys) */
    const char *types[2] = {"f16", "q8_0"};
    for (int ti = 0; ti < 2; ti++) {
        snprintf(out, sizeof out, "%s/gqa-%s.gguf", tmp, types[ti]);
        CHECK_MSG(export(model, adapter, types[ti], out) == 0, "export --adapter %s", types[ti]);
        gguf_file *f;
        ft_error e;
        if (gguf_open(out, &f, &e)) {
            CHECK_MSG(0, "%s", e.msg);
            continue;
        }
        CHECK(kv_int(f, "llama.attention.head_count_kv") == 2);
        CHECK(gguf_find_kv(f, "llama.attention.key_length") == NULL); /* head_dim 8 = 32 / 4 */
        CHECK(arr_str_is(f, "tokenizer.ggml.tokens", 254, "[PAD254]"));
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 254) == 5);
        CHECK(arr_int(f, "tokenizer.ggml.token_type", 3) == 6);
        CHECK(kv_int(f, "tokenizer.ggml.pad_token_id") == 0); /* config.json's, no tokenizer_config */
        /* the merged linears: PEFT's values rounded to the type (ours are within 1e-6 of PEFT's in fp32, as
         * test_merge_golden holds merge to, so a rounding may land one f16 step away: 1e-3 relative) */
        st_file *g;
        CHECK(st_open(grads, &g, &e) == FT_OK);
        int n_q = 0;
        for (int l = 0; l < 2; l++)
            for (int k = 0; k < 7; k++) {
                char hn[256], gn[128];
                snprintf(hn, sizeof hn, "merged/model.layers.%d.%s.weight", l, LIN_HF[k]);
                snprintf(gn, sizeof gn, "blk.%d.%s.weight", l, LIN_GG[k]);
                const st_tensor_info *t = st_find(g, hn);
                CHECK_MSG(t != NULL, "%s", hn);
                if (!t) continue;
                float *x = malloc((size_t)(t->shape[0] * t->shape[1]) * sizeof(float));
                CHECK(st_read_f32(t, x, (size_t)(t->shape[0] * t->shape[1]), &e) == FT_OK);
                int ty = check_tensor(f, gn, x, t->shape[0], t->shape[1], k == 0 ? 4 : k == 1 ? 2 : 0, 1e-3f);
                if (ty == GGML_TYPE_Q8_0) n_q++;
                free(x);
            }
        if (ti == 1) CHECK_MSG(n_q == 14, "q8_0: 14 linears quantized (%d)", n_q);
        st_close(g);
        gguf_close(f);
    }
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_refusals(void) {
    char model[600], gqa[600], out[700], adapter[600], fix[512];
    snprintf(model, sizeof model, "%s/tl", tmp);
    snprintf(gqa, sizeof gqa, "%s/gqa", tmp);
    /* -o inside the model dir */
    snprintf(out, sizeof out, "%s/x.gguf", model);
    CHECK(export(model, NULL, "f16", out) == FT_EINPUT && !exists(out));
    /* -o is the model dir */
    CHECK(export(model, NULL, "f16", model) == FT_EINPUT);
    /* unknown type */
    snprintf(out, sizeof out, "%s/bad.gguf", tmp);
    CHECK(export(model, NULL, "q5_1", out) == FT_EINPUT && !exists(out));
    /* an adapter made for llama-gqa on tiny-random-llama */
    snprintf(adapter, sizeof adapter, "%s/peft_a", t_src("tests/fixtures/lora", fix, sizeof fix));
    CHECK(export(model, adapter, "f16", out) == FT_EINPUT && !exists(out));
    /* llama-2's 32000 ids on a 256-token model */
    sh("cp '%s'/tokenizer.json '%s'/", model, gqa);
    CHECK(export(gqa, NULL, "f16", out) == FT_EINPUT && !exists(out));
    /* no tokenizer at all */
    sh("rm '%s'/tokenizer.json%s", gqa, "");
    CHECK(export(gqa, NULL, "f16", out) == FT_EINPUT && !exists(out));
    /* nothing left beside the outputs */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", tmp);
    CHECK_MSG(system(cmd) != 0, "no temp files left in %s", tmp);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s/gguf_export_test.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    sh("rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    test_llama2_tokenizer();
    test_byte_level();
    test_adapter();
    test_refusals();
    if (!t_failures) sh("rm -rf '%s'%s", tmp, "");
    TEST_DONE();
}
