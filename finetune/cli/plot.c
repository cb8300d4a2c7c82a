/* finetune plot RUN_DIR [--out FILE.svg]: draw a run's metrics.jsonl as an SVG.
 *
 * Panels (each only when its series exist): loss (training loss, its moving
 * average when noisy, eval loss as markers), learning rate, gradient norm,
 * DPO reward accuracy, DPO reward margins (+ chosen / rejected rewards), classification accuracy (train and
 * eval) and reward-model margins (finetune classify).
 * Hand-written SVG, no dependencies; non-finite values (null) break a line. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "finetune/base/paths.h"
#include "finetune/cli/cli.h"

typedef struct {
    char *key;
    double *x, *y;
    size_t n, cap;
} pl_series;

typedef struct {
    pl_series *s;
    size_t n, cap;
    size_t records;
} pl_data;

static pl_series *pl_get(pl_data *d, const char *key, int create) {
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->s[i].key, key) == 0) return &d->s[i];
    if (!create) return NULL;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 16;
        d->s = ft_xrealloc(d->s, d->cap * sizeof *d->s);
    }
    pl_series *s = &d->s[d->n++];
    memset(s, 0, sizeof *s);
    s->key = ft_xstrdup(key);
    return s;
}

static void pl_push(pl_series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = ft_xrealloc(s->x, s->cap * sizeof *s->x);
        s->y = ft_xrealloc(s->y, s->cap * sizeof *s->y);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void pl_free(pl_data *d) {
    for (size_t i = 0; i < d->n; i++) {
        free(d->s[i].key);
        free(d->s[i].x);
        free(d->s[i].y);
    }
    free(d->s);
}

static int pl_read(const char *path, pl_data *d, ft_error *e) {
    char *text;
    int rc = ft_read_file(path, &text, NULL, e);
    if (rc) return rc;
    char *p = text;
    int line = 0;
    while (*p) {
        line++;
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (*q) {
            cJSON *o = cJSON_Parse(q);
            cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
            if (!cJSON_IsObject(o)) {
                cJSON_Delete(o);
                free(text);
                return ft_fail(e, FT_EINPUT, "%s:%d: not a JSON object (a metrics file has one object per line)", path,
                               line);
            }
            if (!cJSON_IsNumber(st)) {
                cJSON_Delete(o);
                free(text);
                return ft_fail(e, FT_EINPUT, "%s:%d: record has no numeric \"step\"", path, line);
            }
            for (cJSON *it = o->child; it; it = it->next) {
                if (it == st) continue;
                if (cJSON_IsNumber(it))
                    pl_push(pl_get(d, it->string, 1), st->valuedouble, it->valuedouble);
                else if (cJSON_IsNull(it))
                    pl_push(pl_get(d, it->string, 1), st->valuedouble, NAN);
            }
            d->records++;
            cJSON_Delete(o);
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(text);
    if (d->records == 0) return ft_fail(e, FT_EINPUT, "%s: no records (the file is empty)", path);
    return FT_OK;
}

/* ---------- drawing ---------- */

#define PL_W 960
#define PL_PH 300 /* panel height incl. gaps */
#define PL_L 90
#define PL_R 200
#define PL_T 34
#define PL_B 44

typedef struct {
    const pl_series *s;
    const char *label;
    const char *color;
    int markers;  /* circles at each point */
    int faint;    /* thin and translucent (raw noisy series under its average) */
} pl_line;

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10, floor(log10(raw))), r = raw / mag;
    double n = r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10;
    return n * mag;
}

static void fmt_tick(char *b, size_t n, double v, double step, double maxabs) {
    if (fabs(v) < step * 1e-9) v = 0;
    if (maxabs >= 1e5 || (maxabs < 1e-2 && maxabs > 0)) {
        /* 1e-05 style for learning rates: enough digits to tell neighbouring ticks apart */
        int prec = (int)(floor(log10(maxabs)) - floor(log10(step))) + 1;
        snprintf(b, n, "%.*g", prec < 1 ? 1 : prec > 6 ? 6 : prec, v);
        return;
    }
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(b, n, "%.*f", dec, v);
}

static void range_of(const pl_line *L, int nl, double *lo, double *hi, int xaxis) {
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < nl; i++)
        for (size_t k = 0; k < L[i].s->n; k++) {
            double v = xaxis ? L[i].s->x[k] : L[i].s->y[k];
            if (!isfinite(v)) continue;
            if (v < *lo) *lo = v;
            if (v > *hi) *hi = v;
        }
}

static void axis_bounds(double *lo, double *hi, double *step, int integer) {
    if (!isfinite(*lo)) {
        *lo = 0;
        *hi = 1;
    }
    if (*hi - *lo <= 0) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= pad;
        *hi += pad;
    }
    *step = nice_step(*hi - *lo, 5);
    if (integer && *step < 1) *step = 1;
    *lo = floor(*lo / *step + 1e-9) * *step;
    *hi = ceil(*hi / *step - 1e-9) * *step;
}

static void draw_panel(FILE *f, int top, const char *title, const char *ylabel, const pl_line *L, int nl,
                       double xlo, double xhi, double xstep, int fixed01) {
    int x0 = PL_L, x1 = PL_W - PL_R, y0 = top + PL_T, y1 = top + PL_PH - PL_B;
    double ylo, yhi, ystep;
    range_of(L, nl, &ylo, &yhi, 0);
    if (fixed01) {
        ylo = fmin(0, isfinite(ylo) ? ylo : 0);
        yhi = fmax(1, isfinite(yhi) ? yhi : 1);
    }
    axis_bounds(&ylo, &yhi, &ystep, 0);
#define PX(v) (x0 + ((v) - xlo) / (xhi - xlo) * (x1 - x0))
#define PY(v) (y1 - ((v) - ylo) / (yhi - ylo) * (y1 - y0))
    fprintf(f, "<g class=\"panel\">\n<text x=\"%d\" y=\"%d\" font-size=\"15\" font-weight=\"bold\">", x0, top + 22);
    xml_text(f, title);
    fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#444\"/>\n", x0, y0,
            x1 - x0, y1 - y0);
    double maxabs = fmax(fabs(ylo), fabs(yhi));
    for (double v = ylo; v <= yhi + ystep * 1e-6; v += ystep) {
        char b[32];
        fmt_tick(b, sizeof b, v, ystep, maxabs);
        double y = PY(v);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>", x0, y, x1, y);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#444\"/>", x0 - 5, y, x0, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%s</text>\n", x0 - 8, y + 4, b);
    }
    for (double v = xlo; v <= xhi + xstep * 1e-6; v += xstep) {
        char b[32];
        fmt_tick(b, sizeof b, v, xstep, 1);
        double x = PX(v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>", x, y0, x, y1);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#444\"/>", x, y1, x, y1 + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n", x, y1 + 19, b);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">step</text>\n", (x0 + x1) / 2, y1 + 36);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %d %d)\">", 22,
            (y0 + y1) / 2, 22, (y0 + y1) / 2);
    xml_text(f, ylabel);
    fputs("</text>\n", f);
    /* series, clipped to the plot area */
    fprintf(f, "<clipPath id=\"c%d\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/></clipPath>\n", top, x0 - 4,
            y0 - 4, x1 - x0 + 8, y1 - y0 + 8);
    fprintf(f, "<g clip-path=\"url(#c%d)\">\n", top);
    for (int i = 0; i < nl; i++) {
        const pl_series *s = L[i].s;
        int open = 0;
        for (size_t k = 0; k <= s->n; k++) {
            int ok = k < s->n && isfinite(s->y[k]);
            if (ok && !open) {
                fprintf(f, "<polyline class=\"series\" data-key=\"");
                xml_text(f, L[i].label);
                fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s stroke-linejoin=\"round\" points=\"",
                        L[i].color, L[i].faint ? "1" : "2", L[i].faint ? " stroke-opacity=\"0.35\"" : "");
                open = 1;
            }
            if (ok) fprintf(f, "%.1f,%.1f ", PX(s->x[k]), PY(s->y[k]));
            if (!ok && open) {
                fputs("\"/>\n", f);
                open = 0;
            }
        }
        if (L[i].markers)
            for (size_t k = 0; k < s->n; k++)
                if (isfinite(s->y[k]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"#fff\"/>\n", PX(s->x[k]),
                            PY(s->y[k]), L[i].color);
    }
    fputs("</g>\n", f);
    /* legend */
    for (int i = 0; i < nl; i++) {
        int ly = y0 + 12 + 22 * i;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"%s\"%s/>", x1 + 14, ly,
                x1 + 40, ly, L[i].color, L[i].faint ? "1" : "2.5", L[i].faint ? " stroke-opacity=\"0.5\"" : "");
        if (L[i].markers) fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"%s\"/>", x1 + 27, ly, L[i].color);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\">", x1 + 46, ly + 4);
        xml_text(f, L[i].label);
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
#undef PX
#undef PY
}

/* Exponential moving average (finite values only), for a readable trend of a noisy loss. */
static pl_series ema(const pl_series *s, double alpha) {
    pl_series r = {0};
    r.key = NULL;
    r.x = ft_xmalloc((s->n ? s->n : 1) * sizeof *r.x);
    r.y = ft_xmalloc((s->n ? s->n : 1) * sizeof *r.y);
    double m = NAN;
    for (size_t k = 0; k < s->n; k++) {
        if (isfinite(s->y[k])) m = isnan(m) ? s->y[k] : alpha * m + (1 - alpha) * s->y[k];
        r.x[k] = s->x[k];
        r.y[k] = isfinite(s->y[k]) ? m : NAN;
    }
    r.n = r.cap = s->n;
    return r;
}

static int render(FILE *f, const pl_data *d, const char *title, ft_error *e) {
    const pl_series *loss = pl_get((pl_data *)d, "loss", 0), *eval = pl_get((pl_data *)d, "eval_loss", 0),
                    *lr = pl_get((pl_data *)d, "lr", 0), *gn = pl_get((pl_data *)d, "grad_norm", 0),
                    *acc = pl_get((pl_data *)d, "rewards/accuracies", 0),
                    *mar = pl_get((pl_data *)d, "rewards/margins", 0),
                    *ch = pl_get((pl_data *)d, "rewards/chosen", 0), *rj = pl_get((pl_data *)d, "rewards/rejected", 0),
                    /* finetune classify: accuracy (reward models: reward accuracy) and reward margins */
                    *cacc = pl_get((pl_data *)d, "accuracy", 0), *eacc = pl_get((pl_data *)d, "eval_accuracy", 0),
                    *cmar = pl_get((pl_data *)d, "margin", 0), *emar = pl_get((pl_data *)d, "eval_margin", 0);
    int panels = (loss || eval) + !!lr + !!gn + !!acc + (mar || ch || rj) + (cacc || eacc) + (cmar || emar);
    if (!panels)
        return ft_fail(e, FT_EINPUT, "no plottable series: expected one of loss, eval_loss, lr, grad_norm, rewards/*, accuracy, margin");
    /* a shared step axis for every panel */
    double xlo = INFINITY, xhi = -INFINITY, xstep;
    for (size_t i = 0; i < d->n; i++)
        for (size_t k = 0; k < d->s[i].n; k++) {
            xlo = fmin(xlo, d->s[i].x[k]);
            xhi = fmax(xhi, d->s[i].x[k]);
        }
    axis_bounds(&xlo, &xhi, &xstep, 1);
    int H = 50 + panels * PL_PH;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
            PL_W, H, PL_W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n<title>");
    xml_text(f, title);
    fprintf(f, "</title>\n<text x=\"%d\" y=\"30\" font-size=\"18\" font-weight=\"bold\">", PL_L);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    int top = 44;
    pl_series smooth = {0};
    if (loss || eval) {
        pl_line L[3];
        int n = 0;
        if (loss && loss->n > 50) {
            smooth = ema(loss, 0.9);
            L[n++] = (pl_line){loss, "loss", "#1f77b4", 0, 1};
            L[n++] = (pl_line){&smooth, "loss (moving avg)", "#1f77b4", 0, 0};
        } else if (loss) {
            L[n++] = (pl_line){loss, "loss", "#1f77b4", loss->n <= 30, 0};
        }
        if (eval) L[n++] = (pl_line){eval, "eval loss", "#ff7f0e", 1, 0};
        draw_panel(f, top, "Loss", "loss", L, n, xlo, xhi, xstep, 0);
        top += PL_PH;
    }
    if (lr) {
        pl_line L[1] = {{lr, "learning rate", "#2ca02c", 0, 0}};
        draw_panel(f, top, "Learning rate", "lr", L, 1, xlo, xhi, xstep, 0);
        top += PL_PH;
    }
    if (gn) {
        pl_line L[1] = {{gn, "grad norm", "#9467bd", 0, 0}};
        draw_panel(f, top, "Gradient norm (before clipping)", "grad norm", L, 1, xlo, xhi, xstep, 0);
        top += PL_PH;
    }
    if (acc) {
        pl_line L[1] = {{acc, "rewards/accuracies", "#d62728", 0, 0}};
        draw_panel(f, top, "DPO reward accuracy", "accuracy", L, 1, xlo, xhi, xstep, 1);
        top += PL_PH;
    }
    if (mar || ch || rj) {
        pl_line L[3];
        int n = 0;
        if (mar) L[n++] = (pl_line){mar, "rewards/margins", "#8c564b", 0, 0};
        if (ch) L[n++] = (pl_line){ch, "rewards/chosen", "#17becf", 0, 0};
        if (rj) L[n++] = (pl_line){rj, "rewards/rejected", "#e377c2", 0, 0};
        draw_panel(f, top, "DPO rewards", "reward", L, n, xlo, xhi, xstep, 0);
        top += PL_PH;
    }
    if (cacc || eacc) {
        pl_line L[2];
        int n = 0;
        if (cacc) L[n++] = (pl_line){cacc, "accuracy", "#d62728", cacc->n <= 30, 0};
        if (eacc) L[n++] = (pl_line){eacc, "eval accuracy", "#ff7f0e", 1, 0};
        draw_panel(f, top, "Classification accuracy", "accuracy", L, n, xlo, xhi, xstep, 1);
        top += PL_PH;
    }
    if (cmar || emar) {
        pl_line L[2];
        int n = 0;
        if (cmar) L[n++] = (pl_line){cmar, "margin", "#8c564b", cmar->n <= 30, 0};
        if (emar) L[n++] = (pl_line){emar, "eval margin", "#ff7f0e", 1, 0};
        draw_panel(f, top, "Reward margin (chosen - rejected)", "reward", L, n, xlo, xhi, xstep, 0);
        top += PL_PH;
    }
    fputs("</svg>\n", f);
    free(smooth.x);
    free(smooth.y);
    return FT_OK;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: finetune plot RUN_DIR [--out FILE.svg]\n\n"
            "Draw RUN_DIR/metrics.jsonl as an SVG: loss (and eval loss), learning rate, gradient\n"
            "norm and, for DPO runs, reward accuracy and margins, all against the step.\n\n"
            "  RUN_DIR          a run directory (or a metrics.jsonl file)\n"
            "  --out FILE.svg   where to write (default RUN_DIR/metrics.svg)\n");
}

int cmd_plot(int argc, char **argv) {
    const char *run = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "-o") == 0) {
            if (i + 1 >= argc) return cli_usage_error("plot", "%s needs a file name", argv[i]);
            out = argv[++i];
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            out = argv[i] + 6;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("plot", "unknown option '%s'", argv[i]);
        } else if (!run) {
            run = argv[i];
        } else {
            return cli_usage_error("plot", "unexpected argument '%s' (one run directory)", argv[i]);
        }
    }
    if (!run) return cli_usage_error("plot", "missing RUN_DIR");
    struct stat st;
    int is_file = stat(run, &st) == 0 && S_ISREG(st.st_mode);
    char *metrics = is_file ? ft_xstrdup(run) : ft_path_join(run, "metrics.jsonl");
    char *outp = NULL;
    if (out) {
        outp = ft_xstrdup(out);
    } else if (is_file) {
        size_t n = strlen(run);
        outp = ft_xmalloc(n + 5);
        memcpy(outp, run, n + 1);
        char *dot = strrchr(outp, '.');
        if (dot && !strchr(dot, '/')) *dot = 0;
        strcat(outp, ".svg");
    } else {
        outp = ft_path_join(run, "metrics.svg");
    }
    ft_error e = {0};
    pl_data d = {0};
    int rc = FT_OK;
    if (!is_file && !ft_file_exists(metrics))
        rc = ft_fail(&e, FT_EINPUT, "%s: no such file (is '%s' a run directory?)", metrics, run);
    if (rc == FT_OK) {
        const ft_path_input in = {metrics, "metrics file"};
        rc = ft_path_guard_output(outp, "--out", &in, 1, &e);
    }
    if (rc == FT_OK) rc = pl_read(metrics, &d, &e);
    char *buf = NULL;
    size_t len = 0;
    if (rc == FT_OK) {
        FILE *f = open_memstream(&buf, &len);
        if (!f) {
            rc = ft_fail(&e, FT_ENOMEM, "out of memory");
        } else {
            char title[1200];
            snprintf(title, sizeof title, "finetune run: %s", run);
            rc = render(f, &d, title, &e);
            fclose(f);
            if (rc) ft_error_prefix(&e, "%s", metrics);
        }
    }
    if (rc == FT_OK) rc = ft_write_file_atomic(outp, buf, len, &e);
    if (rc == FT_OK) printf("wrote %s (%zu records from %s)\n", outp, d.records, metrics);
    free(buf);
    pl_free(&d);
    free(metrics);
    free(outp);
    return rc ? cli_report("plot", &e) : 0;
}
