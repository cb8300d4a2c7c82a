/* cls_loss: the losses of sequence classification and reward modelling on the score head's logits, one sample
 * (or pair) at a time, in double on the host, with their gradients; the same formulas serve the trainer and the
 * evaluation metrics, on both backends.
 *
 * - cross-entropy (torch's F.cross_entropy, label_smoothing eps): target q = (1 - eps) p + eps / K over the K
 *   labels, p one-hot or soft (a distribution: distillation from a teacher); loss = -sum_k q_k log softmax(z)_k,
 *   dloss/dz = softmax(z) - q. The unsmoothed -sum_k p_k log softmax(z)_k is the log loss reported.
 * - mean squared error (num_labels 1, transformers' problem_type regression): (z - t)^2, gradient 2 (z - t).
 * - reward modelling (TRL's RewardTrainer): -log sigmoid(r_chosen - r_rejected - margin) on one pair's scalar
 *   rewards; gradient -sigmoid(-(r_c - r_r - margin)) for r_c and its negative for r_r.
 * Each function returns the sample's loss and ADDS w times its gradient into the gradient arguments. */
#ifndef FT_CLS_LOSS_H
#define FT_CLS_LOSS_H

typedef enum { CLS_LOSS_CE = 0, CLS_LOSS_MSE = 1, CLS_LOSS_PAIR = 2 } cls_loss_kind;

/* *logloss (may be NULL) the unsmoothed log loss, *pred (may be NULL) the argmax label. */
double cls_ce(const float *z, const float *p, int K, double eps, double w, float *dz, double *logloss, int *pred);
double cls_mse(float z, float t, double w, float *dz);
double cls_pair(float r_chosen, float r_rejected, double margin, double w, float *dc, float *dr);
/* softmax of z [K] into prob (double accumulation, max-shifted) */
void cls_softmax(const float *z, int K, double *prob);

#endif
