/* test_paths: canonical paths (symlinks, "..", non-existent tails) and the output-over-input guard. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "finetune/base/paths.h"
#include "tests/test.h"

static char root[512]; /* canonical temp dir */

static char *P(const char *rel) { /* root/rel, from a small ring of buffers */
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", root, rel);
    return buf[k];
}

static ft_path_rel rel(const char *a, const char *b) {
    ft_error e = {0};
    ft_path_rel r = (ft_path_rel)-1;
    int rc = ft_path_relation(a, b, &r, &e);
    CHECK_MSG(rc == FT_OK, "%s vs %s: %s", a, b, e.msg);
    return r;
}

static int canon_is(const char *path, const char *want) {
    ft_error e = {0};
    char *c = NULL;
    int ok = ft_path_canon(path, &c, &e) == FT_OK && c && strcmp(c, want) == 0;
    if (!ok) fprintf(stderr, "canon(%s) = %s, want %s (%s)\n", path, c ? c : "(null)", want, e.msg);
    free(c);
    return ok;
}

static int write_file(const char *p) {
    FILE *f = fopen(p, "w");
    if (!f) return 0;
    fputs("x\n", f);
    return fclose(f) == 0;
}

int main(void) {
    char tmpl[] = "/tmp/test_paths.XXXXXX";
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        return 1;
    }
    char *r = realpath(tmpl, NULL); /* /tmp may itself be a symlink */
    snprintf(root, sizeof root, "%s", r);
    free(r);
    CHECK(mkdir(P("model"), 0755) == 0);
    CHECK(mkdir(P("model2"), 0755) == 0);
    CHECK(mkdir(P("model/sub"), 0755) == 0);
    CHECK(mkdir(P("other"), 0755) == 0);
    CHECK(write_file(P("data.jsonl")));
    CHECK(symlink(P("model"), P("link")) == 0);
    CHECK(symlink("model", P("rel_link")) == 0);
    CHECK(symlink(P("data.jsonl"), P("data_link.jsonl")) == 0);

    /* canonical spellings */
    CHECK(canon_is(P("model"), P("model")));
    CHECK(canon_is(P("model/"), P("model")));
    CHECK(canon_is(P("model//sub/."), P("model/sub")));
    CHECK(canon_is(P("other/../model"), P("model")));
    CHECK(canon_is(P("link"), P("model")));
    CHECK(canon_is(P("rel_link/sub"), P("model/sub")));
    CHECK(canon_is(P("link/sub/.."), P("model")));
    CHECK(canon_is(P("link/../other"), P("other"))); /* ".." after a symlink: the target's parent */
    CHECK(canon_is(P("data_link.jsonl"), P("data.jsonl")));
    /* non-existent tails: resolved lexically below the last existing (resolved) directory */
    CHECK(canon_is(P("link/new/run"), P("model/new/run")));
    CHECK(canon_is(P("nope/../model/x"), P("model/x")));
    CHECK(canon_is(P("nope/a/../../link"), P("model"))); /* back to an existing symlink after a walk through new dirs */
    CHECK(canon_is(P("data.jsonl/out"), P("data.jsonl/out")));
    CHECK(canon_is("/", "/"));
    CHECK(canon_is("/..", "/"));
    /* a relative path: from the current directory */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(root) == 0);
    CHECK(canon_is("model", P("model")));
    CHECK(canon_is("./link/../model2/", P("model2")));
    CHECK(canon_is("x/y", P("x/y")));
    CHECK(chdir(cwd) == 0);
    ft_error e = {0};
    char *c = NULL;
    CHECK(ft_path_canon("", &c, &e) == FT_EINPUT && c == NULL);

    /* relations */
    CHECK(rel(P("model"), P("model")) == FT_PATH_SAME);
    CHECK(rel(P("model/run"), P("model")) == FT_PATH_INSIDE);
    CHECK(rel(P("model"), P("model/sub")) == FT_PATH_CONTAINS);
    CHECK(rel(root, P("data.jsonl")) == FT_PATH_CONTAINS);
    CHECK(rel(P("model"), P("model2")) == FT_PATH_APART); /* sibling with a common prefix */
    CHECK(rel(P("model2"), P("model")) == FT_PATH_APART);
    CHECK(rel(P("model2/run"), P("model")) == FT_PATH_APART);
    CHECK(rel(P("model"), P("other")) == FT_PATH_APART);
    CHECK(rel(P("link"), P("model")) == FT_PATH_SAME);                  /* symlinked */
    CHECK(rel(P("rel_link/out"), P("model")) == FT_PATH_INSIDE);        /* through a relative symlink */
    CHECK(rel(P("other/../model"), P("model")) == FT_PATH_SAME);        /* ".." spelling */
    CHECK(rel(P("other/../model/../model/run"), P("link")) == FT_PATH_INSIDE);
    CHECK(rel(P("fresh/out"), P("model")) == FT_PATH_APART);            /* non-existent output */
    CHECK(rel(P("link/fresh/out"), P("model")) == FT_PATH_INSIDE);      /* non-existent, under a symlink */
    CHECK(rel(P("data_link.jsonl"), P("data.jsonl")) == FT_PATH_SAME);  /* a file */
    CHECK(rel(P("data.jsonl/out"), P("data.jsonl")) == FT_PATH_INSIDE); /* "inside" a file */
    CHECK(rel("/", P("model")) == FT_PATH_CONTAINS);
    CHECK(rel(P("model"), "/") == FT_PATH_INSIDE);

    /* the guard: FT_EINPUT naming both paths and what each is */
    char *pm = strdup(P("model")), *pd = strdup(P("data.jsonl")), *po = strdup(P("other"));
    ft_path_input in[4] = {{pm, "model directory"}, {NULL, "unused"}, {pd, "data file"}, {po, "tokenizer directory"}};
    memset(&e, 0, sizeof e);
    CHECK(ft_path_guard_output(P("model2"), "output_dir", in, 4, &e) == FT_OK);
    CHECK(ft_path_guard_output(P("fresh"), "output_dir", in, 4, &e) == FT_OK);
    CHECK(ft_path_guard_output(P("model"), "output_dir", in, 4, &e) == FT_EINPUT);
    char want[2048];
    snprintf(want, sizeof want,
             "output_dir %s is the model directory %s (it would be overwritten); choose another output_dir", P("model"),
             P("model"));
    CHECK_MSG(strcmp(e.msg, want) == 0, "%s", e.msg);
    CHECK(ft_path_guard_output(P("link"), "output_dir", in, 4, &e) == FT_EINPUT);
    snprintf(want, sizeof want, "output_dir %s (%s) is the model directory %s", P("link"), P("model"), P("model"));
    CHECK_MSG(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    CHECK(ft_path_guard_output(P("model/run"), "output_dir", in, 4, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "lies inside the model directory") != NULL, "%s", e.msg);
    CHECK(ft_path_guard_output(root, "output_dir", in, 4, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "contains the model directory") != NULL, "%s", e.msg);
    CHECK(ft_path_guard_output(P("data_link.jsonl"), "--out", in, 4, &e) == FT_EINPUT);
    snprintf(want, sizeof want, "--out %s (%s) is the data file %s", P("data_link.jsonl"), P("data.jsonl"),
             P("data.jsonl"));
    CHECK_MSG(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    CHECK_MSG(strstr(e.msg, "choose another --out") != NULL, "%s", e.msg);
    CHECK(ft_path_guard_output(P("other/x/.."), "output_dir", in, 4, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "is the tokenizer directory") != NULL, "%s", e.msg);
    CHECK(ft_path_guard_output(P("x"), "output_dir", in, 0, &e) == FT_OK);

    free(pm), free(pd), free(po);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
