/* cuemu stand-in for <mma.h>: the nvcuda::wmma subset the backend uses (see tests/cuemu/cuemu.h).
 *
 * Shapes 16x16x16 only; matrix_a / matrix_b of __half or __nv_bfloat16 (row_major or col_major), float
 * accumulators. CUDA leaves the mapping of a fragment's elements to lanes unspecified, so this one is
 * deliberately scrambled (a fixed pseudo-random permutation per fragment use): a kernel that assumes a layout
 * gets wrong numbers here instead of passing by luck. Each fragment holds num_elements = 8 values per lane
 * (elementwise operations over x[0..num_elements) are legal and work for any mapping).
 * Every op is warp-collective as the programming guide says: all 32 lanes must call it convergently with the
 * same pointer, ldm and layout, or the launch aborts naming the thread. Checked as the guide documents:
 * pointers 256-bit (32-byte) aligned, ldm a multiple of 16 bytes, __nv_bfloat16 only on sm_80+ (CUEMU_SM).
 * mma_sync sums the 16 products (exact in fp32 for 16-bit inputs) in k order in fp32, then adds c. */
#ifndef CUEMU_MMA_H
#define CUEMU_MMA_H

#include "../cuemu.h"

#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

/* map[use][lane * 8 + e] = row * 16 + col of the element lane holds at x[e] */
struct cuemu_wmma_maps {
    uint8_t map[3][256];
    cuemu_wmma_maps() {
        uint64_t s = 0x9e3779b97f4a7c15ull;
        for (int u = 0; u < 3; u++) {
            for (int i = 0; i < 256; i++) map[u][i] = (uint8_t)i;
            for (int i = 255; i > 0; i--) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                int j = (int)((s >> 33) % (uint64_t)(i + 1));
                uint8_t t = map[u][i];
                map[u][i] = map[u][j];
                map[u][j] = t;
            }
        }
    }
};
static inline const cuemu_wmma_maps &cuemu_wmma_map(void) {
    static const cuemu_wmma_maps m;
    return m;
}

template <typename Use> struct cuemu_use;
template <> struct cuemu_use<matrix_a> {
    enum { id = 0 };
};
template <> struct cuemu_use<matrix_b> {
    enum { id = 1 };
};
template <> struct cuemu_use<accumulator> {
    enum { id = 2 };
};

template <typename Use, int m, int n, int k, typename T, typename Layout = void> struct fragment {
    static_assert(m == 16 && n == 16 && k == 16, "cuemu emulates the 16x16x16 wmma shape only");
    static_assert(std::is_same<Use, accumulator>::value ? std::is_same<T, float>::value
                                                         : std::is_same<T, __half>::value ||
                                                               std::is_same<T, __nv_bfloat16>::value,
                  "cuemu emulates __half / __nv_bfloat16 inputs with float accumulators");
    static_assert(std::is_same<Use, accumulator>::value == std::is_same<Layout, void>::value,
                  "matrix_a / matrix_b take row_major or col_major; an accumulator takes no layout");
    enum { num_elements = 8 };
    T x[8];
};

static inline float cuemu_wmma_f(float v) { return v; }
static inline float cuemu_wmma_f(__half v) { return __half2float(v); }
static inline float cuemu_wmma_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> static inline T cuemu_wmma_t(float v);
template <> inline float cuemu_wmma_t<float>(float v) { return v; }
template <> inline __half cuemu_wmma_t<__half>(float v) { return __float2half(v); }
template <> inline __nv_bfloat16 cuemu_wmma_t<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

template <typename T> static inline void cuemu_wmma_type_ok(const char *op) {
    if (std::is_same<T, __nv_bfloat16>::value && cuemu_sm() < 80)
        cuemu_fail("%s on __nv_bfloat16 needs sm_80 or later; the emulated device is sm_%d", op, cuemu_sm());
}

/* the collective entry of load/store: same arguments on all lanes (compared as one packed value, since a lane's
 * locals change once it runs on), alignment and ldm as documented */
static inline void cuemu_wmma_enter(int op, const char *name, const void *p, unsigned ldm, int layout,
                                    size_t elem) {
    if (ldm >= 1u << 15) cuemu_fail("%s: ldm %u is too large", name, ldm);
    uint64_t mine = ((uint64_t)(uintptr_t)p & 0xffffffffffffull) | (uint64_t)ldm << 48 | (uint64_t)layout << 63;
    uint64_t l0 = cuemu_warp_gather(op, mine)[0];
    if (l0 != mine)
        cuemu_fail("%s: lanes disagree (pointer %p, ldm %u, layout %d here; %#llx, %u, %d on lane 0)", name, p, ldm,
                   layout, (unsigned long long)(l0 & 0xffffffffffffull), (unsigned)(l0 >> 48) & 0x7fff,
                   (int)(l0 >> 63));
    if ((uintptr_t)p % 32) cuemu_fail("%s: pointer %p is not 256-bit aligned", name, p);
    if (ldm * elem % 16 || ldm < 16)
        cuemu_fail("%s: ldm %u elements is not a multiple of 16 bytes of at least one row/column of 16", name,
                   ldm);
}

template <typename Use, typename T, typename L, typename V>
static inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, const V &v) {
    cuemu_wmma_type_ok<T>("wmma::fill_fragment");
    cuemu_warp_gather(CUEMU_WMMA_FILL, 0);
    for (int e = 0; e < 8; e++) f.x[e] = v;
}

/* matrix_a (16 rows m x 16 cols k) / matrix_b (16 rows k x 16 cols n): element (r, c) at p[r * ldm + c] when
 * row_major, p[c * ldm + r] when col_major */
template <typename Use, typename T, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load takes a layout_t");
    cuemu_wmma_type_ok<T>("wmma::load_matrix_sync");
    int col = std::is_same<L, col_major>::value;
    cuemu_wmma_enter(CUEMU_WMMA_LOAD, "wmma::load_matrix_sync", p, ldm, col, sizeof(T));
    int lane = (int)(threadIdx.x & 31);
    const uint8_t *map = cuemu_wmma_map().map[cuemu_use<Use>::id];
    for (int e = 0; e < 8; e++) {
        int rc = map[lane * 8 + e], r = rc >> 4, c = rc & 15;
        f.x[e] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                                    layout_t layout) {
    cuemu_wmma_enter(CUEMU_WMMA_LOAD, "wmma::load_matrix_sync", p, ldm, (int)layout, sizeof(float));
    int lane = (int)(threadIdx.x & 31), col = layout == mem_col_major;
    const uint8_t *map = cuemu_wmma_map().map[2];
    for (int e = 0; e < 8; e++) {
        int rc = map[lane * 8 + e], r = rc >> 4, c = rc & 15;
        f.x[e] = col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                                     layout_t layout) {
    cuemu_wmma_enter(CUEMU_WMMA_STORE, "wmma::store_matrix_sync", p, ldm, (int)layout, sizeof(float));
    int lane = (int)(threadIdx.x & 31), col = layout == mem_col_major;
    const uint8_t *map = cuemu_wmma_map().map[2];
    for (int e = 0; e < 8; e++) {
        int rc = map[lane * 8 + e], r = rc >> 4, c = rc & 15;
        (col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) = f.x[e];
    }
}

/* d = a b + c. The first lane to run after the collective step computes the whole 16x16 product from all
 * lanes' fragments (none can have changed them yet) into its warp's slot; every lane then adds its own
 * elements of c. */
struct cuemu_mma_slot {
    uint64_t seq;
    float d[256];
};
template <typename T, typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                            const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, T, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c) {
    typedef fragment<matrix_a, 16, 16, 16, T, LA> fa;
    typedef fragment<matrix_b, 16, 16, 16, T, LB> fb;
    cuemu_wmma_type_ok<T>("wmma::mma_sync");
    static cuemu_mma_slot slots[32];
    const void *mine[2] = {&a, &b};
    int warp = 0;
    uint64_t seq = 0;
    const uint64_t *all = cuemu_warp_gather(CUEMU_WMMA_MMA, (uint64_t)(uintptr_t)mine, &warp, &seq);
    const cuemu_wmma_maps &M = cuemu_wmma_map();
    cuemu_mma_slot &S = slots[warp];
    if (S.seq != seq) {
        float A[256], B[256];
        for (int l = 0; l < 32; l++) {
            const void *const *p = (const void *const *)(uintptr_t)all[l];
            for (int e = 0; e < 8; e++) {
                A[M.map[0][l * 8 + e]] = cuemu_wmma_f(((const fa *)p[0])->x[e]);
                B[M.map[1][l * 8 + e]] = cuemu_wmma_f(((const fb *)p[1])->x[e]);
            }
        }
        for (int r = 0; r < 16; r++)
            for (int col = 0; col < 16; col++) {
                float s = 0.f;
                for (int k = 0; k < 16; k++) s += A[r * 16 + k] * B[k * 16 + col];
                S.d[r * 16 + col] = s;
            }
        S.seq = seq;
    }
    int lane = (int)(threadIdx.x & 31);
    for (int e = 0; e < 8; e++) d.x[e] = S.d[M.map[2][lane * 8 + e]] + c.x[e];
}

} // namespace wmma
} // namespace nvcuda

#endif
