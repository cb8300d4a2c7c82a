/* cuemu: a functional CPU emulator of the CUDA subset the backend uses, for CI machines without a GPU.
 *
 * The backend's .cu files compile unchanged as C++ against the headers in tests/cuemu/include, which all
 * include this file. A kernel launch runs every thread of every block as a fiber on the calling thread;
 * fibers switch only at __syncthreads and at warp-wide ops (shuffles, votes), so a kernel sees the
 * synchronisation semantics the programming guide promises and nothing more: blocks run one after the
 * other and threads between two sync points one after the other, both in a seeded pseudo-random order
 * (CUEMU_SEED), and shared memory is garbage (all ones) at each launch. What it checks that a GPU would
 * not tell us clearly:
 *   - a __syncthreads that not every live thread of the block reaches, a warp op (WMMA ops included,
 *     include/mma.h) without all 32 lanes, a deadlock: the launch aborts with the kernel's name and the
 *     threads involved;
 *   - a launch with more than 1024 threads per block or a grid beyond the hardware limits;
 *   - a kernel argument that is a host pointer, a cudaMemcpy whose pointers contradict its kind, a cuBLAS
 *     or cuBLASLt call that breaks the documented shape, leading-dimension, type or alignment rules;
 *   - device memory read or written outside the kernels and copies (host code touching a device
 *     pointer): device allocations are PROT_NONE while host code runs, so such a touch faults and the
 *     fault handler names the allocation; reads past either end of an allocation hit guard pages;
 *   - work on a stream runs only when the host waits for it (stream sync, a synchronous copy, cudaFree),
 *     as on a GPU, so a result read before its stream is synchronised is stale, not silently right.
 * It does not model timing, caches, bank conflicts or inter-block races. Arithmetic is fp32 on the host
 * (-ffp-contract=off); __half and __nv_bfloat16 round to nearest even as the CUDA intrinsics do.
 * Knobs: CUEMU_SM (compute capability reported, default 90), CUEMU_MEM_MIB (device memory, default 4096). */
#ifndef CUEMU_H
#define CUEMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#define FT_CUEMU 1

/* ---------------------------------------------------------------- qualifiers */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
/* Shared memory: one copy per kernel, reused by each block in turn (blocks never overlap), in a section of
 * its own so that each launch can fill it with garbage first. */
#define __shared__ static __attribute__((section("cuemu_shared")))

/* ---------------------------------------------------------------- thread indices */
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct cuemu_ids {
    uint3 thread, block;
    dim3 block_dim, grid_dim;
};
extern cuemu_ids *cuemu_self; /* the running fiber's indices */
#define threadIdx (cuemu_self->thread)
#define blockIdx (cuemu_self->block)
#define blockDim (cuemu_self->block_dim)
#define gridDim (cuemu_self->grid_dim)

/* ---------------------------------------------------------------- synchronisation */
enum cuemu_warp_kind {
    CUEMU_SHFL_IDX,
    CUEMU_SHFL_XOR,
    CUEMU_SHFL_UP,
    CUEMU_SHFL_DOWN,
    CUEMU_ANY,
    CUEMU_ALL,
    CUEMU_BALLOT,
    CUEMU_GATHER
};
/* block barrier: reduce 0 = plain, 1 = or, 2 = and, 3 = count; returns the reduction over the block */
int cuemu_barrier(int reduce, int pred);
/* warp-wide op: every lane of the warp must call it with the same kind and a full mask */
uint64_t cuemu_warp(int kind, unsigned mask, uint64_t value, int arg, int width);

/* Warp-collective gather (the emulated WMMA ops, include/mma.h): every lane of the warp calls it with the same
 * op and its own value; each gets the 32 lanes' values, valid until its next warp op, and (when asked) its
 * warp's index in the block and a number unique to this gather, the same on all its lanes. A lane at another
 * op or a lane missing aborts like any divergent warp op. */
enum { CUEMU_WMMA_LOAD, CUEMU_WMMA_STORE, CUEMU_WMMA_MMA, CUEMU_WMMA_FILL };
const uint64_t *cuemu_warp_gather(int op, uint64_t value, int *warp = nullptr, uint64_t *seq = nullptr);
/* Abort naming the running thread (kernel, block, thread) and what was wrong. */
[[noreturn]] void cuemu_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The compute capability the emulator reports (CUEMU_SM, default 90) as major * 10 + minor. */
int cuemu_sm(void);

static inline void __syncthreads(void) { cuemu_barrier(0, 0); }
static inline int __syncthreads_or(int p) { return cuemu_barrier(1, p != 0); }
static inline int __syncthreads_and(int p) { return cuemu_barrier(2, p != 0); }
static inline int __syncthreads_count(int p) { return cuemu_barrier(3, p != 0); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { cuemu_warp(CUEMU_ANY, mask, 0, 0, 32); }
static inline int __any_sync(unsigned mask, int p) { return (int)cuemu_warp(CUEMU_ANY, mask, p != 0, 0, 32); }
static inline int __all_sync(unsigned mask, int p) { return (int)cuemu_warp(CUEMU_ALL, mask, p != 0, 0, 32); }
static inline unsigned __ballot_sync(unsigned mask, int p) {
    return (unsigned)cuemu_warp(CUEMU_BALLOT, mask, p != 0, 0, 32);
}

template <typename T> static inline T cuemu_shfl(int kind, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = cuemu_warp(kind, mask, bits, arg, width);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    return cuemu_shfl(CUEMU_SHFL_IDX, m, v, src, w);
}
template <typename T> static inline T __shfl_xor_sync(unsigned m, T v, int lm, int w = 32) {
    return cuemu_shfl(CUEMU_SHFL_XOR, m, v, lm, w);
}
template <typename T> static inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) {
    return cuemu_shfl(CUEMU_SHFL_UP, m, v, (int)d, w);
}
template <typename T> static inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) {
    return cuemu_shfl(CUEMU_SHFL_DOWN, m, v, (int)d, w);
}

/* Atomics: the threads of a launch never run at the same time, so a plain read-modify-write is atomic. */
template <typename T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> static inline T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}

/* ---------------------------------------------------------------- device math */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __int_as_float(int x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int x;
    memcpy(&x, &f, 4);
    return x;
}

/* ---------------------------------------------------------------- 16-bit floats */
struct __half {
    uint16_t x;
};
struct __nv_bfloat16 {
    uint16_t x;
};
typedef __half half;
float __half2float(__half h);
__half __float2half(float f); /* round to nearest even, overflow to inf */
float __bfloat162float(__nv_bfloat16 h);
__nv_bfloat16 __float2bfloat16(float f); /* round to nearest even, NaN stays NaN */

/* ---------------------------------------------------------------- runtime API */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
} cudaError_t;
typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;
typedef enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
} cudaDeviceAttr;
typedef struct cuemu_stream *cudaStream_t;
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
typedef struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    int major, minor;
    int multiProcessorCount;
    int maxThreadsPerBlock;
    int warpSize;
} cudaDeviceProp;

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
template <typename T> static inline cudaError_t cudaMallocHost(T **p, size_t bytes) {
    return cudaMallocHost((void **)p, bytes);
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void *dst, int value, size_t n);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s = 0);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);

/* ---------------------------------------------------------------- launches */
/* A queued piece of stream work (a kernel with its arguments, a copy, a GEMM). */
struct cuemu_work {
    virtual ~cuemu_work() {}
    virtual void run() = 0;
    const char *name = "";
};
/* Queue work on stream s (0: the legacy default stream); the emulator owns and deletes it. */
void cuemu_enqueue(cudaStream_t s, cuemu_work *w);
/* Run one kernel's grid: body(arg) is one thread. Called when the stream reaches the launch. */
void cuemu_run_grid(const char *name, dim3 grid, dim3 block, void (*body)(void *), void *arg);
/* Validate a launch before it is queued; a bad configuration sets the last error and returns 0. */
int cuemu_launch_ok(const char *name, dim3 grid, dim3 block);
/* Is p inside memory a kernel may touch (device or pinned host allocation)? */
int cuemu_is_kernel_pointer(const void *p);
void cuemu_bad_argument(const char *kernel, int index, const void *p);

template <typename A> static inline void cuemu_check_arg(const char *kernel, int index, const A &a) {
    if constexpr (std::is_pointer<A>::value) {
        if (a && !cuemu_is_kernel_pointer((const void *)a)) cuemu_bad_argument(kernel, index, (const void *)a);
    }
}

template <typename... P> struct cuemu_kernel_work : cuemu_work {
    void (*kernel)(P...);
    std::tuple<typename std::decay<P>::type...> args;
    dim3 grid, block;
    static void body(void *self) {
        cuemu_kernel_work *w = (cuemu_kernel_work *)self;
        std::apply(w->kernel, w->args);
    }
    void run() override { cuemu_run_grid(name, grid, block, body, this); }
};

/* kernel<<<grid, block, 0, stream>>>(args...) */
template <typename... P, typename... A>
static inline void cuemu_launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t s,
                                A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    if (!cuemu_launch_ok(name, grid, block)) return;
    auto *w = new cuemu_kernel_work<P...>;
    w->name = name;
    w->kernel = kernel;
    w->args = std::tuple<typename std::decay<P>::type...>(args...);
    w->grid = grid;
    w->block = block;
    int i = 0;
    std::apply([&](const auto &...a) { (cuemu_check_arg(name, i++, a), ...); }, w->args);
    cuemu_enqueue(s, w);
}

/* The spelling cuda_internal.cuh's CU_LAUNCH(grid, block, stream, kernel)(args...) expands to here:
 * (cuemu_launcher{...} % kernel)(args...). */
struct cuemu_launcher {
    const char *name;
    dim3 grid, block;
    cudaStream_t stream;
};
template <typename... P> struct cuemu_bound {
    cuemu_launcher l;
    void (*kernel)(P...);
    template <typename... A> void operator()(A... args) const {
        cuemu_launch(l.name, kernel, l.grid, l.block, l.stream, args...);
    }
};
template <typename... P> static inline cuemu_bound<P...> operator%(cuemu_launcher l, void (*kernel)(P...)) {
    return cuemu_bound<P...>{l, kernel};
}

/* ---------------------------------------------------------------- cuBLAS */
typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef cudaDataType_t cudaDataType;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef struct cuemu_blas *cublasHandle_t;
typedef struct cuemu_blaslt *cublasLtHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);

/* cuBLASLt matmul (column-major D = alpha op(A) op(B) + beta C, D == C here): descriptors hold what was set */
typedef struct cuemu_lt_desc *cublasLtMatmulDesc_t;
typedef struct cuemu_lt_layout *cublasLtMatrixLayout_t;
typedef struct cuemu_lt_pref *cublasLtMatmulPreference_t;
typedef enum { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4 } cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Al, const void *B, cublasLtMatrixLayout_t Bl, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cl, void *D, cublasLtMatrixLayout_t Dl,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t s);
/* How many heuristic queries and matmuls cuBLASLt has seen (for tests of a plan cache: C linkage, so a C test
 * can find them as weak symbols). */
extern "C" long cuemu_lt_heuristic_calls(void);
extern "C" long cuemu_lt_matmul_calls(void);

#endif
