#define _DEFAULT_SOURCE /* setenv */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "finetune/train/trainer.h"

int cli_report(const char *cmd, const ft_error *e) {
    fprintf(stderr, "finetune %s: %s\n", cmd, e->msg[0] ? e->msg : "failed");
    return e->code ? e->code : 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "finetune %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'finetune %s --help')\n", cmd);
    return FT_EINPUT;
}

int cli_is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

int cli_parse_ids(const char *s, int32_t **ids, size_t *n, ft_error *e) {
    size_t cap = 16, len = 0;
    int32_t *v = ft_xmalloc(cap * sizeof *v);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return ft_fail(e, FT_EINPUT, "token ids '%s': expected comma-separated non-negative integers", s);
        }
        if (len == cap) v = ft_xrealloc(v, (cap *= 2) * sizeof *v);
        v[len++] = (int32_t)x;
        p = end;
        if (*p == ',') {
            p++;
            if (!*p) break;
        } else if (*p) {
            free(v);
            return ft_fail(e, FT_EINPUT, "token ids '%s': unexpected '%c'", s, *p);
        }
    }
    if (len == 0) {
        free(v);
        return ft_fail(e, FT_EINPUT, "token ids: the list is empty");
    }
    *ids = v;
    *n = len;
    return FT_OK;
}

int cli_parse_int(const char *name, const char *s, long lo, long hi, long *out, ft_error *e) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi)
        return ft_fail(e, FT_EINPUT, "%s %s: expected an integer in [%ld, %ld]", name, s, lo, hi);
    *out = x;
    return FT_OK;
}

int cli_parse_float(const char *name, const char *s, double *out, ft_error *e) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno) return ft_fail(e, FT_EINPUT, "%s %s: expected a number", name, s);
    *out = x;
    return FT_OK;
}

int cli_is_one_of(const char *arg, const char *const *names) {
    for (; *names; names++)
        if (strcmp(arg, *names) == 0) return 1;
    return 0;
}

int cli_load_model(const char *dir, ft_backend *b, const char *precision, ft_model **out, ft_error *e) {
    ft_dtype dt;
    int rc = trainer_compute_dtype(precision, b, &dt, e);
    if (!rc) rc = model_load_frozen(dir, b, 0, dt, out, e);
    if (!rc && (*out)->nonfinite.values) {
        char d[1024];
        model_nonfinite_describe(&(*out)->nonfinite, d, sizeof d);
        fprintf(stderr, "warning: %s: the weights hold %s; outputs computed from them may be NaN or meaningless\n",
                dir, d);
    }
    return rc;
}

static const char *const DIST_OPTS[] = {"--nproc", "--master-addr", "--master-port", "--dist-timeout", NULL};

int cli_parse_job_args(const char *cmd, const char *help, int argc, char **argv, job_args *a) {
    memset(a, 0, sizeof *a);
    a->argc = argc;
    a->argv = argv;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            fputs(help, stdout);
            return 0;
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            a->dry_run = 1;
        } else if (strcmp(argv[i], "--resume") == 0) {
            a->resume = 1;
        } else if (cli_is_one_of(argv[i], DIST_OPTS)) { /* data parallelism: the values reach dist_init by env */
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value", argv[i]);
            const char *opt = argv[i], *v = argv[++i];
            long n = 0;
            double t = 0;
            ft_error e = {0};
            if (strcmp(opt, "--nproc") == 0) {
                if (cli_parse_int(opt, v, 1, 4096, &n, &e)) return cli_report(cmd, &e);
                a->nproc = (int)n;
            } else if (strcmp(opt, "--master-port") == 0) {
                if (cli_parse_int(opt, v, 1, 65535, &n, &e)) return cli_report(cmd, &e);
                setenv("MASTER_PORT", v, 1);
            } else if (strcmp(opt, "--dist-timeout") == 0) {
                if (cli_parse_float(opt, v, &t, &e) || !(t > 0))
                    return cli_usage_error(cmd, "--dist-timeout %s: expected seconds > 0", v);
                setenv("FT_DIST_TIMEOUT", v, 1);
            } else {
                setenv("MASTER_ADDR", v, 1);
            }
        } else if (argv[i][0] == '-') {
            return cli_usage_error(cmd, "unknown option %s", argv[i]);
        } else if (!strchr(argv[i], '=')) {
            if (a->recipe) return cli_usage_error(cmd, "unexpected argument %s (overrides are key=value)", argv[i]);
            a->recipe = argv[i];
        }
    }
    if (!a->recipe) return cli_usage_error(cmd, "missing RECIPE.json");
    if (a->nproc > 0) return cli_launch(cmd, a); /* the ranks parse the same line again, without --nproc */
    return -1;
}
