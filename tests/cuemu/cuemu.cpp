/* cuemu: fibers, the block scheduler, device memory and streams (see cuemu.h for what is checked). */
#include "cuemu.h"

#include <execinfo.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUEMU_ASAN 1
#endif
#endif
#ifdef CUEMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

[[noreturn]] static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    void *frames[32];
    int n = backtrace(frames, 32);
    backtrace_symbols_fd(frames, n, 2);
    abort();
}

/* ---------------------------------------------------------------- fibers */

enum { F_RUN, F_BARRIER, F_WARP, F_DONE };

struct fiber {
    cuemu_ids ids;
    int state;
    int lin; /* linear thread index in the block */
    int pos; /* position in this pass's order */
    /* barrier */
    int reduce, pred, bar_result;
    /* warp op */
    int wkind, warg, wwidth;
    unsigned wmask;
    uint64_t wval, wres;
    /* context */
    char *stack;
    size_t stack_size;
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t uc;
#endif
#ifdef CUEMU_ASAN
    void *fake_stack;
#endif
};

cuemu_ids *cuemu_self;
static fiber *g_cur;         /* running fiber, NULL in the scheduler */
static fiber *g_fibers;      /* the block's threads */
static int g_nfib, g_capfib; /* threads in this block, fibers allocated */
static void (*g_body)(void *);
static void *g_body_arg;
static const char *g_kernel;
#if defined(__x86_64__)
static void *g_sched_sp;
#else
static ucontext_t g_sched_uc;
#endif
#ifdef CUEMU_ASAN
static const void *g_sched_stack_bottom;
static size_t g_sched_stack_size;
static void *g_sched_fake;
#endif

#if defined(__x86_64__)
/* cuemu_switch(save, load): save the callee-saved registers on this stack, store the stack pointer in *save,
 * continue on stack load (System V x86-64). The MXCSR and x87 control words are not switched: nothing in a
 * kernel changes them, and reloading them costs more than the rest of the switch. */
extern "C" void cuemu_switch(void **save, void *load);
asm(R"(
    .text
    .globl cuemu_switch
    .type cuemu_switch, @function
cuemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_switch, .-cuemu_switch
)");
#endif

static void fiber_main(void);

/* Leave fiber `from` (NULL: the scheduler) for fiber `to` (NULL: the scheduler). */
static void switch_to(fiber *from, fiber *to) {
    g_cur = to;
    cuemu_self = to ? &to->ids : NULL;
#ifdef CUEMU_ASAN
    /* a finished fiber never comes back: let ASan drop its fake stack */
    void **save = !from ? &g_sched_fake : from->state == F_DONE ? NULL : &from->fake_stack;
    if (to)
        __sanitizer_start_switch_fiber(save, to->stack, to->stack_size);
    else
        __sanitizer_start_switch_fiber(save, g_sched_stack_bottom, g_sched_stack_size);
#endif
#if defined(__x86_64__)
    cuemu_switch(from ? &from->sp : &g_sched_sp, to ? to->sp : g_sched_sp);
#else
    swapcontext(from ? &from->uc : &g_sched_uc, to ? &to->uc : &g_sched_uc);
#endif
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(from ? from->fake_stack : g_sched_fake, NULL, NULL);
#endif
}

/* Scheduling order. A GPU promises no order between the threads of a block between two barriers, nor
 * between blocks, so each pass over a block's threads and each grid's blocks go in a fresh pseudo-random
 * order (reproducible: CUEMU_SEED, default 1): a kernel that is right only in index order fails here. */
static std::vector<int> g_order; /* this pass: fiber indices in the order they run */
static uint64_t g_rng = 0;

static uint64_t rng_next(void) {
    if (!g_rng) {
        const char *v = getenv("CUEMU_SEED");
        g_rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(v && *v ? atoll(v) : 1) | 1;
    }
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static void shuffle(int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next() % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* The next fiber after position pos of this pass's order that can run, NULL when none. */
static fiber *next_runnable(int pos) {
    for (int k = pos + 1; k < g_nfib; k++) {
        fiber *f = &g_fibers[g_order[(size_t)k]];
        if (f->state == F_RUN) {
            f->pos = k;
            return f;
        }
    }
    return NULL;
}

/* The running fiber stops (blocked or done): run the next runnable one of this pass, or end the pass. */
static void yield_fiber(void) {
    fiber *f = g_cur;
    switch_to(f, next_runnable(f->pos));
}

static void fiber_main(void) {
#ifdef CUEMU_ASAN
    if (!g_sched_stack_size)
        __sanitizer_finish_switch_fiber(NULL, &g_sched_stack_bottom, &g_sched_stack_size);
    else
        __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    g_body(g_body_arg);
    g_cur->state = F_DONE;
    yield_fiber();
    die("a finished thread was resumed");
}

static void fiber_reset(fiber *f) {
    f->state = F_RUN;
#if defined(__x86_64__)
    /* initial frame as cuemu_switch leaves it: six registers, then the return address */
    uintptr_t top = ((uintptr_t)(f->stack + f->stack_size)) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 16); /* after "ret": rsp = top - 8, as on entry after a call */
    sp[0] = (uint64_t)(uintptr_t)fiber_main;
    sp[1] = 0;
    sp -= 6;
    memset(sp, 0, 6 * sizeof *sp);
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = NULL;
    makecontext(&f->uc, fiber_main, 0);
#endif
}

static void fibers_reserve(int n) {
    if (n <= g_capfib) return;
#ifdef CUEMU_ASAN
    size_t ss = 512 << 10;
#else
    size_t ss = 128 << 10;
#endif
    g_fibers = (fiber *)realloc(g_fibers, (size_t)n * sizeof *g_fibers);
    for (int i = g_capfib; i < n; i++) {
        fiber *f = &g_fibers[i];
        *f = fiber{};
        f->stack_size = ss;
        f->stack = (char *)mmap(NULL, ss, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (f->stack == MAP_FAILED) die("cannot map a fiber stack");
    }
    g_capfib = n;
}

/* ---------------------------------------------------------------- kernel-side sync */

static void where(char *buf, size_t n, const fiber *f) {
    snprintf(buf, n, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", g_kernel, f->ids.block.x, f->ids.block.y,
             f->ids.block.z, f->ids.thread.x, f->ids.thread.y, f->ids.thread.z);
}

static const char *warp_name(int k) {
    static const char *names[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__any_sync",  "__all_sync",      "__ballot_sync",  "a wmma op"};
    return k >= 0 && k <= CUEMU_GATHER ? names[k] : "?";
}
static const char *gather_name(int op) {
    static const char *names[] = {"wmma::load_matrix_sync", "wmma::store_matrix_sync", "wmma::mma_sync",
                                  "wmma::fill_fragment"};
    return op >= 0 && op <= CUEMU_WMMA_FILL ? names[op] : "?";
}

void cuemu_fail(const char *fmt, ...) {
    char w[160], msg[512];
    if (g_cur)
        where(w, sizeof w, g_cur);
    else
        snprintf(w, sizeof w, "host code");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die("%s: %s", w, msg);
}

static uint64_t g_gather[1024];   /* per warp of the block (at most 1024 threads): its last gather's values */
static uint64_t g_gather_seq[32]; /* per warp: the number of its last gather */
static uint64_t g_gathers;        /* gathers resolved so far */

const uint64_t *cuemu_warp_gather(int op, uint64_t value, int *warp, uint64_t *seq) {
    fiber *f = g_cur;
    if (!f) die("%s called outside a kernel", gather_name(op));
    f->state = F_WARP;
    f->wkind = CUEMU_GATHER;
    f->wmask = 0xffffffffu;
    f->wval = value;
    f->warg = op;
    f->wwidth = 32;
    yield_fiber();
    if (warp) *warp = f->lin / 32;
    if (seq) *seq = g_gather_seq[f->lin / 32];
    return (const uint64_t *)(uintptr_t)f->wres;
}

int cuemu_barrier(int reduce, int pred) {
    fiber *f = g_cur;
    if (!f) die("__syncthreads called outside a kernel");
    f->state = F_BARRIER;
    f->reduce = reduce;
    f->pred = pred;
    yield_fiber();
    return f->bar_result;
}

uint64_t cuemu_warp(int kind, unsigned mask, uint64_t value, int arg, int width) {
    fiber *f = g_cur;
    if (!f) die("warp op called outside a kernel");
    if (mask != 0xffffffffu || width <= 0 || width > 32 || (width & (width - 1))) {
        char w[160];
        where(w, sizeof w, f);
        die("%s: %s with mask %#x, width %d: only full-warp masks and power-of-2 widths up to 32 are emulated", w,
            warp_name(kind), mask, width);
    }
    f->state = F_WARP;
    f->wkind = kind;
    f->wmask = mask;
    f->wval = value;
    f->warg = arg;
    f->wwidth = width;
    yield_fiber();
    return f->wres;
}

static const char *state_name(int s) {
    return s == F_RUN       ? "is running"
           : s == F_BARRIER ? "waits at __syncthreads"
           : s == F_WARP    ? "waits at a warp op"
                            : "has exited";
}

/* All 32 lanes of warp w wait at a warp op: compute every lane's result. */
static void warp_resolve(int w) {
    fiber *L = &g_fibers[w * 32];
    int kind = L[0].wkind;
    char buf[160];
    for (int i = 1; i < 32; i++)
        if (L[i].wkind != kind || L[i].wwidth != L[0].wwidth) {
            where(buf, sizeof buf, &L[i]);
            die("%s: lane %d is at %s (width %d) while lane 0 is at %s (width %d)", buf, i, warp_name(L[i].wkind),
                L[i].wwidth, warp_name(kind), L[0].wwidth);
        }
    if (kind == CUEMU_GATHER) {
        for (int i = 1; i < 32; i++)
            if (L[i].warg != L[0].warg) {
                where(buf, sizeof buf, &L[i]);
                die("%s: lane %d is at %s while lane 0 is at %s", buf, i, gather_name(L[i].warg),
                    gather_name(L[0].warg));
            }
        uint64_t *g = &g_gather[(size_t)w * 32];
        for (int i = 0; i < 32; i++) g[i] = L[i].wval;
        g_gather_seq[w] = ++g_gathers;
        for (int i = 0; i < 32; i++) {
            L[i].wres = (uint64_t)(uintptr_t)g;
            L[i].state = F_RUN;
        }
        return;
    }
    uint64_t any = 0, all = 1, ballot = 0;
    for (int i = 0; i < 32; i++) {
        any |= L[i].wval != 0;
        all &= L[i].wval != 0;
        ballot |= (uint64_t)(L[i].wval != 0) << i;
    }
    for (int i = 0; i < 32; i++) {
        int width = L[i].wwidth, seg = i & ~(width - 1), src = i;
        switch (kind) {
        case CUEMU_SHFL_IDX: src = seg + (L[i].warg & (width - 1)); break;
        case CUEMU_SHFL_XOR:
            src = i ^ L[i].warg;
            if (src >= seg + width || src < seg) src = i;
            break;
        case CUEMU_SHFL_UP:
            src = i - L[i].warg;
            if (src < seg) src = i;
            break;
        case CUEMU_SHFL_DOWN:
            src = i + L[i].warg;
            if (src >= seg + width) src = i;
            break;
        }
        L[i].wres = kind == CUEMU_ANY ? any : kind == CUEMU_ALL ? all : kind == CUEMU_BALLOT ? ballot : L[src].wval;
    }
    for (int i = 0; i < 32; i++) L[i].state = F_RUN;
}

/* Run one block to completion. */
static void run_block(void) {
    int n = g_nfib, nwarps = (n + 31) / 32;
    char buf[160];
    g_order.resize((size_t)n);
    for (;;) {
        for (int i = 0; i < n; i++) g_order[(size_t)i] = i;
        shuffle(g_order.data(), n);
        fiber *first = next_runnable(-1);
        if (first) switch_to(NULL, first); /* each fiber hands over to the next; the last one comes back */
        int released = 0, live = 0, at_bar = 0;
        for (int w = 0; w < nwarps; w++) {
            int lo = w * 32, hi = std::min(n, lo + 32), waiting = 0;
            for (int i = lo; i < hi; i++) waiting += g_fibers[i].state == F_WARP;
            if (!waiting) continue;
            if (hi - lo < 32) {
                where(buf, sizeof buf, &g_fibers[lo]);
                die("%s: warp op in a warp of only %d threads (block of %d)", buf, hi - lo, n);
            }
            if (waiting == 32) {
                warp_resolve(w);
                released = 1;
                continue;
            }
            int kind = 0;
            for (int i = lo; i < hi; i++)
                if (g_fibers[i].state == F_WARP) kind = g_fibers[i].wkind;
            for (int i = lo; i < hi; i++)
                if (g_fibers[i].state != F_WARP) {
                    where(buf, sizeof buf, &g_fibers[i]);
                    die("%s %s while other lanes of its warp wait at %s (divergent warp op)", buf,
                        state_name(g_fibers[i].state), warp_name(kind));
                }
        }
        if (released) continue;
        for (int i = 0; i < n; i++) {
            live += g_fibers[i].state != F_DONE;
            at_bar += g_fibers[i].state == F_BARRIER;
        }
        if (!live) return;
        if (at_bar != n) {
            /* some threads have exited while others wait at __syncthreads: undefined on a GPU */
            for (int i = 0; i < n; i++)
                if (g_fibers[i].state == F_DONE) {
                    where(buf, sizeof buf, &g_fibers[i]);
                    die("%s has exited while %d of the block's %d threads wait at __syncthreads (divergent barrier)",
                        buf, at_bar, n);
                }
            die("kernel %s: deadlock", g_kernel);
        }
        int red_or = 0, red_and = 1, count = 0, reduce = g_fibers[0].reduce;
        for (int i = 0; i < n; i++) {
            if (g_fibers[i].reduce != reduce) {
                where(buf, sizeof buf, &g_fibers[i]);
                die("%s: threads meet at different __syncthreads variants", buf);
            }
            red_or |= g_fibers[i].pred;
            red_and &= g_fibers[i].pred;
            count += g_fibers[i].pred;
        }
        int result = reduce == 1 ? red_or : reduce == 2 ? red_and : reduce == 3 ? count : 0;
        for (int i = 0; i < n; i++) {
            g_fibers[i].bar_result = result;
            g_fibers[i].state = F_RUN;
        }
    }
}

/* Shared memory of every kernel lives in section cuemu_shared (see __shared__ in cuemu.h). A GPU's shared
 * memory starts as garbage; here it is all ones (NaN, or -1 as an int) at each launch, so a read before the
 * block's first write shows. (Later blocks of a launch see what earlier ones left, as a GPU may too.) */
extern "C" char __start_cuemu_shared[] __attribute__((weak)), __stop_cuemu_shared[] __attribute__((weak));
__attribute__((no_sanitize_address)) static void poison_shared(void) {
    volatile char *p = __start_cuemu_shared; /* byte loop, not memset: ASan's redzones lie between the arrays */
    if (p)
        for (; p < __stop_cuemu_shared; p++) *p = (char)0xff;
}

void cuemu_run_grid(const char *name, dim3 grid, dim3 block, void (*body)(void *), void *arg) {
    if (g_cur) die("kernel %s launched from inside a kernel", name);
    int n = (int)(block.x * block.y * block.z);
    fibers_reserve(n);
    g_nfib = n;
    g_body = body;
    g_body_arg = arg;
    g_kernel = name;
    poison_shared();
    size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    static std::vector<int> blocks;
    blocks.resize(nblocks);
    for (size_t i = 0; i < nblocks; i++) blocks[i] = (int)i;
    shuffle(blocks.data(), (int)nblocks);
    for (size_t k = 0; k < nblocks; k++) {
        unsigned b = (unsigned)blocks[k], bx = b % grid.x, by = b / grid.x % grid.y, bz = b / grid.x / grid.y;
        int lin = 0;
        for (unsigned tz = 0; tz < block.z; tz++)
            for (unsigned ty = 0; ty < block.y; ty++)
                for (unsigned tx = 0; tx < block.x; tx++, lin++) {
                    fiber *f = &g_fibers[lin];
                    f->ids.thread = uint3{tx, ty, tz};
                    f->ids.block = uint3{bx, by, bz};
                    f->ids.block_dim = block;
                    f->ids.grid_dim = grid;
                    f->lin = lin;
                    fiber_reset(f);
                }
        run_block();
    }
    cuemu_self = NULL;
}

/* ---------------------------------------------------------------- errors */

static cudaError_t g_last = cudaSuccess;
static cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) g_last = e;
    return e;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidValue: return "invalid argument";
    default: return cudaGetErrorName(e);
    }
}

/* ---------------------------------------------------------------- device */

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}
static int sm(void) { return env_int("CUEMU_SM", 90); }
int cuemu_sm(void) { return sm(); }
static size_t mem_total(void) { return (size_t)env_int("CUEMU_MEM_MIB", 4096) << 20; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr attr, int device) {
    if (device != 0) return set_error(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *v = sm() / 10; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = sm() % 10; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *v = 1; return cudaSuccess;
    }
    return set_error(cudaErrorInvalidValue);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) return set_error(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (CPU emulation of sm_%d)", sm());
    p->totalGlobalMem = mem_total();
    p->sharedMemPerBlock = 48 << 10;
    p->major = sm() / 10;
    p->minor = sm() % 10;
    p->multiProcessorCount = 1;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- memory */

struct region {
    char *base; /* first usable byte (256-aligned) */
    size_t size;
    char *map; /* mapping: guard page, data pages, guard page */
    size_t map_size;
    int pinned; /* cudaMallocHost: host-accessible */
};
static std::vector<region> g_regions; /* sorted by base */
static size_t g_device_bytes;
static int g_open; /* device memory accessible (inside queued work) */
static size_t g_page;
static struct sigaction g_old_segv;

static const region *find_region(const void *p) {
    const char *c = (const char *)p;
    auto it = std::upper_bound(g_regions.begin(), g_regions.end(), c,
                               [](const char *x, const region &r) { return x < r.base; });
    if (it == g_regions.begin()) return NULL;
    --it;
    return c < it->base + it->size ? &*it : NULL;
}
static const region *find_mapping(const void *p) {
    const char *c = (const char *)p;
    for (const region &r : g_regions)
        if (c >= r.map && c < r.map + r.map_size) return &r;
    return NULL;
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
    const region *r = find_mapping(si->si_addr);
    if (!r) { /* not ours: let the previous handler (or the default action) have the fault */
        sigaction(SIGSEGV, &g_old_segv, NULL);
        return;
    }
    const char *a = (const char *)si->si_addr;
    char msg[512];
    int n;
    if (a < r->base || a >= r->base + r->size)
        n = snprintf(
            msg, sizeof msg, "cuemu: access at %p, %td bytes %s an allocation of %zu bytes at %p (out of bounds%s)\n",
            si->si_addr, a < r->base ? r->base - a : a - (r->base + r->size),
            a < r->base ? "before" : "past the end of", r->size, (void *)r->base, g_cur ? ", in a kernel" : "");
    else
        n = snprintf(msg, sizeof msg,
                     "cuemu: host code touched device memory at %p, %td bytes into a cudaMalloc of %zu bytes; only "
                     "kernels and cudaMemcpy may\n",
                     si->si_addr, a - r->base, r->size);
    if (n > 0) (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    void *frames[32];
    int nf = backtrace(frames, 32);
    backtrace_symbols_fd(frames, nf, 2);
    (void)sig;
    (void)uc;
    signal(SIGABRT, SIG_DFL);
    abort();
}

static void protect(const region &r, int open) {
    if (r.pinned) return;
    size_t data = r.map_size - 2 * g_page;
    if (mprotect(r.map + g_page, data, open ? PROT_READ | PROT_WRITE : PROT_NONE))
        die("mprotect failed on a device allocation");
}
/* device memory is accessible only while queued work runs */
static void device_open(void) {
    if (g_open++) return;
    for (const region &r : g_regions) protect(r, 1);
}
static void device_close(void) {
    if (--g_open) return;
    for (const region &r : g_regions) protect(r, 0);
}

static void init_once(void) {
    if (g_page) return;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, &g_old_segv);
}

static cudaError_t alloc(void **p, size_t bytes, int pinned) {
    init_once();
    if (!p) return set_error(cudaErrorInvalidValue);
    *p = NULL;
    if (!bytes) bytes = 1;
    if (!pinned && g_device_bytes + bytes > mem_total()) return set_error(cudaErrorMemoryAllocation);
    size_t data = (bytes + 255 + g_page - 1) / g_page * g_page, map_size = data + 2 * g_page;
    char *m = (char *)mmap(NULL, map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return set_error(cudaErrorMemoryAllocation);
    if (mprotect(m + g_page, data, PROT_READ | PROT_WRITE)) die("mprotect failed");
    region r;
    r.map = m;
    r.map_size = map_size;
    r.size = bytes;
    /* the end of the allocation as near the guard page as 256-byte alignment allows */
    r.base = (char *)(((uintptr_t)(m + g_page + data - bytes)) & ~(uintptr_t)255);
    r.pinned = pinned;
    memset(r.base, 0xff, bytes); /* fresh memory is garbage on a GPU: here NaN for every float type */
    auto it = std::upper_bound(g_regions.begin(), g_regions.end(), r.base,
                               [](const char *x, const region &q) { return x < q.base; });
    it = g_regions.insert(it, r);
    if (!pinned) {
        g_device_bytes += bytes;
        if (!g_open) protect(*it, 0);
    }
    *p = r.base;
    return cudaSuccess;
}

static cudaError_t release(void *p, int pinned) {
    if (!p) return cudaSuccess;
    cudaDeviceSynchronize(); /* as cudaFree: pending work may still use it */
    for (size_t i = 0; i < g_regions.size(); i++)
        if (g_regions[i].base == p) {
            if (g_regions[i].pinned != pinned)
                die("%s(%p): the pointer came from %s", pinned ? "cudaFreeHost" : "cudaFree", p,
                    pinned ? "cudaMalloc" : "cudaMallocHost");
            if (!pinned) g_device_bytes -= g_regions[i].size;
            munmap(g_regions[i].map, g_regions[i].map_size);
            g_regions.erase(g_regions.begin() + (long)i);
            return cudaSuccess;
        }
    die("%s(%p): not an allocation of this emulator (double free?)", pinned ? "cudaFreeHost" : "cudaFree", p);
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return alloc(p, bytes, 0); }
cudaError_t cudaMallocHost(void **p, size_t bytes) { return alloc(p, bytes, 1); }
cudaError_t cudaFree(void *p) { return release(p, 0); }
cudaError_t cudaFreeHost(void *p) { return release(p, 1); }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (free_bytes) *free_bytes = mem_total() - g_device_bytes;
    if (total_bytes) *total_bytes = mem_total();
    return cudaSuccess;
}

int cuemu_is_kernel_pointer(const void *p) { return find_region(p) != NULL; }
void cuemu_bad_argument(const char *kernel, int index, const void *p) {
    die("kernel %s: argument %d is %p, which is not device memory (a host pointer passed to a kernel)", kernel, index,
        p);
}

/* The allocation [p, p + n) lies in, or NULL when it is not inside one. */
static const region *span(const void *p, size_t n) {
    const region *r = find_region(p);
    if (!r) return NULL;
    if ((const char *)p + n > r->base + r->size) return NULL;
    return r;
}

/* ---------------------------------------------------------------- streams */

struct cuemu_stream {
    std::deque<cuemu_work *> q;
};
static cuemu_stream g_default;
static std::vector<cuemu_stream *> g_streams;

static cuemu_stream *stream_of(cudaStream_t s) { return s ? s : &g_default; }

static void flush(cuemu_stream *s) {
    if (s->q.empty()) return;
    device_open();
    while (!s->q.empty()) {
        cuemu_work *w = s->q.front();
        s->q.pop_front();
        w->run();
        delete w;
    }
    device_close();
}

void cuemu_enqueue(cudaStream_t s, cuemu_work *w) { stream_of(s)->q.push_back(w); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = new cuemu_stream;
    g_streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    auto it = std::find(g_streams.begin(), g_streams.end(), s);
    if (it == g_streams.end()) return set_error(cudaErrorInvalidResourceHandle);
    flush(s); /* destroying a stream lets its pending work finish */
    g_streams.erase(it);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (s && std::find(g_streams.begin(), g_streams.end(), s) == g_streams.end())
        return set_error(cudaErrorInvalidResourceHandle);
    flush(stream_of(s));
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    flush(&g_default);
    for (cuemu_stream *s : g_streams) flush(s);
    return cudaSuccess;
}

int cuemu_launch_ok(const char *name, dim3 grid, dim3 block) {
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuemu: kernel %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", name, grid.x, grid.y,
                grid.z, block.x, block.y, block.z);
        set_error(cudaErrorInvalidConfiguration);
        return 0;
    }
    return 1;
}

struct copy_work : cuemu_work {
    void *dst;
    const void *src;
    size_t n;
    std::vector<char> staged; /* pageable source copied at the call, as the driver stages it */
    void run() override { memcpy(dst, staged.empty() ? src : staged.data(), n); }
};
struct set_work : cuemu_work {
    void *dst;
    int value;
    size_t n;
    void run() override { memset(dst, value, n); }
};

/* Check the pointers of a copy against its kind; returns where each side lives. */
static void check_copy(const char *fn, void *dst, const void *src, size_t n, cudaMemcpyKind kind, const region **rd,
                       const region **rs) {
    *rd = span(dst, n);
    *rs = span(src, n);
    int dst_dev = *rd && !(*rd)->pinned, src_dev = *rs && !(*rs)->pinned;
    if (find_region(dst) && !*rd) die("%s: %zu bytes to %p run past the end of its allocation", fn, n, dst);
    if (find_region(src) && !*rs) die("%s: %zu bytes from %p run past the end of its allocation", fn, n, src);
    int want_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int want_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault) return;
    if (want_dst != dst_dev || want_src != src_dev)
        die("%s(%p <- %p, %zu bytes, kind %d): the destination is %s memory and the source %s memory", fn, dst, src, n,
            (int)kind, dst_dev ? "device" : "host", src_dev ? "device" : "host");
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    if (!n) return cudaSuccess;
    const region *rd, *rs;
    check_copy("cudaMemcpyAsync", dst, src, n, kind, &rd, &rs);
    copy_work *w = new copy_work;
    w->name = "memcpy";
    w->dst = dst;
    w->src = src;
    w->n = n;
    int src_pageable = !rs, dst_pageable = !rd;
    if (src_pageable) w->staged.assign((const char *)src, (const char *)src + n); /* read now */
    cuemu_enqueue(s, w);
    if (dst_pageable) flush(stream_of(s)); /* into pageable memory: returns when done */
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    cudaDeviceSynchronize();
    cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, 0);
    cudaDeviceSynchronize();
    return e;
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s) {
    if (!n) return cudaSuccess;
    const region *r = span(dst, n);
    if (!r || r->pinned) die("cudaMemsetAsync(%p, %zu bytes): not inside one device allocation", dst, n);
    set_work *w = new set_work;
    w->name = "memset";
    w->dst = dst;
    w->value = value;
    w->n = n;
    cuemu_enqueue(s, w);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *dst, int value, size_t n) {
    cudaError_t e = cudaMemsetAsync(dst, value, n, 0);
    cudaDeviceSynchronize();
    return e;
}

/* ---------------------------------------------------------------- 16-bit floats */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.x & 0x8000) << 16, e = (h.x >> 10) & 31, m = h.x & 0x3ff;
    if (e == 31) return u2f(sign | 0x7f800000 | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24 */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

__half __float2half(float f) {
    uint32_t x = f2u(f), sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    __half h;
    if (x > 0x7f800000) { /* NaN */
        h.x = 0x7fff;
        return h;
    }
    if (x >= 0x47800000) { /* 2^16 and above (and inf): inf */
        h.x = (uint16_t)(sign | 0x7c00);
        return h;
    }
    if (x < 0x38800000) { /* below 2^-14: subnormal half, unit 2^-24 */
        if (x < 0x33000000) {
            h.x = (uint16_t)sign;
            return h;
        }
        uint32_t e = x >> 23, mant = (x & 0x7fffff) | 0x800000, shift = 126 - e;
        uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (r & 1))) r++;
        h.x = (uint16_t)(sign | r);
        return h;
    }
    uint32_t r = (x - 0x38000000) >> 13, rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* a carry into the exponent is right, up to inf */
    h.x = (uint16_t)(sign | r);
    return h;
}

float __bfloat162float(__nv_bfloat16 h) { return u2f((uint32_t)h.x << 16); }

__nv_bfloat16 __float2bfloat16(float f) {
    uint32_t x = f2u(f);
    __nv_bfloat16 h;
    if ((x & 0x7fffffff) > 0x7f800000) {
        h.x = 0x7fff;
        return h;
    }
    h.x = (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
    return h;
}

/* ---------------------------------------------------------------- cuBLAS */

struct cuemu_blas {
    cudaStream_t stream;
};
struct cuemu_blaslt {
    int unused;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new cuemu_blas{NULL};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    (void)m;
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new cuemu_blaslt{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

static float load(const void *p, cudaDataType t, size_t i) {
    switch (t) {
    case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
    case CUDA_R_16BF: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return ((const float *)p)[i];
    }
}
static void store(void *p, cudaDataType t, size_t i, float v) {
    switch (t) {
    case CUDA_R_16F: ((__half *)p)[i] = __float2half(v); break;
    case CUDA_R_16BF: ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v); break;
    default: ((float *)p)[i] = v;
    }
}
static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

/* Column-major C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, fp32 accumulation (BLAS semantics: beta 0 never
 * reads C). */
struct gemm_work : cuemu_work {
    int ta, tb, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *A, *B;
    void *C;
    cudaDataType at, bt, ct;
    void run() override {
        std::vector<float> a((size_t)m * k), b((size_t)n * k); /* a: row i of op(A); b: column j of op(B) */
        for (int i = 0; i < m; i++)
            for (int l = 0; l < k; l++)
                a[(size_t)i * k + l] = load(A, at, ta ? (size_t)l + (size_t)i * lda : (size_t)i + (size_t)l * lda);
        for (int j = 0; j < n; j++)
            for (int l = 0; l < k; l++)
                b[(size_t)j * k + l] = load(B, bt, tb ? (size_t)j + (size_t)l * ldb : (size_t)l + (size_t)j * ldb);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const float *ai = &a[(size_t)i * k], *bj = &b[(size_t)j * k];
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int l = 0;
                for (; l + 4 <= k; l += 4) {
                    s0 += ai[l] * bj[l];
                    s1 += ai[l + 1] * bj[l + 1];
                    s2 += ai[l + 2] * bj[l + 2];
                    s3 += ai[l + 3] * bj[l + 3];
                }
                for (; l < k; l++) s0 += ai[l] * bj[l];
                float s = (s0 + s1) + (s2 + s3);
                size_t ci = (size_t)i + (size_t)j * ldc;
                store(C, ct, ci, beta == 0.f ? alpha * s : alpha * s + beta * load(C, ct, ci));
            }
    }
};

/* The last element a column-major [rows, cols] operand with leading dim ld touches must lie in its allocation. */
static void check_operand(const char *fn, const char *name, const void *p, cudaDataType t, int rows, int cols, int ld) {
    if (rows == 0 || cols == 0) return;
    size_t bytes = ((size_t)(cols - 1) * ld + rows) * type_size(t);
    const region *r = find_region(p);
    if (!r || r->pinned) die("%s: %s = %p is not device memory", fn, name, p);
    if (!span(p, bytes))
        die("%s: %s (%d x %d, ld %d) needs %zu bytes from %p, but its allocation has %td left", fn, name, rows, cols,
            ld, bytes, p, r->base + r->size - (const char *)p);
}

/* Check one GEMM's arguments as cuBLAS documents them and queue it on stream s (the handle's, or cuBLASLt's). */
static cublasStatus_t gemm(const char *fn, cudaStream_t s, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                           int k, float alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                           int ldb, float beta, void *C, cudaDataType ct, int ldc) {
    if (m < 0 || n < 0 || k < 0 || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    if (lda < std::max(1, arows) || ldb < std::max(1, brows) || ldc < std::max(1, m)) {
        fprintf(stderr, "cuemu: %s: leading dims lda %d (need >= %d), ldb %d (>= %d), ldc %d (>= %d)\n", fn, lda, arows,
                ldb, brows, ldc, m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    check_operand(fn, "A", A, at, arows, acols, lda);
    check_operand(fn, "B", B, bt, brows, bcols, ldb);
    check_operand(fn, "C", C, ct, m, n, ldc);
    gemm_work *w = new gemm_work;
    w->name = fn;
    w->ta = ta == CUBLAS_OP_T;
    w->tb = tb == CUBLAS_OP_T;
    w->m = m;
    w->n = n;
    w->k = k;
    w->lda = lda;
    w->ldb = ldb;
    w->ldc = ldc;
    w->alpha = alpha;
    w->beta = beta;
    w->A = A;
    w->B = B;
    w->C = C;
    w->at = at;
    w->bt = bt;
    w->ct = ct;
    cuemu_enqueue(s, w);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return gemm("cublasSgemm", h->stream, ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, CUDA_R_32F,
                ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    /* the combinations cuBLAS documents for CUBLAS_COMPUTE_32F */
    int ok = compute == CUBLAS_COMPUTE_32F && at == bt &&
             (ct == at || (ct == CUDA_R_32F && (at == CUDA_R_16F || at == CUDA_R_16BF)));
    if (!ok) {
        fprintf(stderr, "cuemu: cublasGemmEx: types A %d, B %d, C %d, compute %d are not a supported combination\n",
                (int)at, (int)bt, (int)ct, (int)compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    /* alpha and beta are float for CUBLAS_COMPUTE_32F (host pointer mode) */
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return gemm("cublasGemmEx", h->stream, ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta,
                C, ct, ldc);
}

/* ---------------------------------------------------------------- cuBLASLt */

struct cuemu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t ta, tb;
};
struct cuemu_lt_layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
};
struct cuemu_lt_pref {
    uint64_t workspace;
    uint32_t align[4]; /* A, B, C, D */
};

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    *d = new cuemu_lt_desc{compute, scale, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    if (size != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE; /* TRANSA/TRANSB are int32_t */
    int32_t v;
    memcpy(&v, buf, 4);
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA)
        d->ta = v;
    else if (attr == CUBLASLT_MATMUL_DESC_TRANSB)
        d->tb = v;
    else
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    *l = new cuemu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new cuemu_lt_pref{0, {1, 1, 1, 1}};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) { /* uint64_t */
        if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->workspace, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        if (size != 4) return CUBLAS_STATUS_INVALID_VALUE; /* uint32_t */
        memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* The documented shape rules: op(A) is m x k, op(B) k x n, C and D m x n, ld >= rows, one type combination. */
static cublasStatus_t lt_check(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                               cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl) {
    uint64_t m = d->ta == CUBLAS_OP_N ? a->rows : a->cols, ka = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t kb = d->tb == CUBLAS_OP_N ? b->rows : b->cols, n = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    int shapes = ka == kb && c->rows == m && c->cols == n && dl->rows == m && dl->cols == n;
    int lds = a->ld >= (int64_t)std::max<uint64_t>(1, a->rows) && b->ld >= (int64_t)std::max<uint64_t>(1, b->rows) &&
              c->ld >= (int64_t)std::max<uint64_t>(1, c->rows) && dl->ld >= (int64_t)std::max<uint64_t>(1, dl->rows);
    int types = d->compute == CUBLAS_COMPUTE_32F && d->scale == CUDA_R_32F && a->type == b->type &&
                c->type == dl->type && (c->type == a->type || c->type == CUDA_R_32F);
    if (!shapes || !lds) {
        fprintf(stderr,
                "cuemu: cublasLt: op(A) %llu x %llu, op(B) %llu x %llu, C %llu x %llu (ld %lld), D %llu x %llu: "
                "shapes or leading dims do not agree\n",
                (unsigned long long)m, (unsigned long long)ka, (unsigned long long)kb, (unsigned long long)n,
                (unsigned long long)c->rows, (unsigned long long)c->cols, (long long)c->ld,
                (unsigned long long)dl->rows, (unsigned long long)dl->cols);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!types) {
        fprintf(stderr, "cuemu: cublasLt: types A %d, B %d, C %d, D %d, compute %d, scale %d are not supported\n",
                (int)a->type, (int)b->type, (int)c->type, (int)dl->type, (int)d->compute, (int)d->scale);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* What an algorithm was chosen for: the transposes and the four layouts. A real algorithm is only valid for the
 * problem it was found for, so a plan cache that hands one out for another shape is a bug the emulator catches. */
static uint64_t lt_problem(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                           cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the fields */
    auto mix = [&h](uint64_t v) {
        for (int i = 0; i < 8; i++, v >>= 8) h = (h ^ (v & 255)) * 1099511628211ull;
    };
    mix((uint64_t)d->compute), mix((uint64_t)d->scale), mix((uint64_t)d->ta), mix((uint64_t)d->tb);
    for (cublasLtMatrixLayout_t l : {a, b, c, dl}) mix((uint64_t)l->type), mix(l->rows), mix(l->cols), mix((uint64_t)l->ld);
    return h;
}

static long g_lt_heuristics, g_lt_matmuls;
extern "C" long cuemu_lt_heuristic_calls(void) { return g_lt_heuristics; }
extern "C" long cuemu_lt_matmul_calls(void) { return g_lt_matmuls; }

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned) {
    if (!h || requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    cublasStatus_t st = lt_check(d, a, b, c, dl);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    memset(&results[0], 0, sizeof results[0]);
    /* the algorithm "remembers" the alignments it was chosen for, as a real one depends on them */
    memcpy(results[0].algo.data, p->align, sizeof p->align);
    results[0].algo.data[2] = lt_problem(d, a, b, c, dl);
    g_lt_heuristics++;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static uint32_t alignment_of(const void *p) {
    uint32_t al = 256;
    while (al > 1 && ((uintptr_t)p % al)) al >>= 1;
    return al;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Al, const void *B, cublasLtMatrixLayout_t Bl, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cl, void *D, cublasLtMatrixLayout_t Dl,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t s) {
    if (!h || !algo) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t st = lt_check(d, Al, Bl, Cl, Dl);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (C != D || Cl->ld != Dl->ld) die("cublasLtMatmul: out-of-place C != D is not emulated");
    uint32_t promised[4];
    memcpy(promised, algo->data, sizeof promised);
    const void *ptrs[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if (alignment_of(ptrs[i]) < promised[i])
            die("cublasLtMatmul: operand %c at %p is %u-byte aligned, but the algorithm was chosen for %u", "ABCD"[i],
                ptrs[i], alignment_of(ptrs[i]), promised[i]);
    if (algo->data[2] != lt_problem(d, Al, Bl, Cl, Dl))
        die("cublasLtMatmul: the algorithm was chosen for another problem (transposes, types, shapes or leading "
            "dimensions differ from the heuristic query's)");
    g_lt_matmuls++;
    if (workspace_bytes && !span(workspace, workspace_bytes))
        die("cublasLtMatmul: the workspace (%zu bytes at %p) is not device memory", workspace_bytes, workspace);
    /* same arithmetic and checks as the classic API, on the same stream */
    int m = (int)Dl->rows, n = (int)Dl->cols, k = (int)(d->ta == CUBLAS_OP_N ? Al->cols : Al->rows);
    st = gemm("cublasLtMatmul", s, (cublasOperation_t)d->ta, (cublasOperation_t)d->tb, m, n, k, *(const float *)alpha,
              A, Al->type, (int)Al->ld, B, Bl->type, (int)Bl->ld, *(const float *)beta, D, Dl->type, (int)Dl->ld);
    return st;
}
