/* grad_check.h: compare a model's gradients with a reference safetensors file of the same names
 * (fixtures from transformers' loss.backward()): per tensor, max |ours - ref| <= tol * max |ref|. */
#ifndef FT_GRAD_CHECK_H
#define FT_GRAD_CHECK_H

#include "finetune/model/model.h"
#include "finetune/io/safetensors.h"
#include "test.h"

static void t_check_grads(ft_backend *b, const st_file *ref, const ft_param *p, int n, double tol, const char *label) {
    ft_error e = {0};
    for (int i = 0; ref && i < n; i++) {
        const st_tensor_info *info = st_find(ref, p[i].name);
        CHECK_MSG(info != NULL, "%s: no reference gradient for %s", label, p[i].name);
        if (!info) continue;
        size_t cnt = (size_t)ft_numel(p[i].t);
        float *want = ft_xmalloc(cnt * 4), *got = ft_xmalloc(cnt * 4);
        CHECK(st_read_f32(info, want, cnt, &e) == 0);
        b->download(b, got, p[i].t->data, cnt * 4);
        double maxref = 0, maxerr = 0;
        for (size_t j = 0; j < cnt; j++) {
            maxref = fmax(maxref, fabs(want[j]));
            maxerr = fmax(maxerr, fabs(got[j] - want[j]));
        }
        CHECK_MSG(maxerr <= tol * maxref, "%s: %s: max error %.3g vs max |grad| %.3g", label, p[i].name, maxerr,
                  maxref);
        free(want);
        free(got);
    }
}

#endif
