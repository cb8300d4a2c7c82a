#include "finetune/train/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---------- metrics.jsonl ---------- */

struct mx_log {
    FILE *f;
    char *path;
    int64_t step;
    char **keys;
    double *vals;
    size_t n, cap;
};

int mx_truncate_file(const char *path, int64_t max_step, ft_error *e) {
    if (!ft_file_exists(path)) return FT_OK;
    char *text;
    size_t len;
    int rc = ft_read_file(path, &text, &len, e);
    if (rc) return rc;
    char *out = ft_xmalloc(len + 1);
    size_t olen = 0;
    char *p = text;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (!nl) break; /* a torn last line (killed mid-write) */
        *nl = 0;
        cJSON *o = cJSON_Parse(p);
        cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)max_step) {
            size_t n = (size_t)(nl - p);
            memcpy(out + olen, p, n);
            out[olen + n] = '\n';
            olen += n + 1;
        }
        cJSON_Delete(o);
        p = nl + 1;
    }
    free(text);
    rc = ft_write_file_atomic(path, out, olen, e);
    free(out);
    return rc;
}

int mx_open(const char *run_dir, int64_t resume_step, mx_log **out, ft_error *e) {
    *out = NULL;
    int rc = ft_mkdir_p(run_dir, e);
    if (rc) return rc;
    char *path = ft_path_join(run_dir, "metrics.jsonl");
    /* never truncated in place: a resume rewrites the kept records beside and renames, a fresh run
     * replaces any old file by an empty one the same way; then the run appends */
    rc = resume_step >= 0 ? mx_truncate_file(path, resume_step, e) : ft_write_file_atomic(path, "", 0, e);
    if (rc) {
        free(path);
        return rc;
    }
    FILE *f = fopen(path, "a");
    if (!f) {
        rc = ft_fail(e, FT_EIO, "%s: cannot open for writing: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    mx_log *m = ft_xcalloc(1, sizeof *m);
    m->f = f;
    m->path = path;
    *out = m;
    return FT_OK;
}

static void clear_record(mx_log *m) {
    for (size_t i = 0; i < m->n; i++) free(m->keys[i]);
    m->n = 0;
}

void mx_close(mx_log *m) {
    if (!m) return;
    fclose(m->f);
    clear_record(m);
    free(m->keys);
    free(m->vals);
    free(m->path);
    free(m);
}

void mx_begin(mx_log *m, int64_t step) {
    if (!m) return; /* no log (a data-parallel rank other than 0) */
    clear_record(m);
    m->step = step;
}

void mx_add(mx_log *m, const char *key, double v) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i], key) == 0) {
            m->vals[i] = v;
            return;
        }
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 16;
        m->keys = ft_xrealloc(m->keys, m->cap * sizeof *m->keys);
        m->vals = ft_xrealloc(m->vals, m->cap * sizeof *m->vals);
    }
    m->keys[m->n] = ft_xstrdup(key);
    m->vals[m->n++] = v;
}

static void put_key(FILE *f, const char *k) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)k; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

int mx_write(mx_log *m, ft_error *e) {
    if (!m) return FT_OK;
    fprintf(m->f, "{\"step\":%" PRId64, m->step);
    for (size_t i = 0; i < m->n; i++) {
        fputc(',', m->f);
        put_key(m->f, m->keys[i]);
        double v = m->vals[i];
        if (!isfinite(v))
            fputs(":null", m->f);
        else if (v == floor(v) && fabs(v) < 1e15)
            fprintf(m->f, ":%.0f", v);
        else
            fprintf(m->f, ":%.10g", v);
    }
    fputs("}\n", m->f);
    clear_record(m);
    if (fflush(m->f) != 0 || ferror(m->f)) return ft_fail_sys(e, errno, "%s: write failed", m->path);
    return FT_OK;
}

/* ---------- progress ---------- */

char *mx_format_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || !isfinite(s)) {
        snprintf(buf, n, "--");
        return buf;
    }
    long long t = (long long)(s + 0.5);
    if (t < 60)
        snprintf(buf, n, "%llds", t);
    else if (t < 3600)
        snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, n, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
    else
        snprintf(buf, n, "%lldd%02lldh", t / 86400, (t % 86400) / 3600);
    return buf;
}

static size_t cat(char *buf, size_t n, size_t k, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static size_t cat(char *buf, size_t n, size_t k, const char *fmt, ...) {
    if (k >= n) return k;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + k, n - k, fmt, ap);
    va_end(ap);
    if (w < 0) return k;
    k += (size_t)w;
    return k < n ? k : n - 1;
}

char *mx_format_progress(char *buf, size_t n, const mx_progress_info *p, double eta_s) {
    size_t k = 0;
    buf[0] = 0;
    if (p->total_steps > 0)
        k = cat(buf, n, k, "step %" PRId64 "/%" PRId64, p->step, p->total_steps);
    else
        k = cat(buf, n, k, "step %" PRId64, p->step);
    if (!isnan(p->loss)) k = cat(buf, n, k, " | loss %.4f", p->loss);
    if (!isnan(p->lr)) k = cat(buf, n, k, " | lr %.2e", p->lr);
    if (!isnan(p->grad_norm)) k = cat(buf, n, k, " | gnorm %.3g", p->grad_norm);
    for (int i = 0; i < p->n_extra; i++) {
        k = cat(buf, n, k, " | %s ", p->extra[i].label);
        char v[64];
        /* the caller's format is a literal chosen in code, never user input */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(v, sizeof v, p->extra[i].fmt ? p->extra[i].fmt : "%.4g", p->extra[i].value);
#pragma GCC diagnostic pop
        k = cat(buf, n, k, "%s", v);
    }
    if (!isnan(p->tokens_per_s)) k = cat(buf, n, k, " | %.0f tok/s", p->tokens_per_s);
    if (p->total_steps > 0) {
        char d[32];
        k = cat(buf, n, k, " | ETA %s", mx_format_duration(d, sizeof d, eta_s));
    }
    if (!isnan(p->mem_gib)) k = cat(buf, n, k, " | mem %.1f GiB", p->mem_gib);
    (void)k;
    return buf;
}

void mx_term_init(mx_term *t, FILE *out, int tty, int every) {
    memset(t, 0, sizeof *t);
    t->out = out;
    t->tty = tty >= 0 ? tty : isatty(fileno(out));
    t->every = every >= 1 ? every : 1;
    t->width = 0;
#ifdef TIOCGWINSZ
    struct winsize ws;
    if (t->tty && ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) t->width = ws.ws_col;
#endif
    if (!t->width) {
        const char *c = getenv("COLUMNS");
        t->width = c && atoi(c) > 20 ? atoi(c) : 120;
    }
}

void mx_progress(mx_term *t, const mx_progress_info *p) {
    double now = ft_now();
    if (!t->started) {
        t->started = 1;
        t->t0 = now;
        t->step0 = p->step;
    }
    double eta = -1;
    int64_t done = p->step - t->step0;
    if (p->total_steps > 0 && done > 0 && now > t->t0) eta = (double)(p->total_steps - p->step) * (now - t->t0) / (double)done;
    if (p->total_steps > 0 && p->step >= p->total_steps) eta = 0;
    char line[1024];
    mx_format_progress(line, sizeof line, p, eta);
    if (t->tty) {
        if (t->width > 1 && strlen(line) > (size_t)(t->width - 1)) line[t->width - 1] = 0;
        fprintf(t->out, "\r%s\033[K", line);
        t->live = 1;
    } else if (p->step % t->every == 0 || p->step == t->step0 || (p->total_steps > 0 && p->step >= p->total_steps)) {
        fprintf(t->out, "%s\n", line);
    }
    fflush(t->out);
}

void mx_print(mx_term *t, const char *fmt, ...) {
    if (t->live) fputs("\r\033[K", t->out);
    t->live = 0;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->out, fmt, ap);
    va_end(ap);
    fputc('\n', t->out);
    fflush(t->out);
}

void mx_term_finish(mx_term *t) {
    if (t->live) fputc('\n', t->out);
    t->live = 0;
    fflush(t->out);
}
