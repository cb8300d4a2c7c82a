/* test_cuda_train: 50 steps of full SFT on the CUDA backend against the CPU backend, and the memory plan.
 *
 * A tiny Llama (model_init_random, 2 layers, D 64, GQA, vocab 256) learns a fixed synthetic batch (two packed
 * samples of a repeating token pattern) with AdamW, lr 3e-3, grad clipping 1, the same loop as the trainer:
 * forward, backward, optimizer step, refresh of the 16-bit compute copies, and for fp16 the GradScaler-exact
 * loss scaler (lossscale.h). The loss curve of CUDA fp32, bf16 and fp16 must follow the CPU's (fp32):
 * |loss_gpu - loss_cpu| <= tol * max(1, loss_cpu) at every step, tol fp32 1e-3 (reduction order compounded
 * over 50 optimizer steps), bf16 5e-2 and fp16 2e-2 (FT_TOL_TRAIN_BF16 / _F16 override): 16-bit rounding
 * of the activations moves each step's gradient by about the compute dtype's epsilon (2^-8, 2^-11) and
 * AdamW normalises it, so the curves drift apart slowly but must stay together and fall as far.
 * Memory: a Llama of about 120M parameters trains one step (bf16, 2048 tokens) as a full fine-tune, and with
 * LoRA and QLoRA from its bf16 checkpoint, and each time the backend's measured peak must be within 15% of
 * memplan_estimate for the same config, less its fixed runtime overhead (CUDA context and cuBLAS workspace,
 * which the backend's allocator does not see).
 * LoRA, QLoRA and DPO-LoRA: 50 steps of adapter training (r 8, alpha 16, all-linear, lora dropout 0.1, AdamW
 * lr 3e-3, DPO 1e-3) on a frozen random base saved to a temp dir (QLoRA: that checkpoint quantized to NF4 on each
 * backend), in fp32, bf16 (sm_80+) and fp16 with loss scaling on CUDA against the CPU's fp32 curve; the
 * dropout masks are the same on both backends (counter-based hash seeded per step), so the curves must agree
 * like the SFT ones (FT_TOL_LORA_F32 / _BF16 / _F16 override 1e-3 / 0.1 / 2e-2). DPO-LoRA: two packed
 * preference pairs, sigmoid DPO (beta 0.1) against reference log-probs precomputed with the adapters off.
 * The adapters' bf16 tolerance is wider because AdamW's first step is lr * sign(g): bf16 noise on the many
 * near-zero gradients of a fresh adapter flips whole-lr steps. On the CUDA emulator (tests/cuemu, exact
 * GPU rounding) DPO-LoRA bf16 is 0.053 off at step 2 and within 0.014 from step 3 on; fp16 stays within
 * 0.004 everywhere. FT_PRINT_CURVES=1 prints every step of every curve.
 * Without a usable GPU: exit 77 (FT_CUDA_TRAIN_CPU_ONLY=1 runs and prints the CPU adapter curves first).
 */
#include <stdlib.h>
#include <unistd.h>

#include "finetune/backend/backend.h"
#include "dpo/dpo_loss.h"
#include "lora/lora.h"
#include "finetune/train/lossscale.h"
#include "finetune/model/memplan.h"
#include "finetune/model/model.h"
#include "finetune/train/optim.h"
#include "test.h"

#include <stdint.h>

enum { T = 64, STEPS = 50 };

static int tiny_cfg(ft_config *c, int D, int L, int V, int F, ft_error *e) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
             "\"num_key_value_heads\": %d, \"vocab_size\": %d, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, "
             "\"max_position_embeddings\": 4096, \"tie_word_embeddings\": false, \"head_dim\": 64}",
             D, F, L, D / 64, D / 128 > 0 ? D / 128 : 1, V);
    return cfg_parse(json, strlen(json), "test_cuda_train config", c, e);
}

/* losses[STEPS] of training on backend b in compute dtype dt */
static int train(ft_backend *b, const ft_config *cfg, ft_dtype dt, double *losses) {
    ft_error e;
    ft_model *m = NULL;
    ft_weights g = {0};
    ft_optim *o = NULL;
    if (model_init_random(cfg, b, 5, 0.02f, &m, &e) || model_set_precision(m, dt, NULL, NULL, &e) ||
        grads_create(m, NULL, NULL, &g, &e)) {
        fprintf(stderr, "%s %s setup: %s\n", b->name, ft_dtype_name(dt), e.msg);
        model_free(m);
        return 1;
    }
    ft_optim_cfg oc = optim_defaults();
    oc.lr = 3e-3f;
    oc.grad_clip = 1.0f;
    oc.weight_decay = 0.01f;
    oc.schedule = FT_SCHED_CONSTANT;
    oc.total_steps = STEPS;
    if (optim_create(m, &g, &oc, &o, &e)) {
        fprintf(stderr, "optim: %s\n", e.msg);
        return 1;
    }
    int32_t ids[T], pos[T], doc[T], tg[T];
    float logp[T], dlogp[T];
    int n = 0, split = 29;
    for (int t = 0; t < T; t++) {
        int s0 = t < split ? 0 : split;
        ids[t] = (int32_t)(((t - s0) * 7 + (s0 ? 3 : 1)) % 50 + 10);
        pos[t] = t - s0;
        doc[t] = s0;
    }
    for (int t = 0; t < T; t++) {
        tg[t] = (t == split - 1 || t == T - 1) ? -1 : ids[t + 1];
        n += tg[t] >= 0;
    }
    ft_lossscale ls;
    lossscale_init(&ls, dt == FT_F16, 0, 0);
    int skipped = 0;
    for (int s = 0; s < STEPS; s++) {
        grads_zero(m, &g);
        if (model_forward_train(m, T, ids, pos, doc, tg, logp, &e)) {
            fprintf(stderr, "forward: %s\n", e.msg);
            return 1;
        }
        double loss = 0;
        for (int t = 0; t < T; t++) {
            loss -= tg[t] >= 0 ? logp[t] / n : 0;
            dlogp[t] = tg[t] >= 0 ? -ls.scale / (float)n : 0.0f;
        }
        losses[s] = loss;
        if (model_backward(m, dlogp, &g, &e)) {
            fprintf(stderr, "backward: %s\n", e.msg);
            return 1;
        }
        ft_step_info info;
        optim_step(o, 1.0f / ls.scale, &info);
        lossscale_update(&ls, ls.enabled && info.skipped);
        skipped += info.skipped;
        if (!info.skipped) model_sync_compute(m);
    }
    if (dt == FT_F16) printf("fp16: %d overflow step(s) skipped, final loss scale %g\n", skipped, (double)ls.scale);
    optim_free(o);
    grads_free(m, &g);
    model_free(m);
    return 0;
}

/* ---------------- LoRA, QLoRA, DPO-LoRA ---------------- */

enum { K_LORA, K_QLORA, K_DPO, K_COUNT };
static const char *const KIND[K_COUNT] = {"lora", "qlora", "dpo-lora"};
static char model_dir[256];

static int frozen(const char *name, void *ctx) {
    (void)name, (void)ctx;
    return 0;
}

/* DPO batch: pair p (p = 0, 1) is samples 2p (chosen) and 2p+1 (rejected), each PROMPT prompt tokens then
 * RESP reply tokens; the 4 last tokens are padding. Returns the sample of token t's target (-1: none) and
 * whether it is a reply token. */
enum { PROMPT = 6, RESP = 9, SAMPLE = PROMPT + RESP };
static void dpo_batch(int32_t *ids, int32_t *pos, int32_t *doc, int32_t *tg, int *sample_of) {
    for (int t = 0; t < T; t++) {
        int smp = t / SAMPLE, j = t % SAMPLE;
        if (smp >= 4) { /* padding */
            ids[t] = 0, pos[t] = t - 4 * SAMPLE, doc[t] = 4 * SAMPLE, tg[t] = -1, sample_of[t] = -1;
            continue;
        }
        int pair = smp / 2, rejected = smp % 2;
        ids[t] = j < PROMPT ? (int32_t)(20 + 11 * pair + 5 * j) % 200 + 10
                            : (int32_t)((rejected ? 3 : 17) * (j + 1) + 40 * pair) % 200 + 10;
        pos[t] = j;
        doc[t] = smp * SAMPLE;
        sample_of[t] = -1;
    }
    for (int t = 0; t < T; t++) {
        int smp = t / SAMPLE, j = t % SAMPLE;
        tg[t] = -1;
        if (smp < 4 && j + 1 < SAMPLE && j + 1 >= PROMPT) { /* predicts a reply token */
            tg[t] = ids[t + 1];
            sample_of[t] = smp;
        }
    }
}

/* An adapter run set up as `finetune sft` does it: the base checkpoint in model_dir loaded frozen in dt
 * (QLoRA: its linears quantized to NF4), a LoRA of rank r on all linears, and an optimizer over A and B. */
static int adapter_setup(ft_backend *b, int quantize, ft_dtype dt, int r, float dropout, const ft_optim_cfg *oc,
                         ft_model **m, lora_adapter **a, ft_weights *g, ft_optim **o, ft_error *e) {
    lora_cfg lc = {0};
    lc.r = r;
    lc.alpha = 2 * r;
    lc.dropout = dropout;
    ft_param *pw = NULL, *pg = NULL;
    int np = 0;
    int rc = lora_parse_targets("\"all-linear\"", &lc, "test_cuda_train", e);
    if (!rc) rc = model_load_frozen(model_dir, b, quantize, dt, m, e);
    if (!rc) rc = lora_create(*m, &lc, 3, a, e);
    if (!rc && quantize) rc = lora_quantize_base(*a, *m, model_dir, e);
    if (!rc) {
        lora_attach(*a, *m);
        rc = model_set_precision(*m, dt, frozen, NULL, e); /* a no-op after model_load_frozen, as in the trainer */
    }
    if (!rc) rc = grads_create(*m, frozen, NULL, g, e);
    if (!rc) rc = optim_create_ex(*m, g, oc, 1, o, e);
    if (!rc) rc = lora_grads_create(*a, e);
    if (!rc) lora_params(*a, &pw, &pg, &np);
    for (int i = 0; i < np && !rc; i++) rc = optim_add_param(*o, pw[i].name, pw[i].t, pg[i].t, e);
    free(pw), free(pg);
    lora_cfg_free(&lc);
    return rc;
}

/* losses[STEPS] of adapter training of `kind` on backend b in compute dtype dt */
static int train_adapter(ft_backend *b, int kind, ft_dtype dt, double *losses) {
    ft_error e = {0};
    ft_model *m = NULL;
    lora_adapter *a = NULL;
    ft_weights g = {0};
    ft_optim *o = NULL;
    ft_optim_cfg oc = optim_defaults();
    oc.lr = kind == K_DPO ? 1e-3f : 3e-3f; /* slow enough that the curves still move at step 50 */
    oc.grad_clip = 1.0f;
    oc.weight_decay = 0.0f;
    oc.schedule = FT_SCHED_CONSTANT;
    oc.total_steps = STEPS;
    int rc = adapter_setup(b, kind == K_QLORA, dt, 8, 0.1f, &oc, &m, &a, &g, &o, &e);
    int32_t ids[T], pos[T], doc[T], tg[T];
    int sample_of[T], n = 0;
    float logp[T], dlogp[T];
    double ref_lp[4] = {0};
    if (kind == K_DPO) {
        dpo_batch(ids, pos, doc, tg, sample_of);
        /* reference: the base alone (adapters off), precomputed once */
        ft_linear_hooks saved = m ? m->hooks : (ft_linear_hooks){0};
        if (!rc) {
            m->hooks.forward = NULL;
            m->hooks.backward = NULL;
            rc = model_forward(m, T, ids, pos, doc, tg, logp, &e);
            m->hooks = saved;
        }
        for (int t = 0; t < T && !rc; t++)
            if (sample_of[t] >= 0) ref_lp[sample_of[t]] += logp[t];
    } else {
        int split = 29;
        for (int t = 0; t < T; t++) {
            int s0 = t < split ? 0 : split;
            ids[t] = (int32_t)(((t - s0) * 7 + (s0 ? 3 : 1)) % 50 + 10);
            pos[t] = t - s0;
            doc[t] = s0;
        }
        for (int t = 0; t < T; t++) {
            tg[t] = (t == split - 1 || t == T - 1) ? -1 : ids[t + 1];
            n += tg[t] >= 0;
        }
    }
    if (rc) {
        fprintf(stderr, "%s %s %s setup: %s\n", b->name, KIND[kind], ft_dtype_name(dt), e.msg);
        optim_free(o);
        if (m) grads_free(m, &g);
        lora_free(a);
        model_free(m);
        return 1;
    }
    dpo_config dc;
    dpo_config_default(&dc, DPO_SIGMOID);
    ft_lossscale ls;
    lossscale_init(&ls, dt == FT_F16, 0, 0);
    int skipped = 0;
    for (int s = 0; s < STEPS && !rc; s++) {
        for (int i = 0; i < o->n; i++) b->zero(b, o->g[i].t->data, ft_nbytes(o->g[i].t));
        m->step_seed = 1000 + (uint64_t)s; /* the same dropout masks on both backends */
        rc = model_forward_train(m, T, ids, pos, doc, tg, logp, &e);
        double loss = 0;
        if (!rc && kind == K_DPO) {
            double lp[4] = {0}, pc[2], pr[2], rcw[2], rr[2], dpc[2], dpr[2];
            int nc[2] = {RESP, RESP}, nr[2] = {RESP, RESP};
            for (int t = 0; t < T; t++)
                if (sample_of[t] >= 0) lp[sample_of[t]] += logp[t];
            for (int p = 0; p < 2; p++) pc[p] = lp[2 * p], pr[p] = lp[2 * p + 1], rcw[p] = ref_lp[2 * p],
                                        rr[p] = ref_lp[2 * p + 1];
            rc = dpo_loss_forward(&dc, 2, pc, pr, rcw, rr, nc, nr, &loss, dpc, dpr, NULL, &e);
            for (int t = 0; t < T; t++) {
                int smp = sample_of[t];
                dlogp[t] = smp < 0 ? 0.0f : (float)((smp % 2 ? dpr[smp / 2] : dpc[smp / 2]) * ls.scale);
            }
        } else if (!rc) {
            for (int t = 0; t < T; t++) {
                loss -= tg[t] >= 0 ? logp[t] / n : 0;
                dlogp[t] = tg[t] >= 0 ? -ls.scale / (float)n : 0.0f;
            }
        }
        losses[s] = loss;
        if (!rc) rc = model_backward(m, dlogp, &g, &e);
        if (rc) break;
        ft_step_info info;
        optim_step(o, 1.0f / ls.scale, &info);
        lossscale_update(&ls, ls.enabled && info.skipped);
        skipped += info.skipped;
        if (!info.skipped) model_sync_compute(m);
    }
    if (rc) fprintf(stderr, "%s %s %s: %s\n", b->name, KIND[kind], ft_dtype_name(dt), e.msg);
    if (dt == FT_F16)
        printf("%s fp16: %d overflow step(s) skipped, final loss scale %g\n", KIND[kind], skipped, (double)ls.scale);
    optim_free(o);
    grads_free(m, &g);
    lora_free(a);
    model_free(m);
    return rc ? 1 : 0;
}

/* The base the adapter runs train on: a random tiny Llama (std 0.2, so it has structure to adapt) saved as
 * a checkpoint of the given dtype in a temp dir (make_base: fp32). */
static int make_base_as(const ft_config *cfg, ft_dtype dtype) {
    ft_error e;
    ft_backend *cpu = ft_backend_cpu_create();
    ft_model *m = NULL;
    snprintf(model_dir, sizeof model_dir, "/tmp/ft_cuda_train_XXXXXX");
    int rc = mkdtemp(model_dir) ? 0 : 1;
    if (!rc) rc = model_init_random(cfg, cpu, 7, 0.2f, &m, &e) || model_save(m, model_dir, dtype, &e);
    if (rc) fprintf(stderr, "base model: %s\n", e.msg);
    model_free(m);
    cpu->destroy(cpu);
    return rc;
}

static int make_base(const ft_config *cfg) { return make_base_as(cfg, FT_F32); }

static void remove_base(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", model_dir);
    if (model_dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", model_dir);
}

/* CPU reference curves of the three adapter kinds; each must learn. */
static void adapter_refs(ft_backend *cpu, double ref[K_COUNT][STEPS]) {
    for (int k = 0; k < K_COUNT; k++) {
        CHECK(train_adapter(cpu, k, FT_F32, ref[k]) == 0);
        printf("cpu %-8s loss %.4f -> %.4f\n", KIND[k], ref[k][0], ref[k][STEPS - 1]);
        CHECK_MSG(ref[k][STEPS - 1] < 0.7 * ref[k][0], "%s on the CPU does not learn (%.4f -> %.4f)", KIND[k],
                  ref[k][0], ref[k][STEPS - 1]);
    }
}

/* |got - ref| <= tol * max(1, |ref|) at every step; FT_PRINT_CURVES=1 prints both curves step by step. */
static void compare_curves(const char *what, ft_dtype dt, const double *ref, const double *got, double tol) {
    double worst = 0;
    int at = 0;
    for (int s = 0; s < STEPS; s++) {
        double d = fabs(got[s] - ref[s]) / fmax(1.0, fabs(ref[s]));
        if (!(d <= worst)) worst = d, at = s;
        if (getenv("FT_PRINT_CURVES"))
            printf("  %s %s step %2d: cpu %.6f cuda %.6f diff %.3g\n", what, ft_dtype_name(dt), s + 1, ref[s], got[s],
                   d);
    }
    printf("%-8s %-4s loss cpu %.4f -> %.4f, cuda %.4f -> %.4f, worst step diff %.3g at step %d (tol %.3g)\n", what,
           ft_dtype_name(dt), ref[0], ref[STEPS - 1], got[0], got[STEPS - 1], worst, at + 1, tol);
    CHECK_MSG(worst <= tol, "%s %s: loss curve differs from the CPU's by %.3g at step %d", what, ft_dtype_name(dt),
              worst, at + 1);
}

/* One training step of `big` (S tokens, the GPU's 16-bit dtype) in mode on a fresh backend, so that its peak
 * counts only this run, against memplan_estimate less its fixed overhead: within 15%. Full: a random init;
 * LoRA/QLoRA (r 16, all linears): the base checkpoint in model_dir loaded as `finetune sft` does it
 * (model_load_frozen), so the load is measured too. */
static void memory_check(const ft_config *big, int64_t S, ft_train_mode mode) {
    static const char *NAME[] = {"full", "lora", "qlora"};
    ft_error e = {0};
    const int r = 16;
    ft_memplan mp;
    memplan_estimate(big, mode, S, 1, mode == FT_TRAIN_FULL ? 0 : r, &mp);
    ft_backend *g2 = NULL;
    CHECK(ft_backend_cuda_create(&g2, &e) == 0);
    if (!g2) return;
    ft_dtype dt = g2->arch >= 80 ? FT_BF16 : FT_F16;
    ft_model *m = NULL;
    lora_adapter *a = NULL;
    ft_weights g = {0};
    ft_optim *o = NULL;
    ft_optim_cfg oc = optim_defaults();
    oc.total_steps = 1;
    int rc;
    if (mode == FT_TRAIN_FULL) {
        rc = model_init_random(big, g2, 1, 0.02f, &m, &e);
        if (!rc) rc = model_set_precision(m, dt, NULL, NULL, &e);
        if (!rc) rc = grads_create(m, NULL, NULL, &g, &e);
        if (!rc) rc = optim_create(m, &g, &oc, &o, &e);
    } else {
        rc = adapter_setup(g2, mode == FT_TRAIN_QLORA, dt, r, 0.0f, &oc, &m, &a, &g, &o, &e);
    }
    int32_t V = (int32_t)big->vocab_size;
    int32_t *ids = malloc(S * 4), *pos = malloc(S * 4), *doc = calloc(S, 4), *tg = malloc(S * 4);
    float *lp = malloc(S * 4), *dl = malloc(S * 4);
    for (int64_t t = 0; t < S; t++) ids[t] = (int32_t)((t * 31) % V), pos[t] = (int32_t)t,
                                 tg[t] = t + 1 < S ? (int32_t)(((t + 1) * 31) % V) : -1, dl[t] = -1.0f / S;
    ft_step_info info;
    if (!rc) rc = model_forward_train(m, (int)S, ids, pos, doc, tg, lp, &e);
    if (!rc) rc = model_backward(m, dl, &g, &e);
    if (!rc) optim_step(o, 1.0f, &info);
    g2->sync(g2);
    CHECK_MSG(rc == 0, "%s memory step: %s", NAME[mode], e.msg);
    if (!rc) {
        size_t in_use = 0, peak = 0;
        g2->memory(g2, &in_use, &peak);
        double est = mp.total - mp.overhead, ratio = (double)peak / est;
        printf("memory %-5s: measured peak %.3f GiB, memplan %.3f GiB without its %.2f GiB overhead (ratio %.3f; "
               "weights %.3f, trainable %.3f, activations %.3f GiB)\n",
               NAME[mode], peak / 1073741824.0, est / 1073741824.0, mp.overhead / 1073741824.0, ratio,
               mp.weights / 1073741824.0, mp.trainable / 1073741824.0, mp.activations / 1073741824.0);
        CHECK_MSG(ratio > 0.85 && ratio < 1.15, "%s: measured peak / memplan estimate = %.3f, outside 15%%",
                  NAME[mode], ratio);
    }
    free(ids), free(pos), free(doc), free(tg), free(lp), free(dl);
    optim_free(o);
    if (m) grads_free(m, &g);
    lora_free(a);
    model_free(m);
    g2->destroy(g2);
}

static double env_tol(const char *name, double def) {
    const char *v = getenv(name);
    return v ? atof(v) : def;
}

int main(void) {
    if (getenv("FT_CUDA_TRAIN_CPU_ONLY")) { /* the CPU adapter curves alone (no GPU needed), for tuning */
        ft_error e;
        ft_config cfg;
        static double r[K_COUNT][STEPS];
        ft_backend *cpu = ft_backend_cpu_create();
        CHECK(tiny_cfg(&cfg, 128, 2, 256, 256, &e) == 0);
        CHECK(make_base(&cfg) == 0);
        adapter_refs(cpu, r);
        remove_base();
        cpu->destroy(cpu);
        if (t_failures) TEST_DONE();
    }
    if (!ft_backend_cuda_available()) {
        t_skip("no usable CUDA GPU (it needs a CUDA build on a machine with a GPU: tests/gpu/run.sh)");
    }
    ft_error e;
    ft_backend *cpu = ft_backend_cpu_create(), *gpu = NULL;
    if (ft_backend_cuda_create(&gpu, &e)) {
        fprintf(stderr, "cuda backend: %s\n", e.msg);
        return 1;
    }
    ft_config cfg;
    CHECK(tiny_cfg(&cfg, 128, 2, 256, 256, &e) == 0);
    double ref[STEPS], got[STEPS];
    CHECK(train(cpu, &cfg, FT_F32, ref) == 0);
    CHECK(ref[STEPS - 1] < 0.5 * ref[0]); /* it learns */
    ft_dtype dts[3] = {FT_F32, FT_BF16, FT_F16};
    double tols[3] = {env_tol("FT_TOL_TRAIN_F32", 1e-3), env_tol("FT_TOL_TRAIN_BF16", 5e-2),
                      env_tol("FT_TOL_TRAIN_F16", 2e-2)};
    for (int k = 0; k < 3; k++) {
        if (gpu->arch < 80 && dts[k] == FT_BF16) continue; /* T4: no bf16 */
        if (train(gpu, &cfg, dts[k], got)) {
            CHECK(0);
            continue;
        }
        compare_curves("sft", dts[k], ref, got, tols[k]);
    }

    /* LoRA, QLoRA, DPO-LoRA: CUDA curves vs the CPU's */
    static double aref[K_COUNT][STEPS];
    CHECK(make_base(&cfg) == 0);
    adapter_refs(cpu, aref);
    double ltols[3] = {env_tol("FT_TOL_LORA_F32", 1e-3), env_tol("FT_TOL_LORA_BF16", 0.1),
                       env_tol("FT_TOL_LORA_F16", 2e-2)};
    for (int kind = 0; kind < K_COUNT; kind++)
        for (int k = 0; k < 3; k++) {
            if (gpu->arch < 80 && dts[k] == FT_BF16) continue;
            if (train_adapter(gpu, kind, dts[k], got)) {
                CHECK_MSG(0, "%s %s on cuda failed", KIND[kind], ft_dtype_name(dts[k]));
                continue;
            }
            compare_curves(KIND[kind], dts[k], aref[kind], got, ltols[k]);
        }
    remove_base();

    /* memory: measured peak vs the plan. Under the CPU emulator (FT_CUEMU=1, tests/cuemu) a smaller model: the
     * allocations are the same code paths, the naive emulated GEMMs would take many minutes on the big one. */
    ft_config big;
    int emulated = getenv("FT_CUEMU") != NULL;
    CHECK(tiny_cfg(&big, emulated ? 256 : 1024, emulated ? 2 : 4, emulated ? 8000 : 32000, emulated ? 704 : 2816,
                   &e) == 0);
    memory_check(&big, emulated ? 256 : 2048, FT_TRAIN_FULL);
    CHECK(make_base_as(&big, FT_BF16) == 0); /* LoRA/QLoRA load a checkpoint, bf16 as the Danube ones */
    memory_check(&big, emulated ? 256 : 2048, FT_TRAIN_LORA);
    memory_check(&big, emulated ? 256 : 2048, FT_TRAIN_QLORA);
    remove_base();
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    TEST_DONE();
}
