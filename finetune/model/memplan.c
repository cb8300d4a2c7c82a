#include "finetune/model/memplan.h"

#include "finetune/model/model.h"

int64_t memplan_lora_params(const ft_config *c, int r) {
    int64_t D = c->hidden_size, F = c->intermediate_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    /* r * (in + out) per linear: q, k, v, o, gate, up, down */
    int64_t per_layer = (int64_t)r * ((D + QD) + 2 * (D + KD) + (QD + D) + 2 * (D + F) + (F + D));
    return per_layer * c->num_layers;
}

void memplan_estimate(const ft_config *c, ft_train_mode mode, int64_t S, int64_t B, int lora_r, ft_memplan *o) {
    const double half = 2.0, f32 = 4.0;
    int64_t D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t QD = (int64_t)c->num_heads * c->head_dim;
    int64_t P = cfg_param_count(c);
    int64_t P_norm = D * (2 * (int64_t)c->num_layers + 1); /* fp32 only: the norms have no 16-bit copy */
    int cls = c->num_labels > 0; /* a classifier: no lm_head, a [num_labels, D] score head */
    int64_t P_embed = V * D * (cls || c->tie_word_embeddings ? 1 : 2), P_score = cls ? (int64_t)c->num_labels * D : 0;
    int64_t P_lin = P - P_embed - P_norm - P_score;
    int64_t tokens = S * B;

    if (mode == FT_TRAIN_FULL) {
        o->trainable_params = P;
        o->weights = half * (double)(P - P_norm);  /* compute copies */
        o->trainable = (f32 * 4.0) * (double)P;    /* master, grad, Adam m and v */
    } else {
        int64_t Pl = memplan_lora_params(c, lora_r);
        o->trainable_params = Pl + P_score;
        /* A and B (and a classifier's head, trained whole): master, grad, Adam m and v */
        o->trainable = (f32 * 4.0) * (double)(Pl + P_score);
        /* the frozen base, loaded straight into its 16-bit copies (model_load_frozen); QLoRA's linears in NF4:
         * 4 bits a weight and an fp32 absmax per 64, plus the one linear dequantized at a time */
        int64_t biggest = F * D > QD * D ? F * D : QD * D;
        double lin = mode == FT_TRAIN_LORA ? half * (double)P_lin
                                           : (double)P_lin * (0.5 + 4.0 / 64) + half * (double)biggest;
        o->weights = lin + half * (double)(P_embed + P_score) + f32 * (double)P_norm;
    }
    /* The activation arena exactly as model_forward_train reserves it (recomputation: every layer's input
     * kept, one layer's working set), the lm_head + log-prob workspace of the CUDA backend (one tile of
     * logits in fp32 and 16 bits, allocated with a quarter of headroom), and LoRA's [T, r] buffers. */
    double arena = (double)model_train_arena_bytes(c, tokens, FT_BF16, 0);
    double chunk = (double)ft_logprob_chunk(tokens, V);
    double logprob = 1.25 * ((double)tokens * chunk * (f32 + half) + 4.0 * f32 * (double)tokens);
    if (cls) /* no vocabulary at all: the head's few rows (at most one per token) */
        logprob = (double)model_cls_head_bytes(c, tokens, FT_BF16);
    double lora = mode == FT_TRAIN_FULL ? 0.0 : 2.0 * half * (double)tokens * lora_r;
    o->activations = arena + logprob + lora;
    o->overhead = 512.0 * 1024 * 1024; /* CUDA context, cuBLAS workspace, allocator slack */
    o->total = o->weights + o->trainable + o->activations + o->overhead;
}
