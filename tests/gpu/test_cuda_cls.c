/* test_cuda_cls: the sequence-classification head on the CUDA backend against the CPU backend.
 *
 * A tiny random Llama classifier (3 labels, 2 layers, D 128, GQA, vocab 256; identical weights on both backends:
 * model_init_random draws on the host) runs three samples of 20, 13 and 31 tokens packed in one flat row of 64,
 * pooled at each one's last token; the loss is train/cls_loss's cross-entropy on soft labels with label
 * smoothing 0.1, mean over the samples. On CUDA in fp32, bf16 (sm_80+) and fp16 (dlogits scaled by 1024 as the
 * loss scaler does, then unscaled) the logits, the loss, and the gradients of score, the final norm, a layer's
 * q_proj and the embeddings must match the CPU's: max |cuda - cpu| <= tol * max |cpu|, tol fp32 1e-4, bf16 5e-2,
 * fp16 1e-2; the inference path (model_forward_cls) gives the training path's logits. Runs on hardware
 * (tests/gpu/run.sh) and on the CPU emulator (ctest -L cuemu, sm_90 and sm_75). Without a GPU: exit 77. */
#include <stdlib.h>

#include "finetune/backend/backend.h"
#include "finetune/model/model.h"
#include "finetune/train/cls_loss.h"
#include "test.h"

enum { T = 64, S = 3, K = 3 };
static int32_t ids[T], pos[T], doc[T], rows[S];
static const float probs[S][K] = {{1, 0, 0}, {0.2f, 0.5f, 0.3f}, {0, 0, 1}};

static int make_cfg(ft_config *c, ft_error *e) {
    const char *json =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 128, "
        "\"intermediate_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
        "\"vocab_size\": 256, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"max_position_embeddings\": 512, "
        "\"tie_word_embeddings\": false, \"head_dim\": 64}";
    int rc = cfg_parse(json, strlen(json), "test_cuda_cls config", c, e);
    return rc ? rc : cfg_set_labels(c, K, NULL, NULL, e);
}

typedef struct result {
    float logits[S * K], infer[S * K];
    double loss;
    float *g[4]; /* score, norm, layers[0].wq, embed (host copies) */
    int64_t n[4];
} result;

static int run(ft_backend *b, const ft_config *cfg, ft_dtype dt, result *r) {
    ft_error e = {0};
    ft_model *m = NULL;
    ft_weights g = {0};
    float dl[S * K] = {0}, scale = dt == FT_F16 ? 1024.0f : 1.0f;
    int rc = model_init_random(cfg, b, 11, 0.05f, &m, &e);
    if (!rc) rc = model_set_precision(m, dt, NULL, NULL, &e);
    if (!rc) rc = grads_create(m, NULL, NULL, &g, &e);
    if (!rc) rc = model_forward_train_cls(m, T, ids, pos, doc, S, rows, r->logits, &e);
    if (!rc) {
        r->loss = 0;
        for (int s = 0; s < S; s++)
            r->loss += cls_ce(r->logits + s * K, probs[s], K, 0.1, 1.0 / S, dl + s * K, NULL, NULL) / S;
        for (int i = 0; i < S * K; i++) dl[i] *= scale;
        rc = model_backward_cls(m, dl, &g, &e);
    }
    if (!rc) rc = model_forward_cls(m, T, ids, pos, doc, S, rows, r->infer, &e);
    const ft_tensor *gt[4] = {&g.score, &g.norm, &g.layers[0].wq, &g.embed};
    for (int k = 0; !rc && k < 4; k++) {
        r->n[k] = ft_numel(gt[k]);
        r->g[k] = malloc((size_t)r->n[k] * 4);
        b->download(b, r->g[k], gt[k]->data, (size_t)r->n[k] * 4);
        for (int64_t i = 0; i < r->n[k]; i++) r->g[k][i] /= scale;
    }
    if (rc) fprintf(stderr, "%s %s: %s\n", b->name, ft_dtype_name(dt), e.msg);
    grads_free(m, &g);
    model_free(m);
    return rc;
}

static double rel_err(const float *got, const float *want, int64_t n) {
    double err = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)got[i] - want[i]));
        mx = fmax(mx, fabs((double)want[i]));
    }
    return err / (mx > 0 ? mx : 1);
}

int main(void) {
    if (!ft_backend_cuda_available())
        t_skip("no usable CUDA GPU (it needs a CUDA build on a machine with a GPU: tests/gpu/run.sh)");
    ft_error e = {0};
    ft_backend *cpu = ft_backend_cpu_create(), *gpu = NULL;
    if (ft_backend_cuda_create(&gpu, &e)) {
        fprintf(stderr, "cuda backend: %s\n", e.msg);
        return 1;
    }
    int lens[S] = {20, 13, 31};
    for (int s = 0, t = 0; s < S; s++) {
        for (int i = 0; i < lens[s]; i++, t++) {
            ids[t] = 1 + (t * 37 + s * 11) % 255;
            pos[t] = i;
            doc[t] = t - i;
        }
        rows[s] = t - 1;
    }
    ft_config cfg;
    CHECK(make_cfg(&cfg, &e) == 0);
    result ref, got;
    CHECK(run(cpu, &cfg, FT_F32, &ref) == 0);
    const char *gname[4] = {"score", "model.norm", "layers.0.q_proj", "embed_tokens"};
    ft_dtype dts[3] = {FT_F32, FT_BF16, FT_F16};
    double tols[3] = {1e-4, 5e-2, 1e-2};
    for (int k = 0; k < 3; k++) {
        if (gpu->arch < 80 && dts[k] == FT_BF16) continue; /* T4: no bf16 */
        if (run(gpu, &cfg, dts[k], &got)) {
            CHECK(0);
            continue;
        }
        double el = rel_err(got.logits, ref.logits, S * K), ei = rel_err(got.infer, got.logits, S * K);
        CHECK_MSG(el <= tols[k], "%s: logits differ from the CPU's by %.3g (relative)", ft_dtype_name(dts[k]), el);
        CHECK_MSG(ei <= tols[k], "%s: inference logits differ from training's by %.3g", ft_dtype_name(dts[k]), ei);
        CHECK_MSG(fabs(got.loss - ref.loss) <= tols[k] * fmax(1, ref.loss), "%s: loss %.6g vs the CPU's %.6g",
                  ft_dtype_name(dts[k]), got.loss, ref.loss);
        for (int q = 0; q < 4; q++) {
            double eg = rel_err(got.g[q], ref.g[q], ref.n[q]);
            CHECK_MSG(eg <= tols[k], "%s: gradient of %s differs from the CPU's by %.3g (relative to its max)",
                      ft_dtype_name(dts[k]), gname[q], eg);
            fprintf(stderr, "%s: %s gradient within %.2g of the CPU's\n", ft_dtype_name(dts[k]), gname[q], eg);
            free(got.g[q]);
        }
        fprintf(stderr, "%s: logits within %.2g, loss %.6f (cpu %.6f)\n", ft_dtype_name(dts[k]), el, got.loss, ref.loss);
    }
    for (int q = 0; q < 4; q++) free(ref.g[q]);
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    TEST_DONE();
}
