/* train/cls_loss: cross-entropy (one-hot, soft labels, label smoothing as torch's F.cross_entropy), MSE and
 * the reward-model pair loss: values against closed forms, gradients by central differences. */
#include "finetune/train/cls_loss.h"
#include "test.h"

static double ce_at(const float *z, const float *p, int K, double eps) { return cls_ce(z, p, K, eps, 0, NULL, NULL, NULL); }

int main(void) {
    float z[3] = {0.3f, -1.2f, 2.0f}, p1[3] = {0, 0, 1}, ps[3] = {0.2f, 0.5f, 0.3f};
    double ll;
    int pred;
    /* one-hot: -log softmax(z)_2 */
    double lse = log(exp(0.3) + exp(-1.2) + exp(2.0));
    CHECK_CLOSE(cls_ce(z, p1, 3, 0, 0, NULL, &ll, &pred), lse - 2.0, 1e-6);
    CHECK_CLOSE(ll, lse - 2.0, 1e-6);
    CHECK(pred == 2);
    /* smoothing 0.1 (torch): (1 - eps) CE + eps * mean_k(-log s_k); the log loss stays unsmoothed */
    double smooth = 0.9 * (lse - 2.0) + 0.1 * ((lse - 0.3) + (lse + 1.2) + (lse - 2.0)) / 3;
    CHECK_CLOSE(cls_ce(z, p1, 3, 0.1, 0, NULL, &ll, NULL), smooth, 1e-6);
    CHECK_CLOSE(ll, lse - 2.0, 1e-6);
    /* gradients by central differences: CE soft + smoothing, MSE, pair with margin */
    for (int k = 0; k < 3; k++) {
        float g[3] = {0}, zp[3], zm[3];
        cls_ce(z, ps, 3, 0.1, 0.5, g, NULL, NULL);
        for (int i = 0; i < 3; i++) zp[i] = zm[i] = z[i];
        zp[k] += 1e-3f;
        zm[k] -= 1e-3f;
        double fd = 0.5 * (ce_at(zp, ps, 3, 0.1) - ce_at(zm, ps, 3, 0.1)) / ((double)zp[k] - zm[k]);
        CHECK_CLOSE(g[k], fd, 1e-4);
    }
    float dz = 0;
    CHECK_CLOSE(cls_mse(1.5f, -0.5f, 0.25, &dz), 4.0, 1e-9);
    CHECK_CLOSE(dz, 0.25 * 2 * 2.0, 1e-6);
    float dc = 0, dr = 0;
    double l = cls_pair(1.0f, 0.25f, 0.5, 1.0, &dc, &dr);
    CHECK_CLOSE(l, log1p(exp(-(1.0 - 0.25 - 0.5))), 1e-9);
    double fd = (cls_pair(1.001f, 0.25f, 0.5, 0, NULL, NULL) - cls_pair(0.999f, 0.25f, 0.5, 0, NULL, NULL)) /
                ((double)1.001f - 0.999f);
    CHECK_CLOSE(dc, fd, 1e-4);
    CHECK_CLOSE(dr, -dc, 1e-9);
    /* far tails stay finite */
    CHECK(isfinite(cls_pair(-200.0f, 200.0f, 0, 1, &dc, &dr)) && cls_pair(200.0f, -200.0f, 0, 0, NULL, NULL) < 1e-100);
    TEST_DONE();
}
