/* The backend's cast op on the CPU: F32 -> BF16/F16 must equal util.h's round-to-nearest-even converters
 * bit for bit (which tests/unit/test_safetensors checks against numpy/torch), including ties, subnormals,
 * overflow to inf and infinities; 16 -> F32 is exact; 16 -> 16 rounds once. Hand-computed tie cases pin
 * the rounding mode itself. */
#include <stdint.h>
#include <string.h>

#include "finetune/backend/backend.h"
#include "test.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(void) {
    ft_backend *b = ft_backend_cpu_create();
    enum { N = 4096 };
    static float x[N], back[N];
    static uint16_t h16[N], h16b[N];
    ft_rng rng;
    ft_rng_seed(&rng, 3);
    int n = 0;
    /* specials and ties: 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7 -> even (1);
     * 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 -> even (1 + 2^-6) */
    float special[] = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 65504.0f, 65520.0f, 1e6f, -1e6f,
                       6e-8f, 3e-8f, 1e-5f, from_bits(0x7f800000), from_bits(0xff800000), 3.0e38f,
                       from_bits(0x00000001), 1.0009765625f /* 1 + 2^-10: f16 exact */, 1.00048828125f /* f16 tie */};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[n++] = special[i];
    while (n < N) {
        float m = ft_rng_normal(&rng);
        int ex = (int)(ft_rng_uniform(&rng) * 40) - 25; /* 2^-25 .. 2^15: f16 subnormals and overflow too */
        x[n++] = ldexpf(m, ex);
    }
    ft_tensor tx = ft_t1(x, FT_F32, FT_DEV_CPU, N), tb = ft_t2(back, FT_F32, FT_DEV_CPU, 64, 64);
    for (int k = 0; k < 2; k++) {
        ft_dtype dt = k ? FT_F16 : FT_BF16;
        ft_tensor th = ft_t1(h16, dt, FT_DEV_CPU, N);
        memset(h16, 0xAB, sizeof h16); /* poison */
        b->cast(b, &tx, &th);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            uint16_t want = dt == FT_BF16 ? ft_f32_to_bf16(x[i]) : ft_f32_to_f16(x[i]);
            if (h16[i] != want && bad++ < 5)
                fprintf(stderr, "%s: x=%.9g got %04x want %04x\n", ft_dtype_name(dt), x[i], h16[i], want);
        }
        CHECK_MSG(bad == 0, "%d of %d %s casts differ", bad, N, ft_dtype_name(dt));
        memset(back, 0xAB, sizeof back);
        b->cast(b, &th, &tb); /* shapes may differ, counts must not */
        bad = 0;
        for (int i = 0; i < N; i++) {
            float want = dt == FT_BF16 ? ft_bf16_to_f32(h16[i]) : ft_f16_to_f32(h16[i]);
            bad += memcmp(&want, &back[i], 4) != 0;
        }
        CHECK(bad == 0);
    }
    /* the rounding mode itself, by hand */
    ft_tensor tbf = ft_t1(h16, FT_BF16, FT_DEV_CPU, N);
    b->cast(b, &tx, &tbf);
    CHECK(h16[2] == 0x3f80);                      /* 1 */
    CHECK(h16[3] == 0x3f80);                      /* 1 + 2^-8 ties to even: 1 */
    CHECK(h16[4] == 0x3f82);                      /* 1 + 3*2^-8 ties to even: 1 + 2^-6 */
    CHECK(h16[12] == 0x7f80 && h16[13] == 0xff80); /* +-inf */
    ft_tensor thf = ft_t1(h16, FT_F16, FT_DEV_CPU, N);
    b->cast(b, &tx, &thf);
    CHECK(h16[5] == 0x7bff);                      /* 65504 = f16 max */
    CHECK(h16[6] == 0x7c00);                      /* 65520 rounds up to inf */
    CHECK(h16[7] == 0x7c00 && h16[8] == 0xfc00);  /* overflow */
    CHECK(h16[9] == 0x0001);                      /* 6e-8 -> smallest subnormal 2^-24 */
    CHECK(h16[16] == 0x3c01);                     /* 1 + 2^-10 */
    CHECK(h16[17] == 0x3c00);                     /* 1 + 2^-11 ties to even: 1 */
    /* F16 -> BF16 goes through fp32 and rounds once */
    ft_tensor th2 = ft_t1(h16b, FT_BF16, FT_DEV_CPU, N);
    b->cast(b, &thf, &th2);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += h16b[i] != ft_f32_to_bf16(ft_f16_to_f32(h16[i]));
    CHECK(bad == 0);
    /* same dtype: a copy */
    memset(back, 0, sizeof back);
    b->cast(b, &tx, &tb);
    CHECK(memcmp(back, x, sizeof x) == 0);
    /* host staging ops on the CPU are plain memory */
    void *hp = b->alloc_host(b, 64);
    CHECK(hp != NULL);
    b->to_host_async(b, hp, x, 64);
    b->from_host_async(b, back, hp, 64);
    b->sync(b);
    CHECK(memcmp(back, x, 64) == 0);
    b->free_host(b, hp);
    b->destroy(b);
    TEST_DONE();
}
