/* Loss scaler against PyTorch: replays tests/fixtures/precision/lossscale.txt (made by
 * tests/reference/make_lossscale_fixture.py from torch._amp_update_scale_, GradScaler's update) and checks
 * the scale and clean-step counter after every step; plus defaults and the disabled scaler. */
#include "finetune/train/lossscale.h"
#include "test.h"

int main(void) {
    ft_lossscale s;
    lossscale_init(&s, 1, 0, 0);
    CHECK(s.scale == 65536.0f && s.growth_interval == 2000 && s.growth == 2.0f && s.backoff == 0.5f);
    /* 1999 clean steps keep the scale, the 2000th doubles it */
    for (int i = 0; i < 1999; i++) CHECK(lossscale_update(&s, 0) == 0);
    CHECK(s.scale == 65536.0f);
    lossscale_update(&s, 0);
    CHECK(s.scale == 131072.0f && s.good_steps == 0);
    CHECK(lossscale_update(&s, 1) == 1);
    CHECK(s.scale == 65536.0f);

    ft_lossscale off;
    lossscale_init(&off, 0, 1024, 3);
    CHECK(off.scale == 1.0f);
    CHECK(lossscale_update(&off, 1) == 0 && off.scale == 1.0f);

    char path[1024];
    FILE *f = fopen(t_src("tests/fixtures/precision/lossscale.txt", path, sizeof path), "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    double init;
    int interval, steps = 0, grew = 0, fell = 0;
    CHECK(fscanf(f, "%lf %d", &init, &interval) == 2);
    lossscale_init(&s, 1, (float)init, interval);
    int inf, good;
    double want;
    while (fscanf(f, "%d %lf %d", &inf, &want, &good) == 3) {
        float before = s.scale;
        int skip = lossscale_update(&s, inf);
        CHECK_MSG(skip == inf, "step %d: skip %d, found_inf %d", steps, skip, inf);
        CHECK_MSG(s.scale == (float)want && s.good_steps == good, "step %d: scale %g good %d, torch %g %d", steps,
                  s.scale, s.good_steps, want, good);
        grew += s.scale > before;
        fell += s.scale < before;
        steps++;
    }
    fclose(f);
    CHECK(steps == 120);
    CHECK(grew > 0 && fell > 0); /* the fixture exercises both directions */
    TEST_DONE();
}
