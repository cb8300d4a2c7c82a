/* model: the Llama/Mistral/Qwen2 decoder written once against the backend op table.
 *
 * model_load reads an HF checkpoint dir (config.json + safetensors, sharded or
 * not) into fp32 weights on the backend, checking every tensor's presence and
 * shape and counting its non-finite values (m->nonfinite). model_forward runs a flat token layout (see backend.h: packed
 * samples, position ids restarting per sample, doc_start confining attention)
 * and returns the log-probability of each position's target. model_generate
 * decodes with a KV cache. Weights are only touched through backend ops.
 *
 * Precision (model_set_precision; docs/ARCHITECTURE.md "Precision"): the compute dtype is F32 on the CPU
 * (the reference path, unchanged) and BF16 or F16 on the GPU. Then every weight a GEMM or the embedding
 * reads has a 16-bit compute copy in m->wc; trainable parameters keep their fp32 masters in m->w (what
 * the optimizer updates; model_sync_compute refreshes the copies), frozen ones exist only as the copy.
 * Norm weights stay fp32. Activations between GEMMs are in the compute dtype; the residual stream, norm
 * statistics, softmax/log-sum-exp, log-probs, losses and weight gradients are fp32. */
#ifndef FT_MODEL_H
#define FT_MODEL_H

#include "finetune/backend/arena.h"
#include "finetune/backend/backend.h"
#include "finetune/model/config.h"

typedef struct ft_layer {
    ft_tensor ln1, wq, wk, wv, wo, bq, bk, bv, bo; /* biases: ndim 0 when absent (bo: Llama only) */
    ft_tensor ln2, wg, wu, wd;
} ft_layer;

/* The model's tensors; the same struct holds their gradients (data NULL for a frozen parameter). */
typedef struct ft_weights {
    ft_tensor embed, norm, lm_head; /* lm_head aliases embed when tied; absent (ndim 0) in a classifier */
    ft_tensor score;                /* sequence classification head [num_labels, D] (cfg.num_labels > 0), else ndim 0 */
    ft_layer *layers;
} ft_weights;

typedef struct ft_train_state ft_train_state;

/* The seven linear layers of a decoder layer, in HF order. */
typedef enum { FT_LIN_Q = 0, FT_LIN_K, FT_LIN_V, FT_LIN_O, FT_LIN_GATE, FT_LIN_UP, FT_LIN_DOWN, FT_LIN_COUNT } ft_linear;
extern const char *const FT_LINEAR_NAMES[FT_LIN_COUNT]; /* "self_attn.q_proj", ..., "mlp.down_proj" */

struct ft_model;
/* Hooks on every linear layer, for adapters (LoRA) and quantized bases (QLoRA). All may be NULL.
 * Every tensor a hook sees (x, y, dy, dx, scratch) is in the model's compute dtype m->compute (F32 on the
 * CPU, BF16/F16 on the GPU); the adapter's own parameters and their gradients may stay fp32.
 * base_weight: the weight to multiply by when the model holds none itself (a quantized base):
 *   dequantize into *scratch (shaped like the weight, dtype m->compute) and return it.
 * forward: after y = x W^T (+ bias), add the adapter's contribution: y += f(x) (DoRA: y = g(x, y)).
 * backward: given dy, add the adapter's input gradient into dx and accumulate its own parameter
 *   gradients; x is the same input forward saw.
 * grad_out (DoRA, whose forward rescales the whole output y per output feature rather than adding to it):
 *   called first in backward with the output gradient dy; returns the gradient that the base GEMMs
 *   (dx = dy' W, dW += dy'^T x) and `backward` then use in place of dy: dy itself, or a tensor of the hook's
 *   own memory (same shape and dtype) holding the rewritten one. It may accumulate parameter gradients. */
typedef struct ft_linear_hooks {
    void *ctx;
    const ft_tensor *(*base_weight)(void *ctx, struct ft_model *m, int layer, ft_linear which, ft_tensor *scratch);
    void (*forward)(void *ctx, struct ft_model *m, int layer, ft_linear which, const ft_tensor *x, ft_tensor *y);
    void (*backward)(void *ctx, struct ft_model *m, int layer, ft_linear which, const ft_tensor *x,
                     const ft_tensor *dy, ft_tensor *dx);
    const ft_tensor *(*grad_out)(void *ctx, struct ft_model *m, int layer, ft_linear which, const ft_tensor *x,
                                 const ft_tensor *dy);
} ft_linear_hooks;

/* Non-finite values (NaN, +-Inf) found in a checkpoint's weights: counted on the host while each tensor is
 * read from the file (the loader's own copy, no second pass over device memory). The first
 * FT_NONFINITE_NAMED tensors holding any are named; model_nonfinite_describe says it in one line. */
#define FT_NONFINITE_NAMED 4
typedef struct ft_nonfinite {
    int64_t values; /* non-finite values in all tensors */
    int tensors;    /* tensors holding any */
    struct {
        char name[96];
        int64_t count, numel;
    } first[FT_NONFINITE_NAMED];
} ft_nonfinite;

typedef struct ft_model {
    ft_config cfg;
    ft_backend *b;
    ft_weights w;
    ft_arena arena;        /* activations of one step */
    ft_train_state *train; /* what model_forward_train keeps for model_backward */
    ft_linear_hooks hooks;
    int training; /* set during model_forward_train / model_backward (adapters apply dropout) */
    ft_dtype compute;        /* F32 (default), BF16 or F16: see "Precision" above */
    ft_weights wc;           /* compute copies when compute != F32 (data NULL for norms and absent tensors) */
    int offload_activations; /* training keeps each layer's saved input in host memory (alloc_host) */
    /* Randomness of one training micro-batch (LoRA dropout masks): the trainer sets it before each
     * model_forward_train from (seed, global micro-batch index), so model_backward's recomputation draws the
     * same masks as the forward and a resumed run draws the same masks as an uninterrupted one. */
    uint64_t step_seed;
    ft_nonfinite nonfinite; /* what load found (all zero after model_init_random) */
} ft_model;

/* Non-finite floats among x[0..n). */
int64_t model_count_nonfinite(const float *x, size_t n);
/* Record `count` non-finite values in tensor `name` of `numel` elements (nothing when count is 0); for a
 * caller that reads checkpoint tensors itself (QLoRA's base linears). */
void model_note_nonfinite(ft_nonfinite *nf, const char *name, int64_t count, int64_t numel);
/* "3 non-finite values (NaN/Inf) in 1 tensor: model.norm.weight (3 of 64)" (more tensors: "..., and 2 more"). */
void model_nonfinite_describe(const ft_nonfinite *nf, char *buf, size_t cap);

/* The weight tensor of one linear of a layer (data NULL when a hook provides it). */
ft_tensor *model_linear_weight(ft_layer *L, ft_linear which);

/* A named parameter of the model, in HF naming, for iteration (save, optimizer, LoRA). */
typedef struct ft_param {
    char name[96];
    ft_tensor *t;
} ft_param;

/* Shapes (data NULL) of every tensor a config implies, and the named list of a weights struct. */
void weights_shape(const ft_config *cfg, ft_device dev, ft_weights *w);
ft_param *weights_params(const ft_config *cfg, ft_weights *w, int *n);

/* Check a checkpoint dir against its config.json without loading any weight: every safetensors header
 * (one file, or every shard of model.safetensors.index.json; sizes, offsets, dtypes, overlaps), then each
 * tensor the config implies present, of that shape and of a float dtype, exactly as model_load checks
 * them (a decoder linear may also be a bitsandbytes NF4 U8 tensor, which QLoRA reads); the message names
 * the file, the tensor and the reason. *cfg receives the config; *n_tensors (may be NULL) the number of
 * tensors checked, *n_unused (may be NULL) the checkpoint's tensors the model does not read. */
int model_check_checkpoint(const char *dir, ft_config *cfg, int *n_tensors, int *n_unused, ft_error *e);
int model_load(const char *dir, ft_backend *b, ft_model **out, ft_error *e);
/* skip_linears: leave the decoder layers' seven linear weights unloaded (data NULL), for a caller that
 * provides them through hooks.base_weight (QLoRA's quantized base). */
int model_load_ex(const char *dir, ft_backend *b, int skip_linears, ft_model **out, ft_error *e);
/* A model nothing of which trains (a LoRA/QLoRA base, a DPO reference), computing in dt: the same result as
 * model_load_ex then model_set_precision(dt) with every parameter frozen, but each tensor goes to the device
 * in its final dtype (BF16/F16 rounded on the host), so loading never needs the fp32 model's 4 bytes per
 * parameter on the GPU. dt F32 is model_load_ex. */
int model_load_frozen(const char *dir, ft_backend *b, int skip_linears, ft_dtype dt, ft_model **out, ft_error *e);
/* Loading a checkpoint as a sequence classifier (model_load_cls). */
typedef struct ft_cls_load {
    int num_labels;            /* > 0 */
    const char *const *labels; /* [num_labels] id2label names; NULL: the checkpoint's, else LABEL_i */
    const char *problem_type;  /* NULL: the checkpoint's, else none */
    uint64_t seed;             /* score's init when the checkpoint has none */
    int trainable_score;       /* dt 16-bit: score keeps an fp32 master beside its compute copy (it trains) */
} ft_cls_load;
/* A ...ForSequenceClassification checkpoint loads as it is (its num_labels must be o->num_labels, and its
 * label names o->labels when given); a causal LM loads without lm_head and gets `score` initialised as
 * transformers does, normal(0, initializer_range) (from o->seed). skip_linears and dt as model_load_frozen,
 * except that score keeps an fp32 master when o->trainable_score. */
int model_load_cls(const char *dir, ft_backend *b, int skip_linears, ft_dtype dt, const ft_cls_load *o, ft_model **out,
                   ft_error *e);
/* Random init like transformers' _init_weights: normal(0, std) linears and embeddings, ones for norms. */
int model_init_random(const ft_config *cfg, ft_backend *b, uint64_t seed, float std, ft_model **out, ft_error *e);
/* Write config.json + model.safetensors (dtype F32, F16 or BF16) into dir. */
int model_save(ft_model *m, const char *dir, ft_dtype dtype, ft_error *e);
void model_free(ft_model *m);

/* Compute in `dt` (F32: nothing to do; BF16/F16: make the 16-bit compute copies). The fp32 masters of the
 * parameters trainable(name, ctx) rejects are freed (NULL trainable: all keep masters); call it with the
 * same predicate as grads_create, before it. FT_EINPUT for a 16-bit dtype on the CPU backend. */
int model_set_precision(ft_model *m, ft_dtype dt, int (*trainable)(const char *name, void *ctx), void *ctx,
                        ft_error *e);
/* Refresh the compute copies from the fp32 masters (after an optimizer step, after loading weights). */
void model_sync_compute(ft_model *m);

/* Bytes of the activation arena model_forward_train reserves for T tokens (memplan's activations). */
size_t model_train_arena_bytes(const ft_config *c, int64_t T, ft_dtype compute, int offload);

/* Parameters in HF order; *n receives the count. The array is malloc'd (caller frees). */
ft_param *model_params(ft_model *m, int *n);

/* Forward over T tokens (host arrays). targets[t] < 0: no log-prob (0 written). logp [T] on the host. */
int model_forward(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                  const int32_t *targets, float *logp, ft_error *e);
/* The same with attention exclusions (backend.h): token t does not see keys excl_start[t] <= j < excl_end[t]
 * (host [T] arrays, ranges before the token itself; both NULL: exactly model_forward). DPO's shared-prompt
 * layout uses them. */
int model_forward_excl(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                       const int32_t *excl_start, const int32_t *excl_end, const int32_t *targets, float *logp,
                       ft_error *e);
/* Convenience: one sequence; logp[i] = log p(ids[i+1] | ids[..i]) for i < n-1. */
int model_score(ft_model *m, const int32_t *ids, int n, float *logp, ft_error *e);

typedef struct ft_sample_opts {
    int greedy;        /* argmax (ignores temperature and top_p) */
    float temperature; /* > 0 */
    float top_p;       /* (0, 1] */
    uint64_t seed;
    int stop_at_eos;   /* stop after emitting eos_token_id (it is included in the output) */
    int has_stop_id;   /* with stop_at_eos: stop after stop_id too (a chat template's end of turn that is not */
    int32_t stop_id;   /* EOS, e.g. chatml's <|im_end|>, llama3's <|eot_id|>) */
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
/* model_forward_train with attention exclusions, as model_forward_excl (kept for model_backward). */
int model_forward_train_excl(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                             const int32_t *excl_start, const int32_t *excl_end, const int32_t *targets, float *logp,
                             ft_error *e);
/* Backward of the last model_forward_train for the scalar sum_t dlogp[t] * logp[t] (dlogp [T] on the host,
 * e.g. -1/N on trained tokens for mean cross-entropy); gradients are ADDED into g. */
int model_backward(ft_model *m, const float *dlogp, ft_weights *g, ft_error *e);

/* ---- sequence classification (cfg.num_labels > 0) ----
 * The decoder's final-norm hidden state of each sample's last token (rows[s]: its flat index, increasing),
 * times score^T: logits [S * num_labels] fp32 on the host, sample-major. The gather and the scatter of its
 * gradient are the backend's embedding ops over the hidden states, so both backends run it. */
int model_forward_cls(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start, int S,
                      const int32_t *rows, float *logits, ft_error *e);
/* Training forward (state kept for model_backward_cls). */
int model_forward_train_cls(ft_model *m, int T, const int32_t *ids, const int32_t *pos, const int32_t *doc_start,
                            int S, const int32_t *rows, float *logits, ft_error *e);
/* Backward for the scalar sum dlogits * logits (dlogits [S * num_labels] host); gradients ADDED into g
 * (score's included when g->score has memory). */
int model_backward_cls(ft_model *m, const float *dlogits, ft_weights *g, ft_error *e);
/* A parameter's values to/from the host as fp32: set writes the fp32 master and the 16-bit compute copy,
 * whichever exist; get reads the master, else the compute copy. FT_EINTERNAL when it has neither. */
int model_param_set(ft_model *m, ft_tensor *w, const float *host, ft_error *e);
int model_param_get(ft_model *m, const ft_tensor *w, float *host, ft_error *e);
/* Arena bytes the head adds for S samples (memplan). */
size_t model_cls_head_bytes(const ft_config *c, int64_t S, ft_dtype compute);

#endif
