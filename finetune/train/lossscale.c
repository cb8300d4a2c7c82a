#include "finetune/train/lossscale.h"

#include <math.h>

void lossscale_init(ft_lossscale *s, int enabled, float init_scale, int growth_interval) {
    s->enabled = enabled;
    s->scale = enabled ? (init_scale > 0 ? init_scale : 65536.0f) : 1.0f;
    s->growth = 2.0f;
    s->backoff = 0.5f;
    s->growth_interval = growth_interval > 0 ? growth_interval : 2000;
    s->good_steps = 0;
}

/* torch._amp_update_scale_: on inf, scale *= backoff and the tracker resets; otherwise the tracker counts
 * up and, on reaching growth_interval, the scale grows (only while the grown value stays finite). */
int lossscale_update(ft_lossscale *s, int found_inf) {
    if (!s->enabled) return 0;
    if (found_inf) {
        s->scale *= s->backoff;
        s->good_steps = 0;
        return 1;
    }
    if (++s->good_steps == s->growth_interval) {
        float grown = s->scale * s->growth;
        if (isfinite(grown)) s->scale = grown;
        s->good_steps = 0;
    }
    return 0;
}
