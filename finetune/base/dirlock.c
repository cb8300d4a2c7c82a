#define _GNU_SOURCE /* flock */
#include "finetune/base/dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct ft_dirlock {
    char *dir, *path;
    int fd;
    int created_dir;
};

static void host_name(char *h, size_t n) {
    if (gethostname(h, n) != 0 || !h[0]) snprintf(h, n, "unknown");
    h[n - 1] = 0;
}

/* "PID HOST" from the lock file; 0 when it does not hold that. */
static int read_owner(int fd, long *pid, char *host, size_t hn) {
    char buf[512];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    char fmt[32], h[256];
    snprintf(fmt, sizeof fmt, "%%ld %%%zus", sizeof h - 1);
    if (sscanf(buf, fmt, pid, h) != 2 || *pid <= 0) return 0;
    snprintf(host, hn, "%s", h);
    return 1;
}

/* A zombie is not running: a killed run whose parent is gone (an MPI rank after mpirun ended; a container whose
 * init does not reap) stays one until reaped, and kill(pid, 0) still succeeds on it. */
static int pid_zombie(long pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold spaces and parentheses */
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

static int pid_alive(long pid) { return (kill((pid_t)pid, 0) == 0 || errno == EPERM) && !pid_zombie(pid); }

static int write_owner(int fd, const char *path, const char *host, ft_error *e) {
    char text[400];
    int n = snprintf(text, sizeof text, "%ld %s\n", (long)getpid(), host);
    if (write(fd, text, (size_t)n) != n) return ft_fail(e, FT_EIO, "%s: cannot write: %s", path, strerror(errno));
    return FT_OK;
}

/* 1 when fd is still the file at path (not unlinked or replaced since it was opened). */
static int same_file(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* The lock file at l->path exists. Returns 1 when it was stale and has been removed (try again), 0 when it
 * vanished or changed meanwhile (try again), or an error when it is held. */
static int inspect(ft_dirlock *l, const char *host, ft_error *e) {
    int fd = open(l->path, O_RDONLY);
    if (fd < 0) return errno == ENOENT ? 0 : -ft_fail(e, FT_EIO, "%s: cannot open: %s", l->path, strerror(errno));
    long pid = 0;
    char owner[256] = "?";
    int parsed;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        parsed = read_owner(fd, &pid, owner, sizeof owner);
        close(fd);
        if (!parsed)
            return -ft_fail(e, FT_EINPUT, "%s is in use by another run: its lock file %s is held (owner being written); "
                            "wait for that run to finish or choose another output directory", l->dir, l->path);
        return -ft_fail(e, FT_EINPUT, "%s is in use by another run: its lock file %s is held by pid %ld on host %s; "
                        "wait for that run to finish or choose another output directory", l->dir, l->path, pid, owner);
    }
    /* nobody holds its flock (or flock is unsupported here): judge by the PID it names */
    if (!same_file(fd, l->path)) {
        close(fd);
        return 0;
    }
    parsed = read_owner(fd, &pid, owner, sizeof owner);
    if (parsed && strcmp(owner, host) != 0) {
        close(fd);
        return -ft_fail(e, FT_EINPUT,
                        "%s is in use by another run: its lock file %s is held by pid %ld on host %s (another machine: "
                        "cannot tell whether it still runs); if that run is gone, delete %s",
                        l->dir, l->path, pid, owner, l->path);
    }
    if (parsed && pid_alive(pid)) {
        close(fd);
        return -ft_fail(e, FT_EINPUT,
                        "%s is in use by another run: its lock file %s is held by pid %ld on host %s, which is running; "
                        "wait for that run to finish, or if no finetune run is using the directory, delete %s",
                        l->dir, l->path, pid, owner, l->path);
    }
    if (parsed)
        fprintf(stderr, "note: %s: stale lock of pid %ld on host %s (not running); taking it over\n", l->path, pid,
                owner);
    else
        fprintf(stderr, "note: %s: lock file without an owner and not locked; taking it over\n", l->path);
    int rc = unlink(l->path) == 0 || errno == ENOENT ? 1 : -ft_fail(e, FT_EIO, "%s: cannot remove the stale lock: %s",
                                                                        l->path, strerror(errno));
    close(fd);
    return rc;
}

int ft_dirlock_acquire(const char *dir, ft_dirlock **out, ft_error *e) {
    *out = NULL;
    struct stat st;
    int created = stat(dir, &st) != 0;
    int rc = ft_mkdir_p(dir, e);
    if (rc) return rc;
    ft_dirlock *l = ft_xcalloc(1, sizeof *l);
    l->dir = ft_xstrdup(dir);
    l->path = ft_path_join(dir, FT_DIRLOCK_NAME);
    l->fd = -1;
    l->created_dir = created;
    char host[256];
    host_name(host, sizeof host);
    /* our lock file, complete and flock()ed before it gets the lock's name */
    size_t tn = strlen(l->path) + 32;
    char *tmp = ft_xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld", l->path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) rc = ft_fail(e, FT_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    if (!rc) rc = write_owner(fd, tmp, host, e);
    if (!rc && flock(fd, LOCK_EX | LOCK_NB) != 0)
        rc = ft_fail(e, FT_EIO, "%s: cannot lock: %s", tmp, strerror(errno));
    int linked = 0, tries = 0;
    while (!rc && !linked) {
        if (link(tmp, l->path) == 0) {
            linked = 1;
        } else if (errno == EEXIST) {
            if (++tries > 20) {
                rc = ft_fail(e, FT_EIO, "%s: the lock file keeps changing; is another run starting there?", l->path);
                break;
            }
            int r = inspect(l, host, e);
            if (r < 0) rc = -r;
        } else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP || errno == ENOSYS) {
            /* no hard links on this file system: create the lock file itself exclusively */
            int f2 = open(l->path, O_RDWR | O_CREAT | O_EXCL, 0644);
            if (f2 >= 0) {
                rc = write_owner(f2, l->path, host, e);
                if (!rc) flock(f2, LOCK_EX | LOCK_NB);
                close(fd);
                fd = f2;
                linked = 2;
            } else if (errno == EEXIST && ++tries <= 20) {
                int r = inspect(l, host, e);
                if (r < 0) rc = -r;
            } else {
                rc = ft_fail(e, FT_EIO, "%s: cannot create: %s", l->path, strerror(errno));
            }
        } else {
            rc = ft_fail(e, FT_EIO, "%s: cannot create the lock file: %s", l->path, strerror(errno));
        }
    }
    unlink(tmp);
    free(tmp);
    if (rc) {
        if (fd >= 0) close(fd);
        if (linked) unlink(l->path);
        l->fd = -1;
        ft_dirlock_release(l);
        return rc;
    }
    l->fd = fd;
    *out = l;
    return FT_OK;
}

void ft_dirlock_release(ft_dirlock *l) {
    if (!l) return;
    if (l->fd >= 0) {
        if (same_file(l->fd, l->path)) unlink(l->path);
        close(l->fd);
    }
    if (l->created_dir) rmdir(l->dir); /* only if nothing else was written there */
    free(l->dir);
    free(l->path);
    free(l);
}
