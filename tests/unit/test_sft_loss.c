/* sft_loss: the SFT cross-entropy and its gradient, for both normalisations, over packed rows, padding and
 * untrained prompt tokens; the micro-batch shares sum to the whole step's loss; dlogp by finite differences. */
#include "finetune/train/sft_loss.h"
#include "test.h"

/* Two rows of 8: row 0 packs sample 0 (5 tokens) and sample 1 (3); row 1 holds sample 2 (4) and padding. */
enum { T = 16 };
static int32_t sample_ids[T] = {0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1, -1, -1, -1};
/* targets: the prompt of sample 0 untrained, each sample's last token without a target, sample 1 nothing
 * trained at all (it counts for no sample), padding -1 */
static int32_t targets[T] = {-1, -1, 7, 8, -1, -1, -1, -1, 3, 4, 5, -1, -1, -1, -1, -1};

static ds_batch make_batch(int32_t *tg, int32_t *smp, int n) {
    ds_batch b = {0};
    b.n_tokens = n;
    b.rows = 1;
    b.row_len = n;
    b.targets = tg;
    b.sample = smp;
    return b;
}

static double loss_of(sft_norm norm, const ds_batch *b, const float *logp, const ft_step_norm *st) {
    float d[T];
    double l = 0;
    sft_loss_batch(norm, b, logp, st, d, &l);
    return l;
}

int main(void) {
    float logp[T];
    for (int t = 0; t < T; t++) logp[t] = targets[t] >= 0 ? -0.25f * (float)(t + 1) : 0.0f;
    ds_batch b = make_batch(targets, sample_ids, T);
    /* trained tokens: t = 2, 3 (sample 0) and 8, 9, 10 (sample 2); samples with a trained token: 2 */
    ft_step_norm st = {5, 2};

    /* tokens: -(sum of trained logp) / 5 */
    float d[T];
    double loss = 0;
    sft_loss_batch(SFT_NORM_TOKENS, &b, logp, &st, d, &loss);
    double want = -(logp[2] + logp[3] + logp[8] + logp[9] + logp[10]) / 5.0;
    CHECK_CLOSE(loss, want, 1e-12);
    for (int t = 0; t < T; t++) CHECK_CLOSE(d[t], targets[t] >= 0 ? -1.0 / 5 : 0.0, 1e-7);

    /* samples: sample 0's mean over its 2 tokens and sample 2's over its 3, averaged over the 2 samples */
    loss = 0;
    sft_loss_batch(SFT_NORM_SAMPLES, &b, logp, &st, d, &loss);
    want = -((logp[2] + logp[3]) / 2.0 + (logp[8] + logp[9] + logp[10]) / 3.0) / 2.0;
    CHECK_CLOSE(loss, want, 1e-12);
    CHECK_CLOSE(d[2], -1.0 / 4, 1e-7);
    CHECK_CLOSE(d[9], -1.0 / 6, 1e-7);
    CHECK(d[0] == 0 && d[5] == 0 && d[11] == 0 && d[12] == 0);

    /* the two normalisations differ whenever samples train different numbers of tokens */
    CHECK(fabs(loss_of(SFT_NORM_TOKENS, &b, logp, &st) - loss_of(SFT_NORM_SAMPLES, &b, logp, &st)) > 1e-3);

    /* gradient accumulation: the rows as two micro-batches of the same step add up to the whole */
    for (int norm = SFT_NORM_TOKENS; norm <= SFT_NORM_SAMPLES; norm++) {
        ds_batch r0 = make_batch(targets, sample_ids, 8), r1 = make_batch(targets + 8, sample_ids + 8, 8);
        double parts = loss_of((sft_norm)norm, &r0, logp, &st) + loss_of((sft_norm)norm, &r1, logp + 8, &st);
        CHECK_CLOSE(parts, loss_of((sft_norm)norm, &b, logp, &st), 1e-12);
    }

    /* dlogp against central finite differences of the loss */
    for (int norm = SFT_NORM_TOKENS; norm <= SFT_NORM_SAMPLES; norm++) {
        double l0 = 0;
        sft_loss_batch((sft_norm)norm, &b, logp, &st, d, &l0);
        for (int t = 0; t < T; t++) {
            float p[T];
            memcpy(p, logp, sizeof p);
            const float h = 1e-2f;
            p[t] = logp[t] + h;
            double up = loss_of((sft_norm)norm, &b, p, &st);
            p[t] = logp[t] - h;
            double down = loss_of((sft_norm)norm, &b, p, &st);
            CHECK_CLOSE(d[t], (up - down) / (2.0 * h), 1e-5);
        }
    }

    /* the trainer's callback is the same function; ctx carries the normalisation */
    sft_norm n = SFT_NORM_SAMPLES;
    double cb = 0, extra[1] = {0};
    ft_error e = {0};
    CHECK(sft_loss_fn(&n, &b, logp, &st, d, &cb, extra, &e) == FT_OK);
    CHECK_CLOSE(cb, loss_of(SFT_NORM_SAMPLES, &b, logp, &st), 1e-15);

    /* the recipe key */
    sft_norm parsed = SFT_NORM_TOKENS;
    CHECK(sft_norm_parse("samples", &parsed, &e) == FT_OK && parsed == SFT_NORM_SAMPLES);
    CHECK(sft_norm_parse("tokens", &parsed, &e) == FT_OK && parsed == SFT_NORM_TOKENS);
    CHECK(sft_norm_parse("sequence", &parsed, &e) == FT_EINPUT);
    CHECK(strstr(e.msg, "loss_normalization 'sequence'") != NULL);
    TEST_DONE();
}
