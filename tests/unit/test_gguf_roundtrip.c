/* export-gguf -> import: a Hugging Face model written as GGUF by `finetune export-gguf` and read back as a
 * model path (st_model_open / cfg_load / modelpath on the .gguf, io/gguf_model) gives back the same model:
 * - every tensor, by HF name and shape, with Q/K un-permuted: f16 and bf16 exactly the HF weights rounded to
 *   16 bits, f32 norms exact, q8_0 within half a block step (max|x|/127, plus the scale's f16 rounding), q4_0
 *   within one step (max|x|/8);
 * - config.json's fields; the tokenizer (byte-level SmolLM vocabulary, merges, pre "smollm", special tokens)
 *   encoding a few texts to the same ids as the model dir's tokenizer.json; the chat template text;
 * - `finetune convert` of the f16 file writes exactly those rounded weights (model.safetensors, F16);
 * - tied (no output.weight) and untied (lm_head.weight) models; 2 KV heads of 4 (K permuted per KV head).
 * A SentencePiece vocabulary (Llama-2's, exported as "llama" with scores) reads back as transformers reads it.
 * Also the refusals of io/gguf_model on files it cannot represent (a tensor a Llama has not, another
 * architecture, Llama-3.1's rope_freqs, a tensor type it cannot dequantize, a "llama" vocabulary without
 * scores), each an FT_EINPUT naming the file. With FT_GGUF_SEEDS=DIR the small hand-built GGUF is written there as a seed of
 * tests/fuzz/fuzz_gguf_model. */
#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

#include "../test.h"
#include "datasets/template.h"
#include "finetune/base/util.h"
#include "finetune/cli/cli.h"
#include "finetune/io/ggml_types.h"
#include "finetune/io/gguf_model.h"
#include "finetune/io/gguf_write.h"
#include "finetune/io/safetensors.h"
#include "finetune/model/config.h"
#include "finetune/model/modelpath.h"

static char tmp[512];

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd)) fprintf(stderr, "command failed: %s\n", cmd);
}

static void make_model(const char *dir, int tied) {
    char cfgp[700], a[512], b[512];
    snprintf(cfgp, sizeof cfgp, "%s.json", dir);
    FILE *fp = fopen(cfgp, "w");
    fprintf(fp,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 49152, "
            "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
            "\"num_key_value_heads\": 2, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-5, "
            "\"rope_theta\": 100000.0, \"tie_word_embeddings\": %s, \"bos_token_id\": 1, \"eos_token_id\": 2, "
            "\"pad_token_id\": 2, \"torch_dtype\": \"float32\"}\n",
            tied ? "true" : "false");
    fclose(fp);
    char *iargv[] = {"init", "--config", cfgp, "--out", (char *)dir, "--seed", "7", "--std", "0.05", NULL};
    CHECK(cmd_init(9, iargv) == 0);
    sh("cp '%s'/tokenizer.json '%s'/", t_asset("tokenizers/smollm-135m", a, sizeof a), dir);
    sh("cp '%s' '%s'/chat_template.jinja",
       t_src("tests/fixtures/templates/jinja/HuggingFaceTB-SmolLM2-135M-Instruct.jinja", b, sizeof b), dir);
}

static int export(const char *model, const char *type, const char *out) {
    char *argv[] = {"export-gguf", (char *)model, "--type", (char *)type, "-o", (char *)out, NULL};
    return cmd_export_gguf(6, argv);
}

static float round_to(int type, float x) {
    if (type == GGML_TYPE_F16) return ft_f16_to_f32(ft_f32_to_f16(x));
    if (type == GGML_TYPE_BF16) return ft_bf16_to_f32(ft_f32_to_bf16(x));
    return x;
}

/* every tensor of dir against the same name in the GGUF read as a checkpoint; wtype: the 2-D weights' type */
static void check_weights(const char *dir, const char *gguf, int wtype, const char *what) {
    st_model *a = NULL, *g = NULL;
    ft_error e = {0};
    CHECK_MSG(st_model_open(dir, &a, &e) == 0, "%s", e.msg);
    CHECK_MSG(st_model_open(gguf, &g, &e) == 0, "%s: %s", what, e.msg);
    if (!a || !g) return;
    CHECK_MSG(st_model_count(a) == st_model_count(g), "%s: %zu tensors, the GGUF has %zu", what, st_model_count(a),
              st_model_count(g));
    for (size_t i = 0; i < st_model_count(a); i++) {
        const st_tensor_info *x = st_model_at(a, i), *y = st_model_find(g, x->name);
        CHECK_MSG(y != NULL, "%s: %s missing", what, x->name);
        if (!y) continue;
        int same = x->ndim == y->ndim;
        for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
        CHECK_MSG(same, "%s: %s shape", what, x->name);
        if (!same) continue;
        int64_t n = 1;
        for (int d = 0; d < x->ndim; d++) n *= x->shape[d];
        float *hx = malloc((size_t)n * 4), *hy = malloc((size_t)n * 4);
        CHECK(st_read_f32(x, hx, (size_t)n, &e) == 0 && st_read_f32(y, hy, (size_t)n, &e) == 0);
        int type = x->ndim == 2 ? wtype : GGML_TYPE_F32, blk = type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 ? 32 : 1;
        int bad = 0;
        for (int64_t b = 0; b < n; b += blk) {
            float amax = 0;
            for (int64_t k = b; k < b + blk; k++) amax = fmaxf(amax, fabsf(hx[k]));
            float step = type == GGML_TYPE_Q8_0 ? amax / 127 * 0.57f : type == GGML_TYPE_Q4_0 ? amax / 8 * 1.01f : 0;
            for (int64_t k = b; k < b + blk; k++) {
                float want = round_to(type, hx[k]);
                if (!(fabsf(hy[k] - want) <= step)) {
                    if (!bad) fprintf(stderr, "  %s %s[%lld] = %.9g, expected %.9g\n", what, x->name, (long long)k, hy[k], want);
                    bad++;
                }
            }
        }
        CHECK_MSG(bad == 0, "%s: %s: %d values off", what, x->name, bad);
        free(hx);
        free(hy);
    }
    st_model_close(a);
    st_model_close(g);
}

static void check_config(const char *dir, const char *gguf, const char *what) {
    ft_config a, b;
    ft_error e = {0};
    CHECK(cfg_load(dir, &a, &e) == 0);
    CHECK_MSG(cfg_load(gguf, &b, &e) == 0, "%s: %s", what, e.msg);
    CHECK(a.num_layers == b.num_layers && a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size);
    CHECK(a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads && a.head_dim == b.head_dim);
    CHECK(a.vocab_size == b.vocab_size && a.tie_word_embeddings == b.tie_word_embeddings);
    CHECK(a.rope_theta == b.rope_theta && a.rms_norm_eps == b.rms_norm_eps && a.rope_type == b.rope_type);
    CHECK(a.max_position_embeddings == b.max_position_embeddings);
    CHECK(a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id);
    CHECK(b.arch == FT_ARCH_LLAMA);
}

static void check_tokenizer(const char *dir, const char *gguf, const char *what) {
    ft_tokenizer *a = NULL, *b = NULL;
    ft_error e = {0};
    CHECK(tok_load(dir, &a, &e) == 0);
    CHECK_MSG(modelpath_tokenizer(gguf, &b, &e) == 0, "%s: %s", what, e.msg);
    if (!a || !b) return;
    CHECK(tok_vocab_size(a) == tok_vocab_size(b));
    static const char *TEXTS[] = {"Hello world! 12345 apples cost $3.50.", "<|im_start|>user\nHi there<|im_end|>\n",
                                  "  spaces\tand\ttabs\n\nnew lines, caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac"};
    for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK(tok_encode(a, TEXTS[i], strlen(TEXTS[i]), 1, &x, &nx, &e) == 0);
        CHECK(tok_encode(b, TEXTS[i], strlen(TEXTS[i]), 1, &y, &ny, &e) == 0);
        CHECK_MSG(nx == ny && !memcmp(x, y, nx * sizeof *x), "%s: ids differ for text %zu", what, i);
        free(x);
        free(y);
    }
    tok_free(a);
    tok_free(b);
    tmpl *ta = NULL, *tb = NULL;
    const char *pa[1] = {dir}, *pb[1] = {gguf};
    CHECK(modelpath_template("auto", pa, 1, NULL, &ta, &e) == 0 && ta);
    CHECK_MSG(modelpath_template("auto", pb, 1, NULL, &tb, &e) == 0 && tb, "%s: %s", what, e.msg);
    if (ta && tb) {
        char *ja = tmpl_jinja(ta), *jb = tmpl_jinja(tb);
        CHECK_MSG(!strcmp(ja, jb), "%s: chat template differs", what);
        free(ja);
        free(jb);
    }
    tmpl_free(ta);
    tmpl_free(tb);
}

static void roundtrip(int tied) {
    char model[600], out[700];
    snprintf(model, sizeof model, "%s/%s", tmp, tied ? "tied" : "untied");
    make_model(model, tied);
    static const char *TYPES[] = {"f16", "bf16", "q8_0", "q4_0"};
    static const int GT[] = {GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    for (int i = 0; i < 4; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s %s", tied ? "tied" : "untied", TYPES[i]);
        snprintf(out, sizeof out, "%s/%s-%s.gguf", tmp, tied ? "tied" : "untied", TYPES[i]);
        CHECK_MSG(export(model, TYPES[i], out) == 0, "export %s", what);
        check_weights(model, out, GT[i], what);
        if (i == 0) {
            check_config(model, out, what);
            check_tokenizer(model, out, what);
            /* convert writes the f16 weights as F16, i.e. exactly the HF weights rounded */
            char conv[800];
            snprintf(conv, sizeof conv, "%s/%s-conv", tmp, tied ? "tied" : "untied");
            char *argv[] = {"convert", out, conv, NULL};
            CHECK(cmd_convert(3, argv) == 0);
            check_weights(model, conv, GGML_TYPE_F16, "convert of f16");
            st_model *st = NULL;
            ft_error e = {0};
            if (st_model_open(conv, &st, &e) == 0) {
                CHECK(st_model_find(st, "model.layers.0.self_attn.q_proj.weight")->dtype == FT_F16);
                CHECK(st_model_find(st, "model.norm.weight")->dtype == FT_F16);
                st_model_close(st);
            }
        }
    }
}

/* A SentencePiece-style vocabulary ("llama": tokens + scores, merges rebuilt from the scores): export-gguf of
 * tiny-random-llama with the Llama-2 tokenizer, read back as a tokenizer, gives transformers' ids for the same
 * file (tests/fixtures/gguf_model/spm_ids.json, tests/reference/make_gguf_spm_fixtures.py). */
static void test_spm(void) {
    char model[600], out[700], a[512], p[512];
    snprintf(model, sizeof model, "%s/sp-model", tmp);
    sh("cp -r '%s' '%s'", t_asset("models/tiny-random-llama", a, sizeof a), model);
    sh("cp '%s'/* '%s'/", t_asset("tokenizers/llama-2", a, sizeof a), model);
    snprintf(out, sizeof out, "%s/sp.gguf", tmp);
    CHECK(export(model, "f16", out) == 0);
    char *text = NULL;
    ft_error e = {0};
    CHECK(ft_read_file(t_src("tests/fixtures/gguf_model/spm_ids.json", p, sizeof p), &text, NULL, &e) == 0);
    cJSON *fx = text ? cJSON_Parse(text) : NULL;
    free(text);
    ft_tokenizer *t = NULL;
    CHECK_MSG(modelpath_tokenizer(out, &t, &e) == 0, "%s", e.msg);
    int n_texts = 0;
    const cJSON *x, *texts = fx ? cJSON_GetObjectItem(fx, "texts") : NULL;
    cJSON_ArrayForEach(x, texts) {
        if (!t) break;
        const char *s = cJSON_GetObjectItem(x, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(x, "gguf_tf");
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(tok_encode(t, s, strlen(s), 1, &ids, &n, &e) == 0);
        int same = (int)n == cJSON_GetArraySize(want);
        for (size_t i = 0; same && i < n; i++) same = ids[i] == (int32_t)cJSON_GetArrayItem(want, (int)i)->valuedouble;
        CHECK_MSG(same, "SentencePiece GGUF: ids differ from transformers' for %.30s", s);
        free(ids);
        n_texts++;
    }
    CHECK(n_texts == 5);
    if (t) CHECK(tok_bos_id(t) == 1 && tok_eos_id(t) == 2 && tok_vocab_size(t) == 32000);
    tok_free(t);
    cJSON_Delete(fx);
}

/* ---------- refusals, on a small hand-built file ---------- */

/* A 1-layer llama GGUF (hidden 32, 2 heads) with a 4-token gpt2 vocabulary; `variant` breaks one thing. */
static int build(const char *path, const char *variant) {
    gguf_writer *w = gguf_writer_new();
    ft_error e = {0};
    int rc = 0;
    const char *arch = !strcmp(variant, "arch") ? "gpt2" : "llama";
    rc |= gguf_writer_str(w, "general.architecture", arch, &e);
    char k[64];
#define U32(key, v) (snprintf(k, sizeof k, "%s." key, arch), gguf_writer_u32(w, k, v, &e))
    rc |= U32("block_count", 1);
    rc |= U32("embedding_length", 32);
    rc |= U32("feed_forward_length", 64);
    rc |= U32("attention.head_count", 2);
    rc |= U32("attention.head_count_kv", 2);
    rc |= U32("context_length", 128);
#undef U32
    const char *toks[4] = {"a", "b", "ab", "<|end|>"};
    const char *merges[1] = {"a b"};
    int32_t types[4] = {1, 1, 1, 3};
    rc |= gguf_writer_str(w, "tokenizer.ggml.model", !strcmp(variant, "spm") ? "llama" : "gpt2", &e);
    rc |= gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, 4, &e);
    rc |= gguf_writer_arr_str(w, "tokenizer.ggml.merges", merges, 1, &e);
    rc |= gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, 4, &e);
    rc |= gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 3, &e);
    float *z = calloc(32 * 64, sizeof(float));
    for (int i = 0; i < 32 * 64; i++) z[i] = (float)((i * 37) % 101 - 50) / 64.0f;
    uint64_t ne_emb[2] = {32, 4}, ne_n[1] = {32}, ne_sq[2] = {32, 32}, ne_up[2] = {32, 64}, ne_dn[2] = {64, 32};
    rc |= gguf_writer_tensor(w, "token_embd.weight", GGML_TYPE_F32, 2, ne_emb, z, &e);
    rc |= gguf_writer_tensor(w, "output_norm.weight", GGML_TYPE_F32, 1, ne_n, z, &e);
    rc |= gguf_writer_tensor(w, "blk.0.attn_norm.weight", GGML_TYPE_F32, 1, ne_n, z, &e);
    rc |= gguf_writer_tensor(w, "blk.0.ffn_norm.weight", GGML_TYPE_F32, 1, ne_n, z, &e);
    const char *sq[4] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight"};
    for (int i = 0; i < 4; i++) rc |= gguf_writer_tensor(w, sq[i], GGML_TYPE_F32, 2, ne_sq, z, &e);
    rc |= gguf_writer_tensor(w, "blk.0.ffn_gate.weight", GGML_TYPE_F32, 2, ne_up, z, &e);
    rc |= gguf_writer_tensor(w, "blk.0.ffn_up.weight", GGML_TYPE_F32, 2, ne_up, z, &e);
    if (!strcmp(variant, "iq")) { /* IQ4_NL: a real ggml type we do not dequantize (18-byte blocks of 32) */
        uint8_t *q = calloc(64 * 18, 1);
        rc |= gguf_writer_tensor(w, "blk.0.ffn_down.weight", GGML_TYPE_IQ4_NL, 2, ne_dn, q, &e);
        free(q);
    } else {
        rc |= gguf_writer_tensor(w, "blk.0.ffn_down.weight", GGML_TYPE_F32, 2, ne_dn, z, &e);
    }
    if (!strcmp(variant, "extra")) rc |= gguf_writer_tensor(w, "blk.0.attn_sinks.weight", GGML_TYPE_F32, 1, ne_n, z, &e);
    if (!strcmp(variant, "rope_freqs")) rc |= gguf_writer_tensor(w, "rope_freqs.weight", GGML_TYPE_F32, 1, ne_n, z, &e);
    if (!rc) rc = gguf_writer_finish(w, path, &e);
    if (rc) fprintf(stderr, "build %s: %s\n", variant, e.msg);
    gguf_writer_free(w);
    free(z);
    return rc;
}

static void refusal(const char *variant, const char *want) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.gguf", tmp, variant);
    CHECK(build(path, variant) == 0);
    ft_error e = {0};
    ft_config c;
    int rc = cfg_load(path, &c, &e);
    if (!rc) {
        ft_tokenizer *t = NULL;
        rc = modelpath_tokenizer(path, &t, &e);
        tok_free(t);
    }
    CHECK_MSG(rc == FT_EINPUT && strstr(e.msg, path) && strstr(e.msg, want), "%s: rc %d, message: %s", variant, rc, e.msg);
}

static void test_small(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/ok.gguf", tmp);
    CHECK(build(path, "ok") == 0);
    ft_error e = {0};
    ft_config c;
    CHECK_MSG(cfg_load(path, &c, &e) == 0, "%s", e.msg);
    CHECK(c.num_layers == 1 && c.hidden_size == 32 && c.num_heads == 2 && c.head_dim == 16 && c.vocab_size == 4);
    CHECK(c.tie_word_embeddings && c.eos_token_id == 3 && c.bos_token_id == 1); /* absent: LlamaConfig's default */
    ft_tokenizer *t = NULL;
    CHECK_MSG(modelpath_tokenizer(path, &t, &e) == 0, "%s", e.msg);
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(tok_encode(t, "ab<|end|>a", 10, 1, &ids, &n, &e) == 0);
        CHECK(n == 3 && ids[0] == 2 && ids[1] == 3 && ids[2] == 0); /* the merge, the CONTROL token whole */
        free(ids);
        tok_free(t);
    }
    /* q rows un-permuted: HF row h*16 + i*8 + j is file row h*16 + 2j + i */
    st_model *st = NULL;
    CHECK(st_model_open(path, &st, &e) == 0);
    if (st) {
        float q[32 * 32];
        CHECK(st_read_f32(st_model_find(st, "model.layers.0.self_attn.q_proj.weight"), q, 32 * 32, &e) == 0);
        float z[32 * 32];
        for (int i = 0; i < 32 * 32; i++) z[i] = (float)((i * 37) % 101 - 50) / 64.0f;
        int ok = 1;
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 8; j++) ok &= !memcmp(q + (h * 16 + i * 8 + j) * 32, z + (h * 16 + 2 * j + i) * 32, 32 * 4);
        CHECK(ok);
        st_model_close(st);
    }
    const char *seeds = getenv("FT_GGUF_SEEDS");
    if (seeds) sh("cp '%s' '%s'/llama-small.gguf", path, seeds);
    refusal("arch", "architecture 'gpt2' is not supported");
    refusal("extra", "blk.0.attn_sinks.weight' is not one a Llama model has");
    refusal("rope_freqs", "rope_freqs.weight");
    refusal("iq", "'blk.0.ffn_down.weight' is IQ4_NL, which cannot be dequantized");
    refusal("spm", "tokenizer.ggml.scores"); /* "llama" needs its scores */
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s/gguf_roundtrip_test.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    sh("rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    test_small();
    test_spm();
    roundtrip(1);
    roundtrip(0);
    if (!t_failures) sh("rm -rf '%s'%s", tmp, "");
    TEST_DONE();
}
