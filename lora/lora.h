/* lora: LoRA adapters on the model's linear layers (PEFT-compatible) and QLoRA's NF4 frozen base.
 *
 * For each targeted (layer, linear) with input size in and output size out: A [r, in], B [out, r], fp32,
 * trainable; y += scaling * (x A^T) B^T with scaling = alpha / r (alpha / sqrt(r) with rsLoRA).
 * PEFT's init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0.
 * The adapter plugs into the model through ft_linear_hooks (lora_attach); the base stays frozen.
 * Files: PEFT's adapter_config.json (sorted keys, indent 2, PEFT 0.21's key set) and
 * adapter_model.safetensors (keys base_model.model.model.layers.{i}.<module>.lora_A.weight, metadata
 * {"format": "pt"}). QLoRA: lora_quantize_base keeps the layers' linears as NF4 on the backend
 * (bitsandbytes' layout, lora/nf4.h) and dequantizes each into one scratch buffer when used.
 * Dropout (PEFT semantics): in training the adapter path reads dropout(x) (inverted scaling 1/(1-p)); the
 * mask comes from the backend's counter-based dropout op seeded by (m->step_seed, layer, linear), so
 * backward's recomputation and a resumed run draw the same masks; the input gradient through the adapter
 * gets the same mask and scaling. 16-bit compute: A and B stay fp32 masters (and fp32 gradients); each
 * hook call casts them to the compute dtype (tiny next to the GEMMs, never stale); the QLoRA base is
 * dequantized straight into the compute dtype.
 * DoRA (use_dora, PEFT's DoraLinearLayer): each adapted linear also has a trainable fp32 magnitude m [out]
 * (file key ...<module>.lora_magnitude_vector, initialised to ||W|| per output row) and computes
 * y = (m / n) * (x W^T + s B A x) per output feature, n = ||W + s B A|| per row, recomputed from the current
 * A, B at each call and treated as a constant in backward (DoRA paper 4.3, PEFT's detach). The base weight is
 * the model's (fp32 or its 16-bit copy) or QLoRA's NF4 one dequantized to fp32. Backward goes through the
 * grad_out hook: dy' = (m / n) * dy feeds the base and adapter GEMMs, and dm += sum_t dy * (x W^T + s B A x) / n.
 * Training DoRA with lora_dropout > 0 is refused (lora_grads_create); inference ignores dropout anyway.
 * Not supported (refused with a clear error): fan_in_fan_out, regex target_modules, bias != "none". */
#ifndef FT_LORA_H
#define FT_LORA_H

#include "finetune/model/model.h"

typedef struct lora_cfg {
    int r;
    float alpha, dropout;
    int use_rslora, use_dora;
    unsigned targets; /* bit i: FT_LINEAR i is adapted */
    int all_linear;   /* target_modules was "all-linear" */
    int *layers;      /* layers_to_transform (NULL: all) */
    int n_layers;
    int *pairs; /* full-path targets ("model.layers.3.mlp.up_proj", as PEFT writes all-linear): layer * 7 + linear */
    int n_pairs;
} lora_cfg;

typedef struct lora_adapter {
    lora_cfg cfg;
    ft_model *m; /* the model it adapts; a classifier's (num_labels > 0) adapter is PEFT's SEQ_CLS kind: its file
                  * also holds the fully trained head, base_model.model.score.weight (modules_to_save) */
    float scaling;
    ft_backend *b;
    int num_layers;
    ft_tensor *A, *B, *gA, *gB; /* [num_layers * FT_LIN_COUNT]; data NULL where not adapted (g: not training) */
    ft_tensor *mag, *gmag;      /* DoRA magnitudes [out] fp32 (data NULL without DoRA) */
    int mag_pending;            /* DoRA magnitudes still to initialise from the base (QLoRA: after quantizing) */
    ft_tensor dw, dn, dys, dz;  /* DoRA scratch: W + sBA fp32 [max out*in], its row norms fp32 [max out],
                                   rescaled dy and recomputed pre-scale output [cap_T, max out] (compute dtype) */
    int64_t dora_T;
    ft_dtype dora_dt;
    /* scratch in the activations' dtype (see ensure_scratch in lora.c) */
    ft_tensor xa, dyb; /* [cap_T, r] */
    ft_tensor xd;      /* [cap_T, largest in]: dropout(x) and the masked input gradient (dropout > 0, training) */
    ft_tensor wc;      /* 16-bit copies of one A and one B (16-bit compute) */
    int64_t cap_T;
    ft_dtype cap_dt;
    /* QLoRA base */
    ft_tensor *qpacked, *qabsmax; /* [num_layers * FT_LIN_COUNT] on the backend */
    ft_tensor wscratch;           /* the largest linear dequantized, in the compute dtype */
    int64_t wscratch_n;
    ft_dtype wscratch_dt;
} lora_adapter;

/* Parse target_modules: a JSON array of names or the string "all-linear" (names: q_proj ... down_proj,
 * with or without the self_attn./mlp. prefix). `where` names the source in errors. */
int lora_parse_targets(const char *json, lora_cfg *c, const char *where, ft_error *e);
int lora_check_cfg(const lora_cfg *c, const char *where, ft_error *e);
void lora_cfg_free(lora_cfg *c);

/* New adapter for m (PEFT init from seed). */
int lora_create(ft_model *m, const lora_cfg *cfg, uint64_t seed, lora_adapter **out, ft_error *e);
/* Read a PEFT adapter dir: config + weights, checked against m (targets, shapes). A SEQ_CLS adapter's
 * base_model.model.score.weight is loaded into m's score (m must be a classifier of that many labels). */
int lora_load(const char *dir, ft_model *m, lora_adapter **out, ft_error *e);
/* Read only adapter_config.json. */
int lora_read_config(const char *dir, lora_cfg *out, ft_error *e);
void lora_free(lora_adapter *a);

/* Install the hooks on m (forward/backward, and base_weight when the base is quantized). */
void lora_attach(lora_adapter *a, ft_model *m);
/* Gradient memory for A and B (and DoRA magnitudes), zeroed. FT_EINPUT for DoRA with lora_dropout > 0. */
int lora_grads_create(lora_adapter *a, ft_error *e);
/* Trainable parameters and their gradients, PEFT names; arrays malloc'd, *n entries. */
int lora_params(lora_adapter *a, ft_param **w, ft_param **g, int *n);

/* Write adapter_config.json + adapter_model.safetensors into dir (a classifier's: task_type SEQ_CLS,
 * modules_to_save as PEFT writes it, and the score head). */
int lora_save(const lora_adapter *a, const char *dir, const char *base_model, ft_error *e);

/* QLoRA: quantize (or read, for a bitsandbytes 4-bit checkpoint) the layers' linear weights of the
 * checkpoint in model_dir to NF4 on the backend; m must have been loaded with skip_linears. */
int lora_quantize_base(lora_adapter *a, ft_model *m, const char *model_dir, ft_error *e);

/* The [out, in] shape of one linear of a layer for config c. */
void lora_linear_shape(const ft_config *c, ft_linear which, int64_t *out, int64_t *in);

/* One bitsandbytes 4-bit weight `wname` ([rows, cols], U8 + its quant-state tensors in st) dequantized to
 * fp32 into out (rows * cols), as bitsandbytes' dequantize_4bit does before casting; the quant state is
 * checked (names the tensor; `where` names the checkpoint). */
struct st_model;
int lora_bnb4_dequant(const struct st_model *st, const char *wname, int64_t rows, int64_t cols, float *out,
                      const char *where, ft_error *e);
/* 1 if `name` is one of the quant-state tensors bitsandbytes stores next to a 4-bit weight
 * (.absmax, .quant_map, .nested_absmax, .nested_quant_map, .quant_state.bitsandbytes__nf4). */
int lora_is_bnb4_aux(const char *name);

/* PEFT key of one adapter matrix ("A" or "B"; "M" gives the DoRA magnitude's key). */
void lora_key(char *buf, size_t n, int layer, ft_linear which, const char *ab);

#endif
