#include "finetune/model/rope.h"

#include <math.h>

static void default_freqs(float base, int dim, float *inv_freq) {
    for (int i = 0; i < dim / 2; i++) {
        /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), all fp32 */
        float expo = (float)(2 * i) / (float)dim;
        inv_freq[i] = 1.0f / powf(base, expo);
    }
}

void rope_inv_freq(const ft_config *cfg, int64_t seq_len, float *inv_freq, float *mscale) {
    int dim = cfg->head_dim;
    float base = cfg->rope_theta;
    *mscale = 1.0f;
    switch (cfg->rope_type) {
    case FT_ROPE_NONE:
        default_freqs(base, dim, inv_freq);
        break;
    case FT_ROPE_LINEAR:
        default_freqs(base, dim, inv_freq);
        for (int i = 0; i < dim / 2; i++) inv_freq[i] /= cfg->rope_factor;
        break;
    case FT_ROPE_DYNAMIC: {
        int64_t maxpos = cfg->max_position_embeddings;
        if (seq_len > maxpos) {
            double f = cfg->rope_factor;
            base = (float)(base * pow(f * (double)seq_len / (double)maxpos - (f - 1.0), (double)dim / (dim - 2)));
        }
        default_freqs(base, dim, inv_freq);
        break;
    }
    case FT_ROPE_LLAMA3: {
        default_freqs(base, dim, inv_freq);
        float factor = cfg->rope_factor, lo = cfg->rope_low_freq_factor, hi = cfg->rope_high_freq_factor;
        float old_ctx = (float)cfg->rope_original_max_position;
        float low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
        for (int i = 0; i < dim / 2; i++) {
            float wavelen = 2.0f * 3.14159265358979323846f / inv_freq[i];
            if (wavelen > low_wavelen) {
                inv_freq[i] /= factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = (old_ctx / wavelen - lo) / (hi - lo);
                inv_freq[i] = (1.0f - smooth) * inv_freq[i] / factor + smooth * inv_freq[i];
            }
        }
        break;
    }
    }
}
