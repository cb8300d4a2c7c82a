#include "finetune/train/cls_loss.h"

#include <math.h>

void cls_softmax(const float *z, int K, double *prob) {
    double mx = z[0], sum = 0;
    for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    for (int k = 0; k < K; k++) sum += prob[k] = exp((double)z[k] - mx);
    for (int k = 0; k < K; k++) prob[k] /= sum;
}

double cls_ce(const float *z, const float *p, int K, double eps, double w, float *dz, double *logloss, int *pred) {
    double mx = z[0], sum = 0;
    int arg = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > mx) mx = z[k], arg = k;
    for (int k = 0; k < K; k++) sum += exp((double)z[k] - mx);
    double lse = mx + log(sum), loss = 0, ll = 0;
    for (int k = 0; k < K; k++) {
        double logs = (double)z[k] - lse, q = (1.0 - eps) * p[k] + eps / K;
        loss -= q * logs;
        ll -= p[k] ? p[k] * logs : 0.0;
        if (dz) dz[k] += (float)(w * (exp(logs) - q));
    }
    if (logloss) *logloss = ll;
    if (pred) *pred = arg;
    return loss;
}

double cls_mse(float z, float t, double w, float *dz) {
    double d = (double)z - t;
    if (dz) *dz += (float)(w * 2.0 * d);
    return d * d;
}

/* -log sigmoid(x) = softplus(-x), computed without overflow */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

double cls_pair(float r_chosen, float r_rejected, double margin, double w, float *dc, float *dr) {
    double x = (double)r_chosen - r_rejected - margin;
    double g = -1.0 / (1.0 + exp(x)); /* d/dx of -log sigmoid(x) = -sigmoid(-x) */
    if (dc) *dc += (float)(w * g);
    if (dr) *dr -= (float)(w * g);
    return softplus(-x);
}
