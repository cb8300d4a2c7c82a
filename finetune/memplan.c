#include "memplan.h"

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
    int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    int64_t P = cfg_param_count(c);
    int64_t P_embed = V * D * (c->tie_word_embeddings ? 1 : 2);
    int64_t P_lin = P - P_embed - (int64_t)D * (2 * c->num_layers + 1);
    int64_t tokens = S * B;

    if (mode == FT_TRAIN_FULL) {
        o->trainable_params = P;
        o->weights = half * (double)P;                  /* compute copy */
        o->trainable = (f32 * 4.0) * (double)P;         /* master, grad, Adam m and v */
    } else {
        int64_t Pl = memplan_lora_params(c, lora_r);
        o->trainable_params = Pl;
        o->trainable = (f32 * 4.0 + half) * (double)Pl;
        double lin = mode == FT_TRAIN_LORA ? half * (double)P_lin
                                           /* NF4: 4 bits + 8-bit absmax per 64 + fp32 per 256 blocks */
                                           : (double)P_lin * (0.5 + 1.0 / 64 + 4.0 / (64.0 * 256));
        o->weights = lin + half * (double)(P - P_lin);
    }
    /* Recompute: every layer's input is kept; one layer's forward intermediates and their gradients live
     * at a time (x, norms, q, k, v, attention out, gate, up, act, plus fp32 softmax stats). */
    double saved = half * (double)(tokens * D) * c->num_layers;
    double layer = half * (double)tokens * (double)(4 * D + 2 * QD + 2 * KD + 3 * F) * 2.0 +
                   f32 * (double)tokens * c->num_heads;
    double chunk = 8192.0 < (double)V ? 8192.0 : (double)V;
    double loss = f32 * (double)tokens * chunk + f32 * (double)tokens * D;
    o->activations = saved + layer + loss;
    o->overhead = 512.0 * 1024 * 1024; /* CUDA context, cuBLAS workspace, allocator slack */
    o->total = o->weights + o->trainable + o->activations + o->overhead;
}
