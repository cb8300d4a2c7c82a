/* model: the Llama/Mistral/Qwen2 decoder written once against the backend op table.
 *
 * model_load reads an HF checkpoint dir (config.json + safetensors, sharded or
 * not) into fp32 weights on the backend, checking every tensor's presence and
 * shape. model_forward runs a flat token layout (see backend.h: packed
 * samples, position ids restarting per sample, doc_start confining attention)
 * and returns the log-probability of each position's target. model_generate
 * decodes with a KV cache. Weights are only touched through backend ops. */
#ifndef FT_MODEL_H
#define FT_MODEL_H

#include "arena.h"
#include "backend.h"
#include "config.h"

typedef struct ft_layer {
    ft_tensor ln1, wq, wk, wv, wo, bq, bk, bv, bo; /* biases: ndim 0 when absent (bo: Llama only) */
    ft_tensor ln2, wg, wu, wd;
} ft_layer;

/* The model's tensors; the same struct holds their gradients (data NULL for a frozen parameter). */
typedef struct ft_weights {
    ft_tensor embed, norm, lm_head; /* lm_head aliases embed when tied */
    ft_layer *layers;
} ft_weights;

typedef struct ft_train_state ft_train_state;

typedef struct ft_model {
    ft_config cfg;
    ft_backend *b;
    ft_weights w;
    ft_arena arena;        /* activations of one step */
    ft_train_state *train; /* what model_forward_train keeps for model_backward */
} ft_model;

/* A named parameter of the model, in HF naming, for iteration (save, optimizer, LoRA). */
typedef struct ft_param {
    char name[96];
    ft_tensor *t;
} ft_param;

/* Shapes (data NULL) of every tensor a config implies, and the named list of a weights struct. */
void weights_shape(const ft_config *cfg, ft_device dev, ft_weights *w);
ft_param *weights_params(const ft_config *cfg, ft_weights *w, int *n);

int model_load(const char *dir, ft_backend *b, ft_model **out, ft_error *e);
/* Random init like transformers' _init_weights: normal(0, std) linears and embeddings, ones for norms. */
int model_init_random(const ft_config *cfg, ft_backend *b, uint64_t seed, float std, ft_model **out, ft_error *e);
/* Write config.json + model.safetensors (dtype F32, F16 or BF16) into dir. */
int model_save(ft_model *m, const char *dir, ft_dtype dtype, ft_error *e);
void model_free(ft_model *m);

/* Parameters in HF order; *n receives the count. The array is malloc'd (caller frees). */
ft_param *model_params(ft_model *m, int *n);

/* Forward over T tokens (host arrays). targets[t] < 0: no log-prob (0 written). logp [T] on the host. */
int model_forward(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                  const int32_t *targets, float *logp, ft_error *e);
/* Convenience: one sequence; logp[i] = log p(ids[i+1] | ids[..i]) for i < n-1. */
int model_score(ft_model *m, const int32_t *ids, int n, float *logp, ft_error *e);

typedef struct ft_sample_opts {
    int greedy;        /* argmax (ignores temperature and top_p) */
    float temperature; /* > 0 */
    float top_p;       /* (0, 1] */
    uint64_t seed;
    int stop_at_eos;   /* stop after emitting eos_token_id (it is included in the output) */
} ft_sample_opts;

/* Generate up to max_new tokens after the prompt; out (capacity max_new) receives the new tokens.
 * on_token (may be NULL) is called after each token, for streaming output. */
int model_generate(ft_model *m, const int32_t *prompt, int n_prompt, int max_new, const ft_sample_opts *opts,
                   int32_t *out, int *n_out, void (*on_token)(int32_t id, void *ctx), void *ctx, ft_error *e);

/* ---- training ---- */

/* Gradients parallel to the model's weights. trainable(name, ctx) decides per parameter (NULL: all);
 * frozen parameters get no gradient memory and no weight-gradient GEMMs. */
int grads_create(ft_model *m, int (*trainable)(const char *name, void *ctx), void *ctx, ft_weights *g, ft_error *e);
void grads_zero(ft_model *m, ft_weights *g);
void grads_free(ft_model *m, ft_weights *g);

/* Forward for training: like model_forward, and keeps each layer's input (activations inside a layer are
 * recomputed during backward). logp [T] on the host. */
int model_forward_train(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                        const int32_t *targets, float *logp, ft_error *e);
/* Backward of the last model_forward_train for the scalar sum_t dlogp[t] * logp[t] (dlogp [T] on the host,
 * e.g. -1/N on trained tokens for mean cross-entropy); gradients are ADDED into g. */
int model_backward(ft_model *m, const float *dlogp, ft_weights *g, ft_error *e);

#endif
