/* `--nproc N`: start N ranks of a training job on this machine and wait for them.
 *
 * On GPUs (the recipe's device is cuda, or auto with a GPU visible) the ranks are forked here with torchrun's
 * variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT): NCCL's id travels over
 * TCP from rank 0, each rank uses GPU LOCAL_RANK of CUDA_VISIBLE_DEVICES. On the CPU backend the ranks' sums run
 * over MPI, so N ranks are started by OpenMPI's mpirun (--oversubscribe; OMP_NUM_THREADS = cores / N unless set).
 * Either way the first rank to fail ends the others: its exit status is this command's. */
#define _DEFAULT_SOURCE /* kill, setenv */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "finetune/cli/cli.h"
#include "finetune/train/dist.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

/* A free TCP port of this machine for rank 0 to listen on. */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0), port = 29500;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

/* Does the job run on a GPU? The probe runs in a child, so that this process never initialises CUDA before
 * forking the ranks. */
static int wants_gpu(const job_args *a, int *out, ft_error *e) {
    rcp *r = NULL;
    const char *dev = "auto";
    int rc = job_load_recipe(a, &r, e);
    if (!rc) rc = rcp_get_string(r, "device", "auto", &dev, e);
    if (!rc) {
        if (strcmp(dev, "cpu") == 0) {
            *out = 0;
        } else if (strcmp(dev, "auto") != 0) {
            *out = 1;
        } else {
            fflush(NULL);
            pid_t p = fork();
            if (p == 0) _exit(ft_backend_cuda_available() ? 10 : 11);
            int st = 0;
            *out = p > 0 && waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 10;
        }
    }
    rcp_free(r);
    return rc;
}

/* Wait for the ranks; the first failure (or a signal to this process) stops the rest. */
static int wait_ranks(pid_t *pids, int n, const char *cmd) {
    int code = 0, left = n, stopping = 0;
    double stop_at = 0;
    while (left > 0) {
        int st = 0;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p > 0) {
            int r = -1;
            for (int i = 0; i < n; i++)
                if (pids[i] == p) r = i, pids[i] = 0;
            if (r < 0) continue;
            left--;
            int c = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (c && !code) {
                code = c;
                if (WIFSIGNALED(st))
                    fprintf(stderr, "finetune %s: rank %d was killed by signal %d; stopping the other ranks\n", cmd, r,
                            WTERMSIG(st));
                else
                    fprintf(stderr, "finetune %s: rank %d exited with status %d; stopping the other ranks\n", cmd, r, c);
            }
            continue;
        }
        if (g_stop && !code) code = 128 + g_stop;
        if (code && !stopping) { /* SIGTERM, then SIGKILL after 10 s */
            stopping = 1;
            stop_at = ft_now() + 10;
            for (int i = 0; i < n; i++)
                if (pids[i]) kill(pids[i], SIGTERM);
        }
        if (stopping && ft_now() > stop_at)
            for (int i = 0; i < n; i++)
                if (pids[i]) kill(pids[i], SIGKILL);
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return code;
}

/* The job's command line without --nproc N, after the program's path. */
static char **child_argv(int argc, char **argv, const char *exe, int extra_front, char **front) {
    char **v = ft_xcalloc((size_t)(argc + extra_front + 2), sizeof *v);
    int k = 0;
    for (int i = 0; i < extra_front; i++) v[k++] = front[i];
    v[k++] = (char *)exe;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--nproc") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--nproc=", 8) == 0) continue;
        v[k++] = argv[i];
    }
    v[k] = NULL;
    return v;
}

int cli_launch(const char *cmd, const job_args *a) {
    ft_error e = {0};
    if (dist_launcher())
        return cli_usage_error(cmd, "--nproc starts the ranks itself; under %s leave it out", dist_launcher());
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return ft_fail(&e, FT_EIO, "--nproc: cannot find this program's path"), cli_report(cmd, &e);
    exe[len] = 0;
    int gpu = 0;
    if (wants_gpu(a, &gpu, &e)) return cli_report(cmd, &e);
    int n = a->nproc;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fflush(NULL);
    if (!gpu) {
        if (!dist_have_mpi()) {
            ft_fail(&e, FT_EINPUT, "--nproc on the CPU backend runs the ranks over MPI, and this build has no MPI "
                                   "(install libopenmpi-dev openmpi-bin and rebuild)");
            return cli_report(cmd, &e);
        }
        char np[16];
        snprintf(np, sizeof np, "%d", n);
        /* root (containers, Kaggle): mpirun refuses it unless told */
        char *front[] = {"mpirun", "-np", np, "--oversubscribe", "--allow-run-as-root"};
        char **v = child_argv(a->argc, a->argv, exe, geteuid() == 0 ? 5 : 4, front);
        if (!getenv("OMP_NUM_THREADS")) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            char t[16];
            snprintf(t, sizeof t, "%ld", cores / n > 1 ? cores / n : 1);
            setenv("OMP_NUM_THREADS", t, 1);
        }
        fprintf(stderr, "finetune %s: starting %d ranks on the CPU backend through mpirun\n", cmd, n);
        pid_t p = fork();
        if (p == 0) {
            execvp("mpirun", v);
            fprintf(stderr, "finetune %s: --nproc on the CPU backend starts the ranks with mpirun, which could not be "
                            "run: %s (install openmpi-bin)\n", cmd, strerror(errno));
            _exit(FT_EINPUT);
        }
        free(v);
        if (p < 0) return ft_fail(&e, FT_EIO, "--nproc: fork failed"), cli_report(cmd, &e);
        pid_t pids[1] = {p};
        return wait_ranks(pids, 1, cmd);
    }
    char **v = child_argv(a->argc, a->argv, exe, 0, NULL);
    char port[16], world[16];
    snprintf(port, sizeof port, "%d", getenv("MASTER_PORT") ? atoi(getenv("MASTER_PORT")) : free_port());
    snprintf(world, sizeof world, "%d", n);
    fprintf(stderr, "finetune %s: starting %d ranks, one per GPU (NCCL, rank 0 at %s:%s)\n", cmd, n,
            getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1", port);
    pid_t *pids = ft_xcalloc((size_t)n, sizeof *pids);
    for (int r = 0; r < n; r++) {
        pid_t p = fork();
        if (p == 0) {
            char rs[16];
            snprintf(rs, sizeof rs, "%d", r);
            setenv("RANK", rs, 1);
            setenv("LOCAL_RANK", rs, 1);
            setenv("WORLD_SIZE", world, 1);
            setenv("LOCAL_WORLD_SIZE", world, 1);
            if (!getenv("MASTER_ADDR")) setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("MASTER_PORT", port, 1);
            execv(exe, v);
            _exit(127);
        }
        pids[r] = p;
    }
    free(v);
    int code = wait_ranks(pids, n, cmd);
    free(pids);
    return code;
}
