/* The test-only fault hook (FT_FAULT) and the write paths it drives: an injected ENOSPC makes
 * ft_write_file_atomic fail with the cause in the message and ft_error_no_space true, leaving the
 * old file and no temp file; the limit is per file, what fits is written; a safetensors writer
 * hit mid-file removes its temp file; kill points fire on the N-th hit only; stale temp files of
 * dead processes are removed, a live one's and other names are kept; a checkpoint moved aside by
 * a writer killed while re-saving its step is put back. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "finetune/base/util.h"
#include "finetune/io/ckpt.h"
#include "finetune/io/safetensors.h"
#include "test.h"

static const char *DIR_ = "test_fault_dir";

static char *at(const char *name) { return ft_path_join(DIR_, name); }

static void touch(const char *name) {
    char *p = at(name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    free(p);
}

static int exists(const char *name) {
    char *p = at(name);
    int r = ft_file_exists(p);
    free(p);
    return r;
}

static int count_entries(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

/* A PID that is certainly not running: a child that has exited and been reaped. */
static long dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    int st;
    waitpid(p, &st, 0);
    return (long)p;
}

int main(void) {
    CHECK(system("rm -rf test_fault_dir && mkdir test_fault_dir") == 0);
    ft_error e = {0};

    /* ENOSPC on an atomic write: the old file stays, no temp file, the error says why */
    char *f = at("a.json");
    CHECK(ft_write_file_atomic(f, "old", 3, &e) == FT_OK);
    setenv("FT_FAULT", "enospc:a.json", 1);
    int rc = ft_write_file_atomic(f, "new contents", 12, &e);
    CHECK(rc == FT_EIO);
    CHECK(ft_error_no_space(&e));
    CHECK_MSG(strstr(e.msg, "a.json.tmp.") && strstr(e.msg, strerror(ENOSPC)), "%s", e.msg);
    char *txt = NULL;
    CHECK(ft_read_file(f, &txt, NULL, &e) == FT_OK && txt && strcmp(txt, "old") == 0);
    free(txt);
    CHECK(count_entries(DIR_) == 1);
    /* another file is not affected; a limit lets what fits through (per file) */
    char *g = at("b.json");
    CHECK(ft_write_file_atomic(g, "fine", 4, &e) == FT_OK);
    setenv("FT_FAULT", "enospc:b.json:3", 1);
    CHECK(ft_write_file_atomic(g, "abc", 3, &e) == FT_OK);
    CHECK(ft_write_file_atomic(g, "abcd", 4, &e) == FT_EIO && ft_error_no_space(&e));
    unsetenv("FT_FAULT");
    /* ft_fail clears the errno of an earlier failure */
    ft_fail(&e, FT_EINPUT, "other");
    CHECK(!ft_error_no_space(&e));

    /* a safetensors writer hit mid-file: no temp file, no output */
    setenv("FT_FAULT", "enospc:c.safetensors:200", 1);
    char *c = at("c.safetensors");
    st_writer *w = NULL;
    CHECK(st_writer_open(c, &w, &e) == FT_OK);
    int64_t shape[1] = {256};
    float data[256] = {0};
    CHECK(st_writer_declare(w, "x", FT_F32, 1, shape, &e) == FT_OK);
    rc = st_writer_write(w, "x", data, &e);
    CHECK(rc == FT_EIO && ft_error_no_space(&e));
    CHECK_MSG(strstr(e.msg, "writing tensor 'x'") != NULL, "%s", e.msg);
    st_writer_abort(w);
    unsetenv("FT_FAULT");
    CHECK(!exists("c.safetensors") && count_entries(DIR_) == 2);

    /* kill points: only the named point, only its N-th hit */
    pid_t p = fork();
    if (p == 0) {
        setenv("FT_FAULT", "kill:here:2", 1);
        ft_fault_point("elsewhere");
        ft_fault_point("here");
        ft_fault_point("here-too");
        ft_fault_point("her");
        ft_fault_point("here");
        _exit(3); /* must not get past the second hit */
    }
    int st = 0;
    waitpid(p, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    p = fork();
    if (p == 0) {
        setenv("FT_FAULT", "kill:here:2", 1);
        ft_fault_point("here");
        _exit(3);
    }
    waitpid(p, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);

    /* stale temp files and dirs of dead processes go; ours, live ones and other names stay */
    char name[128];
    long dead = dead_pid();
    snprintf(name, sizeof name, "model.safetensors.tmp.%ld", dead);
    touch(name);
    snprintf(name, sizeof name, "out.tmp-%ld", dead);
    char *d = at(name);
    CHECK(mkdir(d, 0755) == 0);
    free(d);
    snprintf(name, sizeof name, "out.tmp-%ld/model.safetensors", dead);
    touch(name);
    snprintf(name, sizeof name, "mine.json.tmp.%ld", (long)getpid());
    touch(name);
    snprintf(name, sizeof name, "parent.json.tmp.%ld", (long)getppid());
    touch(name);
    touch("notes.tmp.txt");
    touch("x.tmp.");
    CHECK(ft_remove_stale_tmp(DIR_, "zzz") == 0);
    CHECK(ft_remove_stale_tmp(DIR_, NULL) == 2);
    CHECK(count_entries(DIR_) == 6); /* a.json b.json mine parent notes x.tmp. */
    CHECK(exists("notes.tmp.txt") && exists("x.tmp."));

    /* a checkpoint moved aside by a writer killed while re-saving its step is put back */
    char *run = at("run");
    ckpt_writer *cw = NULL;
    float v[4] = {1, 2, 3, 4};
    int64_t s4[1] = {4};
    CHECK(ckpt_writer_begin(run, 5, &cw, &e) == FT_OK);
    CHECK(ckpt_writer_add_tensor(cw, "v", FT_F32, 1, s4, v, &e) == FT_OK);
    CHECK(ckpt_writer_set_state(cw, "{}", &e) == FT_OK);
    CHECK(ckpt_writer_commit(cw, 0, NULL, &e) == FT_OK);
    char *fin = ckpt_dir_for_step(run, 5), old[512];
    snprintf(old, sizeof old, "%s.tmp-%ld-old", fin, dead);
    CHECK(rename(fin, old) == 0);
    char *latest = NULL;
    int64_t step = -1;
    CHECK(ckpt_latest(run, &latest, &step, &e) == FT_OK);
    CHECK(latest && step == 5 && ft_file_exists(fin) && !ft_file_exists(old));
    free(latest);
    free(fin);
    free(run);

    free(c);
    free(g);
    free(f);
    CHECK(system("rm -rf test_fault_dir") == 0);
    TEST_DONE();
}
