#define _DEFAULT_SOURCE /* on_exit */
#include "finetune/train/dist.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "finetune/train/dist_nccl.h"

#ifdef FT_HAVE_MPI
#include <mpi.h>
#endif

struct dist_comm {
    int rank, world, local_rank;
    int active;          /* a launcher started this process: collectives run even with one rank */
    const char *launcher;
    double timeout_s;
    int mpi;             /* MPI_Init was called (bootstrap, and the CPU backend's collectives) */
    int on_mpi;          /* collectives over MPI (bound to the CPU backend) */
    dist_nccl *nccl;     /* collectives over NCCL (bound to the CUDA backend) */
    ft_backend *b;
    char master_addr[256];
    int master_port;
    char desc[200];
};

int dist_have_mpi(void) {
#ifdef FT_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int dist_have_nccl(void) { return dist_nccl_available(); }

static int env_int(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 20) return -1;
    *out = (int)v;
    return 1;
}

const char *dist_launcher(void) {
    /* torchrun's variables before Slurm's: a launcher started under srun (torchrun, --nproc) sets them per worker */
    if (getenv("OMPI_COMM_WORLD_SIZE")) return "mpirun";
    if (getenv("WORLD_SIZE") && getenv("RANK")) return "torchrun-env";
    if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS") && getenv("SLURM_STEP_ID")) return "srun";
    return NULL;
}

int dist_rank(const dist_comm *c) { return c ? c->rank : 0; }
int dist_world(const dist_comm *c) { return c ? c->world : 1; }
int dist_local_rank(const dist_comm *c) { return c ? c->local_rank : 0; }
int dist_active(const dist_comm *c) { return c && c->active; }
const char *dist_desc(const dist_comm *c) { return c ? c->desc : "single process"; }
double dist_timeout(const dist_comm *c) { return c ? c->timeout_s : 0; }

/* ---------- MPI ---------- */

#ifdef FT_HAVE_MPI
static int g_rank = 0, g_world = 1;
static double g_timeout = 0;

/* Past a deadline nothing can unwind a collective in flight: say which and end the job. */
static void die_timeout(dist_comm *c, const char *what) {
    fprintf(stderr,
            "finetune: rank %d of %d: %s did not complete within %.0f s: another rank died or hangs "
            "(the limit is --dist-timeout / FT_DIST_TIMEOUT); stopping\n",
            c->rank, c->world, what, c->timeout_s);
    fflush(stderr);
    if (c->mpi) MPI_Abort(MPI_COMM_WORLD, 3);
    _exit(3);
}

static void on_bootstrap_alarm(int sig) {
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "finetune: rank %d of %d: joining the other ranks did not complete within %.0f s (bootstrap); "
                     "stopping\n",
                     g_rank, g_world, g_timeout);
    if (write(2, msg, (size_t)n) < 0) _exit(3);
    _exit(3);
}

static void arm_bootstrap_alarm(double timeout_s) {
    signal(SIGALRM, on_bootstrap_alarm);
    alarm((unsigned)ceil(timeout_s));
}

static void disarm_bootstrap_alarm(void) {
    alarm(0);
    signal(SIGALRM, SIG_DFL);
}

static int mpi_fail(int code, const char *what, ft_error *e) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, s, &len);
    return ft_fail(e, FT_EIO, "%s: MPI error: %s", what, s);
}

/* Wait for a non-blocking collective, driving MPI's progress, until the deadline. */
static int mpi_wait(dist_comm *c, MPI_Request *req, const char *what, ft_error *e) {
    double deadline = ft_now() + c->timeout_s;
    for (long spins = 0;; spins++) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, e);
        if (done) return FT_OK;
        if (spins > 1000) {
            if (ft_now() > deadline) die_timeout(c, what);
            struct timespec ts = {0, spins > 100000 ? 1000000 : 20000};
            nanosleep(&ts, NULL);
        }
    }
}

static int mpi_allreduce(dist_comm *c, void *buf, size_t n, MPI_Datatype t, const char *what, ft_error *e) {
    /* counts are int: large buffers go in pieces */
    size_t esz = t == MPI_DOUBLE ? 8 : 4;
    for (size_t off = 0; off < n;) {
        size_t k = n - off > (size_t)1 << 30 ? (size_t)1 << 30 : n - off;
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * esz, (int)k, t, MPI_SUM, MPI_COMM_WORLD, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, e);
        if ((rc = mpi_wait(c, &req, what, e))) return rc;
        off += k;
    }
    return FT_OK;
}

static int mpi_bcast(dist_comm *c, void *buf, size_t bytes, int root, const char *what, ft_error *e) {
    for (size_t off = 0; off < bytes;) {
        size_t k = bytes - off > (size_t)1 << 30 ? (size_t)1 << 30 : bytes - off;
        MPI_Request req;
        int rc = MPI_Ibcast((char *)buf + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, e);
        if ((rc = mpi_wait(c, &req, what, e))) return rc;
        off += k;
    }
    return FT_OK;
}

/* MPI_Finalize only on a clean exit: a failing rank leaves without it, so that mpirun ends the other ranks at
 * once instead of the failing one waiting for them in MPI_Finalize. */
static void finalize_at_exit(int status, void *arg) {
    (void)arg;
    int fin = 0;
    MPI_Finalized(&fin);
    if (status == 0 && !fin) MPI_Finalize();
}

static int mpi_start(dist_comm *c, ft_error *e) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        g_rank = c->rank, g_world = c->world, g_timeout = c->timeout_s;
        arm_bootstrap_alarm(c->timeout_s);
        int rc = MPI_Init(NULL, NULL);
        disarm_bootstrap_alarm();
        if (rc != MPI_SUCCESS) return ft_fail(e, FT_EIO, "MPI_Init failed (code %d)", rc);
        on_exit(finalize_at_exit, NULL);
    }
    c->mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int r = 0, w = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    if (r != c->rank || w != c->world)
        return ft_fail(e, FT_EINPUT,
                       "%s's environment says rank %d of %d but MPI says rank %d of %d: launch finetune itself under "
                       "the launcher (not a wrapper that starts it differently)",
                       c->launcher, c->rank, c->world, r, w);
    return FT_OK;
}
#endif

/* ---------- TCP and file bootstrap of NCCL's unique id ---------- */

static int write_full(int fd, const void *p, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t k = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        off += (size_t)k;
    }
    return 0;
}

static int read_full(int fd, void *p, size_t n, double deadline) {
    for (size_t off = 0; off < n;) {
        struct pollfd pf = {fd, POLLIN, 0};
        int ms = (int)((deadline - ft_now()) * 1000);
        if (ms <= 0 || poll(&pf, 1, ms) <= 0) return -1;
        ssize_t k = recv(fd, (char *)p + off, n - off, 0);
        if (k <= 0) return -1;
        off += (size_t)k;
    }
    return 0;
}

/* Rank 0 listens on master_port and hands the id to the world-1 others, who connect to master_addr. */
static int tcp_share_id(dist_comm *c, unsigned char *id, ft_error *e) {
    double deadline = ft_now() + c->timeout_s;
    uint32_t hello[2];
    if (c->rank == 0) {
        int s = socket(AF_INET6, SOCK_STREAM, 0), v6only = 0, one = 1;
        int v4 = s < 0;
        if (v4) s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return ft_fail_sys(e, errno, "bootstrap: socket");
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int brc;
        if (v4) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->master_port)};
            a.sin_addr.s_addr = htonl(INADDR_ANY);
            brc = bind(s, (struct sockaddr *)&a, sizeof a);
        } else {
            setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
            struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->master_port)};
            a.sin6_addr = in6addr_any;
            brc = bind(s, (struct sockaddr *)&a, sizeof a);
        }
        if (brc || listen(s, c->world)) {
            int err = errno;
            close(s);
            return ft_fail_sys(e, err, "bootstrap: rank 0 cannot listen on port %d (MASTER_PORT)", c->master_port);
        }
        int rc = FT_OK;
        for (int got = 1; got < c->world && !rc; got++) {
            struct pollfd pf = {s, POLLIN, 0};
            int ms = (int)((deadline - ft_now()) * 1000);
            if (ms <= 0 || poll(&pf, 1, ms) <= 0) {
                rc = ft_fail(e, FT_EIO,
                             "bootstrap: only %d of %d ranks connected to rank 0 on port %d within %.0f s "
                             "(MASTER_ADDR/MASTER_PORT reachable? every rank started?)",
                             got, c->world, c->master_port, c->timeout_s);
                break;
            }
            int fd = accept(s, NULL, NULL);
            if (fd < 0) continue;
            uint32_t out[2] = {htonl((uint32_t)c->world), 0};
            if (read_full(fd, hello, sizeof hello, deadline) || ntohl(hello[1]) != (uint32_t)c->world) {
                rc = ft_fail(e, FT_EINPUT, "bootstrap: a rank connected with another world size (%u, here %d)",
                             ntohl(hello[1]), c->world);
            } else if (write_full(fd, out, sizeof out) || write_full(fd, id, DIST_NCCL_ID_BYTES)) {
                rc = ft_fail(e, FT_EIO, "bootstrap: sending the NCCL id to rank %u failed", ntohl(hello[0]));
            }
            close(fd);
        }
        close(s);
        return rc;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", c->master_port);
    for (;;) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int fd = -1;
        if (getaddrinfo(c->master_addr, port, &hints, &ai) == 0) {
            for (struct addrinfo *p = ai; p && fd < 0; p = p->ai_next) {
                fd = socket(p->ai_family, p->ai_socktype, p->ai_protocol);
                if (fd >= 0 && connect(fd, p->ai_addr, p->ai_addrlen) != 0) {
                    close(fd);
                    fd = -1;
                }
            }
            freeaddrinfo(ai);
        }
        if (fd >= 0) {
            uint32_t mine[2] = {htonl((uint32_t)c->rank), htonl((uint32_t)c->world)};
            int rc = write_full(fd, mine, sizeof mine) || read_full(fd, hello, sizeof hello, deadline) ||
                     read_full(fd, id, DIST_NCCL_ID_BYTES, deadline);
            close(fd);
            if (!rc) return FT_OK;
        }
        if (ft_now() > deadline)
            return ft_fail(e, FT_EIO, "bootstrap: rank %d could not reach rank 0 at %s:%d within %.0f s", c->rank,
                           c->master_addr, c->master_port, c->timeout_s);
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}

static int file_share_id(dist_comm *c, const char *path, unsigned char *id, ft_error *e) {
    if (c->rank == 0) return ft_write_file_atomic(path, id, DIST_NCCL_ID_BYTES, e);
    double deadline = ft_now() + c->timeout_s;
    for (;;) {
        FILE *f = fopen(path, "rb");
        if (f) {
            size_t k = fread(id, 1, DIST_NCCL_ID_BYTES, f);
            fclose(f);
            if (k == DIST_NCCL_ID_BYTES) return FT_OK;
        }
        if (ft_now() > deadline)
            return ft_fail(e, FT_EIO, "bootstrap: %s (FT_DIST_FILE) did not appear within %.0f s: is rank 0 running, "
                           "and is the path shared by every node?", path, c->timeout_s);
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}

/* ---------- set-up ---------- */

/* The local GPU is the local rank: narrow CUDA_VISIBLE_DEVICES to it (a list of one is kept as it is). */
static int narrow_visible_devices(dist_comm *c, ft_error *e) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    char buf[256];
    if (!v || !*v) {
        snprintf(buf, sizeof buf, "%d", c->local_rank);
    } else {
        char *copy = ft_xstrdup(v), *save = NULL, *tok = strtok_r(copy, ",", &save);
        int n = 0;
        const char *pick = NULL, *only = tok;
        for (; tok; tok = strtok_r(NULL, ",", &save), n++)
            if (n == c->local_rank) pick = tok;
        if (n == 1) pick = only;
        if (!pick) {
            free(copy);
            return ft_fail(e, FT_EINPUT, "local rank %d but CUDA_VISIBLE_DEVICES=%s names %d device(s): one GPU per "
                           "rank, so start at most %d ranks per node", c->local_rank, v, n, n);
        }
        snprintf(buf, sizeof buf, "%s", pick);
        free(copy);
    }
    setenv("CUDA_VISIBLE_DEVICES", buf, 1);
    return FT_OK;
}

int dist_init(const dist_opts *o, dist_comm **out, ft_error *e) {
    dist_comm *c = ft_xcalloc(1, sizeof *c);
    c->world = 1;
    c->timeout_s = o && o->timeout_s > 0 ? o->timeout_s : 0;
    if (c->timeout_s <= 0) {
        const char *t = getenv("FT_DIST_TIMEOUT");
        c->timeout_s = t && atof(t) > 0 ? atof(t) : 300;
    }
    c->launcher = dist_launcher();
    snprintf(c->desc, sizeof c->desc, "single process");
    *out = c;
    if (!c->launcher) return FT_OK;
    int ok = 1, lr = 0;
    if (strcmp(c->launcher, "mpirun") == 0) {
        ok = env_int("OMPI_COMM_WORLD_RANK", &c->rank) > 0 && env_int("OMPI_COMM_WORLD_SIZE", &c->world) > 0;
        if (env_int("OMPI_COMM_WORLD_LOCAL_RANK", &lr) > 0) c->local_rank = lr;
    } else if (strcmp(c->launcher, "srun") == 0) {
        ok = env_int("SLURM_PROCID", &c->rank) > 0 && env_int("SLURM_NTASKS", &c->world) > 0;
        if (env_int("SLURM_LOCALID", &lr) > 0) c->local_rank = lr;
    } else {
        ok = env_int("RANK", &c->rank) > 0 && env_int("WORLD_SIZE", &c->world) > 0;
        if (env_int("LOCAL_RANK", &lr) > 0) c->local_rank = lr;
    }
    if (!ok || c->world < 1 || c->rank >= c->world)
        return ft_fail(e, FT_EINPUT, "%s: the rank/world-size environment variables are missing or inconsistent",
                       c->launcher);
    c->active = 1;
    const char *ma = o && o->master_addr ? o->master_addr : getenv("MASTER_ADDR");
    snprintf(c->master_addr, sizeof c->master_addr, "%s", ma ? ma : "");
    c->master_port = o && o->master_port > 0 ? o->master_port : 0;
    if (!c->master_port) {
        int p = 0;
        if (env_int("MASTER_PORT", &p) > 0) c->master_port = p;
    }
    int rc = narrow_visible_devices(c, e);
    /* Under mpirun (or srun with MPI) the MPI world is the job; with torchrun's variables MPI is not involved. */
#ifdef FT_HAVE_MPI
    if (!rc && strcmp(c->launcher, "torchrun-env") != 0) rc = mpi_start(c, e);
#endif
    snprintf(c->desc, sizeof c->desc, "rank %d of %d (local %d, %s)", c->rank, c->world, c->local_rank, c->launcher);
    return rc;
}

int dist_bind(dist_comm *c, ft_backend *b, ft_error *e) {
    if (!c || !c->active) return FT_OK;
    c->b = b;
    if (b->device == FT_DEV_CPU) {
        if (!c->mpi && !dist_have_mpi())
            return ft_fail(e, FT_EINPUT, "data parallelism on the CPU backend runs over MPI, and this build has none "
                                         "(install libopenmpi-dev and rebuild)");
        if (!c->mpi)
            return ft_fail(e, FT_EINPUT, "data parallelism on the CPU backend runs over MPI: start the ranks with "
                                         "mpirun -np N (or --nproc N, which does), not with %s's variables", c->launcher);
        c->on_mpi = 1;
        snprintf(c->desc + strlen(c->desc), sizeof c->desc - strlen(c->desc), ", MPI on the CPU");
        return FT_OK;
    }
    if (!dist_nccl_available()) {
        unsigned char id[DIST_NCCL_ID_BYTES];
        return dist_nccl_unique_id(id, e); /* the "no NCCL in this build" error */
    }
    unsigned char id[DIST_NCCL_ID_BYTES] = {0};
    int rc = c->rank == 0 ? dist_nccl_unique_id(id, e) : FT_OK;
    const char *file = getenv("FT_DIST_FILE"), *how;
#ifdef FT_HAVE_MPI
    if (c->mpi) {
        how = "MPI";
        if (!rc) rc = mpi_bcast(c, id, sizeof id, 0, "bootstrap (NCCL id over MPI)", e);
    } else
#endif
    if (file && *file) {
        how = "file";
        if (!rc) rc = file_share_id(c, file, id, e);
    } else {
        how = "TCP";
        if (!c->master_addr[0] || c->master_port <= 0)
            return ft_fail(e, FT_EINPUT,
                           "rank %d of %d: no way to reach rank 0: set MASTER_ADDR and MASTER_PORT (or --master-addr/"
                           "--master-port), set FT_DIST_FILE to a path every rank shares, or start under mpirun",
                           c->rank, c->world);
        if (!rc) rc = tcp_share_id(c, id, e);
    }
    if (!rc) rc = dist_nccl_init(id, c->rank, c->world, c->timeout_s, &c->nccl, e);
    if (!rc && file && *file && c->rank == 0 && !c->mpi) unlink(file); /* every rank has joined */
    if (!rc)
        snprintf(c->desc + strlen(c->desc), sizeof c->desc - strlen(c->desc), ", NCCL %s (id over %s)",
                 dist_nccl_version(), how);
    return rc;
}

void dist_free(dist_comm *c) {
    if (!c) return;
    dist_nccl_free(c->nccl); /* MPI is finalized at exit (finalize_at_exit) */
    free(c);
}

/* ---------- collectives ---------- */

static int unbound(dist_comm *c, const char *what, ft_error *e) {
    return ft_fail(e, FT_EINTERNAL, "%s: the communicator is not bound to a backend", what);
}

int dist_allreduce_f32(dist_comm *c, float *dev, size_t n, const char *what, ft_error *e) {
    if (!c || !c->active || n == 0) return FT_OK;
    if (c->nccl) return dist_nccl_allreduce(c->nccl, dev, n, 0, 0, what, e);
#ifdef FT_HAVE_MPI
    if (c->on_mpi) return mpi_allreduce(c, dev, n, MPI_FLOAT, what, e);
#endif
    return unbound(c, what, e);
}

int dist_allreduce_f32_many(dist_comm *c, float *const *bufs, const size_t *ns, int k, const char *what, ft_error *e) {
    if (!c || !c->active || k == 0) return FT_OK;
    if (c->nccl) return dist_nccl_allreduce_many(c->nccl, bufs, ns, k, what, e);
    int rc = FT_OK;
    for (int i = 0; i < k && !rc; i++) rc = dist_allreduce_f32(c, bufs[i], ns[i], what, e);
    return rc;
}

int dist_allreduce_f64_host(dist_comm *c, double *host, size_t n, const char *what, ft_error *e) {
    if (!c || !c->active || n == 0) return FT_OK;
    if (c->nccl) return dist_nccl_allreduce(c->nccl, host, n, 1, 1, what, e);
#ifdef FT_HAVE_MPI
    if (c->mpi) return mpi_allreduce(c, host, n, MPI_DOUBLE, what, e);
#endif
    return unbound(c, what, e);
}

int dist_broadcast(dist_comm *c, void *dev, size_t bytes, int root, const char *what, ft_error *e) {
    if (!c || !c->active || bytes == 0) return FT_OK;
    if (c->nccl) return dist_nccl_broadcast(c->nccl, dev, bytes, root, 0, what, e);
#ifdef FT_HAVE_MPI
    if (c->on_mpi) return mpi_bcast(c, dev, bytes, root, what, e);
#endif
    return unbound(c, what, e);
}

int dist_broadcast_host(dist_comm *c, void *host, size_t bytes, int root, const char *what, ft_error *e) {
    if (!c || !c->active || bytes == 0) return FT_OK;
    if (c->nccl) return dist_nccl_broadcast(c->nccl, host, bytes, root, 1, what, e);
#ifdef FT_HAVE_MPI
    if (c->mpi) return mpi_bcast(c, host, bytes, root, what, e);
#endif
    return unbound(c, what, e);
}

int dist_barrier(dist_comm *c, const char *what, ft_error *e) {
    double one = 1;
    return dist_allreduce_f64_host(c, &one, 1, what, e);
}

int dist_all_ok(dist_comm *c, int ok, ft_error *e) {
    if (!c || !c->active) return ok;
    double bad = ok ? 0 : 1;
    ft_error le = {0};
    if (dist_allreduce_f64_host(c, &bad, 1, "agreeing on success", &le)) return 0;
    return bad == 0;
}

/* ---------- agreement ---------- */

static void json_value(const cJSON *v, char *buf, size_t cap) {
    if (!v) {
        snprintf(buf, cap, "(absent)");
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    snprintf(buf, cap, "%s", s ? s : "?");
    if (strlen(buf) > 80) strcpy(buf + 77, "...");
    free(s);
}

/* The first key path where objects a (rank 0's) and b (ours) differ; 0 when equal. */
static int json_diff(const cJSON *a, const cJSON *b, const char *path, char *msg, size_t cap) {
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        char sub[256];
        const cJSON *x;
        cJSON_ArrayForEach(x, a) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", x->string);
            if (json_diff(x, cJSON_GetObjectItemCaseSensitive(b, x->string), sub, msg, cap)) return 1;
        }
        cJSON_ArrayForEach(x, b) if (!cJSON_GetObjectItemCaseSensitive(a, x->string)) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", x->string);
            return json_diff(NULL, x, sub, msg, cap);
        }
        return 0;
    }
    if (a && b && cJSON_Compare(a, b, 1)) return 0;
    char va[96], vb[96];
    json_value(a, va, sizeof va);
    json_value(b, vb, sizeof vb);
    snprintf(msg, cap, "%s is %s here but %s on rank 0", path, vb, va);
    return 1;
}

/* First differing "; "-separated item. */
static void item_diff(const char *a, const char *b, char *msg, size_t cap) {
    for (;;) {
        const char *ea = strstr(a, "; "), *eb = strstr(b, "; ");
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0 || !ea || !eb) {
            snprintf(msg, cap, "'%.*s' here but '%.*s' on rank 0", (int)(lb > 120 ? 120 : lb), b,
                     (int)(la > 120 ? 120 : la), a);
            return;
        }
        a = ea + 2, b = eb + 2;
    }
}

int dist_agree(dist_comm *c, const char *what, const char *text, ft_error *e) {
    if (!c || !c->active) return FT_OK;
    char op[128];
    snprintf(op, sizeof op, "comparing the %s across ranks", what);
    uint64_t len = c->rank == 0 ? strlen(text) : 0;
    int rc = dist_broadcast_host(c, &len, sizeof len, 0, op, e);
    if (rc) return rc;
    char *zero = ft_xcalloc(len + 1, 1);
    if (c->rank == 0) memcpy(zero, text, len);
    rc = dist_broadcast_host(c, zero, len, 0, op, e);
    char msg[512] = "";
    int differs = !rc && strcmp(zero, text) != 0;
    if (differs) {
        cJSON *ja = cJSON_Parse(zero), *jb = cJSON_Parse(text);
        if (cJSON_IsObject(ja) && cJSON_IsObject(jb)) {
            if (!json_diff(ja, jb, "", msg, sizeof msg)) snprintf(msg, sizeof msg, "the texts differ");
        } else {
            item_diff(zero, text, msg, sizeof msg);
        }
        cJSON_Delete(ja);
        cJSON_Delete(jb);
    }
    free(zero);
    if (rc) return rc;
    double *flags = ft_xcalloc((size_t)c->world, sizeof *flags);
    flags[c->rank] = differs;
    rc = dist_allreduce_f64_host(c, flags, (size_t)c->world, op, e);
    int bad = -1;
    for (int r = 0; !rc && r < c->world && bad < 0; r++)
        if (flags[r] != 0) bad = r;
    free(flags);
    if (rc || bad < 0) return rc;
    rc = dist_broadcast_host(c, msg, sizeof msg, bad, op, e);
    if (rc) return rc;
    msg[sizeof msg - 1] = 0;
    return ft_fail(e, FT_EINPUT, "the ranks disagree on the %s: on rank %d, %s; every rank must run the same %s",
                   what, bad, msg, what);
}
