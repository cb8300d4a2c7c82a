/* lossscale: dynamic loss scaling for fp16 training, exactly as PyTorch's torch.amp.GradScaler.
 *
 * The loss (so every gradient) is multiplied by `scale` before backward and the gradients are divided by it
 * before the optimizer. After each step, lossscale_update is told whether any gradient was inf/NaN:
 * if so the step is skipped and the scale multiplied by backoff (0.5); otherwise a counter of clean steps
 * grows, and after growth_interval (2000) clean steps in a row the scale is multiplied by growth (2) and the
 * counter restarts. Defaults: init 2^16. The state (scale, good_steps) is what a checkpoint saves. bf16 and
 * fp32 need no scaling: a disabled scaler has scale 1 and never changes. Pure C, no backend. */
#ifndef FT_LOSSSCALE_H
#define FT_LOSSSCALE_H

typedef struct ft_lossscale {
    int enabled;
    float scale;
    float growth, backoff;
    int growth_interval;
    int good_steps; /* clean steps since the last change (PyTorch's growth_tracker) */
} ft_lossscale;

/* growth_interval <= 0 gives the default 2000; init_scale <= 0 gives 2^16. */
void lossscale_init(ft_lossscale *s, int enabled, float init_scale, int growth_interval);
/* Record a step's outcome; returns 1 when the step must be skipped (found_inf on an enabled scaler). */
int lossscale_update(ft_lossscale *s, int found_inf);

#endif
