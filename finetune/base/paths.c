#define _GNU_SOURCE /* realpath */
#include "finetune/base/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ft_path_canon(const char *path, char **out, ft_error *e) {
    *out = NULL;
    if (!path || !path[0]) return ft_fail(e, FT_EINPUT, "an empty path");
    char *abs;
    if (path[0] == '/') {
        abs = ft_xstrdup(path);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) return ft_fail(e, FT_EIO, "%s: cannot resolve a relative path: getcwd: %s", path, strerror(errno));
        abs = ft_path_join(cwd, path);
        free(cwd);
    }
    /* walk the components (empty ones, from // or a trailing /, dropped) as mkdir -p and open would: each
     * step that exists is resolved by realpath() (symlinks followed), one that does not is taken as
     * spelled; ".." goes to the parent of what the walk has reached so far, which is always canonical */
    char *cur = ft_xmalloc(strlen(abs) + PATH_MAX + 2);
    strcpy(cur, "/");
    for (char *tok = strtok(abs, "/"); tok; tok = strtok(NULL, "/")) {
        if (strcmp(tok, ".") == 0) continue;
        if (strcmp(tok, "..") == 0) {
            char *slash = strrchr(cur, '/');
            if (slash == cur) cur[1] = 0; /* "/x" -> "/", "/" stays */
            else *slash = 0;
            continue;
        }
        if (strcmp(cur, "/") != 0) strcat(cur, "/");
        strcat(cur, tok);
        char *r = realpath(cur, NULL);
        if (r) {
            strcpy(cur, r); /* a canonical path is never longer than PATH_MAX */
            free(r);
        }
    }
    free(abs);
    *out = cur;
    return FT_OK;
}

/* 1 when canonical a lies strictly inside canonical b. */
static int lies_inside(const char *a, const char *b) {
    size_t nb = strlen(b);
    if (strcmp(b, "/") == 0) return strcmp(a, "/") != 0;
    return strncmp(a, b, nb) == 0 && a[nb] == '/';
}

static ft_path_rel relation(const char *a, const char *b) {
    if (strcmp(a, b) == 0) return FT_PATH_SAME;
    if (lies_inside(a, b)) return FT_PATH_INSIDE;
    if (lies_inside(b, a)) return FT_PATH_CONTAINS;
    return FT_PATH_APART;
}

int ft_path_relation(const char *a, const char *b, ft_path_rel *rel, ft_error *e) {
    char *ca = NULL, *cb = NULL;
    int rc = ft_path_canon(a, &ca, e);
    if (!rc) rc = ft_path_canon(b, &cb, e);
    if (!rc) *rel = relation(ca, cb);
    free(ca);
    free(cb);
    return rc;
}

int ft_path_guard_output(const char *out, const char *out_what, const ft_path_input *in, int n, ft_error *e) {
    char *co = NULL;
    int rc = ft_path_canon(out, &co, e);
    if (rc) return ft_error_prefix(e, "%s", out_what);
    for (int i = 0; i < n && !rc; i++) {
        if (!in[i].path) continue;
        char *ci = NULL;
        rc = ft_path_canon(in[i].path, &ci, e);
        if (rc) {
            ft_error_prefix(e, "%s", in[i].what);
            break;
        }
        ft_path_rel r = relation(co, ci);
        if (r != FT_PATH_APART) {
            static const char *const VERB[] = {"", "is", "lies inside", "contains"};
            static const char *const WHY[] = {"", "it would be overwritten",
                                              "writing there would change an input",
                                              "its files could be overwritten"};
            char ob[PATH_MAX + 8] = "", ib[PATH_MAX + 8] = "";
            if (strcmp(out, co) != 0) snprintf(ob, sizeof ob, " (%s)", co);
            if (strcmp(in[i].path, ci) != 0) snprintf(ib, sizeof ib, " (%s)", ci);
            rc = ft_fail(e, FT_EINPUT, "%s %s%s %s the %s %s%s (%s); choose another %s", out_what, out, ob, VERB[r],
                         in[i].what, in[i].path, ib, WHY[r], out_what);
        }
        free(ci);
    }
    free(co);
    return rc;
}
