#include "finetune/train/sft_loss.h"

#include <string.h>

int sft_norm_parse(const char *s, sft_norm *out, ft_error *e) {
    if (strcmp(s, "tokens") == 0)
        *out = SFT_NORM_TOKENS;
    else if (strcmp(s, "samples") == 0)
        *out = SFT_NORM_SAMPLES;
    else
        return ft_fail(e, FT_EINPUT, "loss_normalization '%s': expected tokens or samples", s);
    return FT_OK;
}

void sft_loss_batch(sft_norm norm, const ds_batch *b, const float *logp, const ft_step_norm *step, float *dlogp,
                    double *loss) {
    int T = b->n_tokens;
    for (int t = 0; t < T; t++) dlogp[t] = 0;
    if (norm == SFT_NORM_TOKENS) {
        for (int t = 0; t < T; t++)
            if (b->targets[t] >= 0) {
                *loss -= logp[t] / step->tokens;
                dlogp[t] = (float)(-1.0 / step->tokens);
            }
        return;
    }
    for (int t = 0; t < T;) {
        int s = t, n = 0;
        while (t < T && b->sample[t] == b->sample[s]) n += b->targets[t++] >= 0;
        if (n == 0) continue; /* padding, or a sample with nothing trained */
        double w = 1.0 / ((double)n * step->samples);
        for (int i = s; i < t; i++)
            if (b->targets[i] >= 0) {
                *loss -= logp[i] * w;
                dlogp[i] = (float)-w;
            }
    }
}

int sft_loss_fn(void *ctx, const ds_batch *b, const float *logp, const ft_step_norm *step, float *dlogp,
                double *loss, double *extra, ft_error *e) {
    (void)extra, (void)e;
    sft_loss_batch(*(const sft_norm *)ctx, b, logp, step, dlogp, loss);
    return FT_OK;
}
