/* test_dirlock: one run per output directory: the lock file, a second taker refused (in this process and
 * from another), release, stale locks (dead PID) taken over, other hosts' and live PIDs' locks refused. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "finetune/base/dirlock.h"
#include "tests/test.h"

static char dir[600], lockp[700], host[256];

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void put(const char *text) {
    FILE *f = fopen(lockp, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static long dead_pid(void) { /* a PID that just exited (and was reaped) */
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return (long)p;
}

int main(void) {
    char tmpl[] = "/tmp/test_dirlock.XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    snprintf(dir, sizeof dir, "%s/run/out", tmpl);
    snprintf(lockp, sizeof lockp, "%s/%s", dir, FT_DIRLOCK_NAME);
    gethostname(host, sizeof host);
    char own[400];
    snprintf(own, sizeof own, "%ld %s\n", (long)getpid(), host);

    /* acquire: creates the dir and the lock file holding "PID HOST" */
    ft_error e = {0};
    ft_dirlock *a = NULL, *b = NULL;
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_OK && a);
    char *text = NULL;
    CHECK(ft_read_file(lockp, &text, NULL, &e) == FT_OK && text && strcmp(text, own) == 0);
    free(text);
    /* a second taker (another open file: flock refuses it even in this process) */
    CHECK(ft_dirlock_acquire(dir, &b, &e) == FT_EINPUT && !b);
    char want[1200];
    snprintf(want, sizeof want, "its lock file %s is held by pid %ld on host %s", lockp, (long)getpid(), host);
    CHECK_MSG(strstr(e.msg, want) != NULL, "%s", e.msg);
    CHECK(exists(lockp)); /* the refused taker left it alone */
    /* release: the lock file goes; the dir it created goes too when nothing else is there */
    ft_dirlock_release(a);
    CHECK(!exists(lockp));
    CHECK(!exists(dir));
    ft_dirlock_release(NULL);

    /* a dir with outputs stays after release */
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_OK);
    char other[800];
    snprintf(other, sizeof other, "%s/metrics.jsonl", dir);
    FILE *f = fopen(other, "w");
    if (f) fclose(f);
    ft_dirlock_release(a);
    CHECK(!exists(lockp) && exists(other));

    /* held by another process: refused, naming its PID */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t child = fork();
    if (child == 0) {
        ft_error ce = {0};
        ft_dirlock *cl = NULL;
        char c = ft_dirlock_acquire(dir, &cl, &ce) == FT_OK ? 'y' : 'n';
        if (write(pfd[1], &c, 1) != 1) _exit(2);
        pause(); /* until killed: its lock file stays behind, stale */
        _exit(0);
    }
    char c = 0;
    CHECK(read(pfd[0], &c, 1) == 1 && c == 'y');
    CHECK(ft_dirlock_acquire(dir, &b, &e) == FT_EINPUT && !b);
    snprintf(want, sizeof want, "held by pid %ld on host %s", (long)child, host);
    CHECK_MSG(strstr(e.msg, want) != NULL, "%s", e.msg);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* the killed run's lock is stale: taken over (a note on stderr) */
    CHECK(exists(lockp));
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_OK && a);
    text = NULL;
    CHECK(ft_read_file(lockp, &text, NULL, &e) == FT_OK && text && strcmp(text, own) == 0);
    free(text);
    ft_dirlock_release(a);

    /* a lock file naming a dead PID on this host, nobody holding its flock: stale */
    char buf[400];
    snprintf(buf, sizeof buf, "%ld %s\n", dead_pid(), host);
    put(buf);
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_OK && a);
    ft_dirlock_release(a);
    /* one without an owner line: taken over too */
    put("");
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_OK && a);
    ft_dirlock_release(a);
    /* another host's: cannot be checked, refused */
    put("12345 some-other-host.example\n");
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_EINPUT && !a);
    CHECK_MSG(strstr(e.msg, "held by pid 12345 on host some-other-host.example") && strstr(e.msg, lockp), "%s", e.msg);
    CHECK(exists(lockp));
    /* a live PID on this host (our parent) without the flock: refused, not taken over */
    snprintf(buf, sizeof buf, "%ld %s\n", (long)getppid(), host);
    put(buf);
    CHECK(ft_dirlock_acquire(dir, &a, &e) == FT_EINPUT && !a);
    CHECK_MSG(strstr(e.msg, "which is running"), "%s", e.msg);
    unlink(lockp);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
