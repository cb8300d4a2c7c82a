/* csv: CSV records with libcsv (strict mode), streamed from a (gzipped) file or memory, with the line and
 * column where each field starts.
 *
 * libcsv reports a field when it reads the delimiter after it and a record at the line break that ends
 * it, and nothing else. So the bytes are handed to it in chunks that end at each ',', CR and LF: every
 * callback then fires at the last byte of a chunk, and the position just after a chunk that fired one is
 * where the next field starts. A chunk of line breaks alone between records (an empty line, the LF of a
 * CRLF) moves that start on too. */
#include "datasets/csv.h"

#include <csv.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "datasets/reader.h"

typedef struct csv_bfield {
    size_t off, len;
    long line, col;
} csv_bfield;

struct ds_csv {
    char *path;
    gzFile gz;
    const unsigned char *mem;
    size_t mem_len;
    unsigned char *buf;
    size_t pos, len;
    int eof, started, finished, can_continue;
    struct csv_parser p;
    long line, col;   /* position of the next unread byte */
    int prev_cr;
    long fline, fcol; /* where the next field starts */
    int fired, ended; /* a field / a record ended during the current chunk */
    int between;      /* between records (or before the first) */
    size_t rec_bytes; /* bytes of the current record so far */
    int nomem;
    /* the record being built, then handed out */
    char *data;
    size_t dlen, dcap;
    csv_bfield *bf;
    int nbf, cbf, ready;
    ds_csv_field *out;
    int cout;
    ds_csv_row row;
    /* header */
    char **cols;
    int ncols;
};

#define CSV_BUF (1 << 16)

static void on_field(void *s, size_t len, void *data) {
    ds_csv *r = data;
    r->fired = 1;
    if (r->dlen + len + 1 > r->dcap) {
        size_t cap = r->dcap ? r->dcap : 4096;
        while (cap < r->dlen + len + 1) cap *= 2;
        char *d = realloc(r->data, cap);
        if (!d) {
            r->nomem = 1;
            return;
        }
        r->data = d;
        r->dcap = cap;
    }
    if (r->nbf == r->cbf) {
        r->cbf = r->cbf ? r->cbf * 2 : 16;
        r->bf = ft_xrealloc(r->bf, (size_t)r->cbf * sizeof *r->bf);
    }
    csv_bfield *f = &r->bf[r->nbf++];
    f->off = r->dlen;
    f->len = len;
    f->line = r->fline;
    f->col = r->fcol;
    if (len) memcpy(r->data + r->dlen, s, len);
    r->dlen += len;
    r->data[r->dlen++] = 0;
}

static void on_record(int c, void *data) {
    (void)c;
    ds_csv *r = data;
    r->fired = 1;
    r->ended = 1;
    r->ready = 1;
}

static int no_space(unsigned char c) {
    (void)c;
    return 0;
}

static void advance(ds_csv *r, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '\n') {
            if (!r->prev_cr) r->line++;
            r->col = 1;
            r->prev_cr = 0;
        } else if (c == '\r') {
            r->line++;
            r->col = 1;
            r->prev_cr = 1;
        } else {
            r->prev_cr = 0;
            if ((c & 0xC0) != 0x80) r->col++;
        }
    }
}

static int fill(ds_csv *r, ft_error *e) {
    r->pos = 0;
    r->len = 0;
    if (r->mem) {
        size_t n = r->mem_len > CSV_BUF ? CSV_BUF : r->mem_len;
        memcpy(r->buf, r->mem, n);
        r->mem += n;
        r->mem_len -= n;
        r->len = n;
    } else {
        int n = gzread(r->gz, r->buf, CSV_BUF);
        if (n < 0) {
            int err;
            const char *m = gzerror(r->gz, &err);
            r->finished = 1;
            return ft_fail(e, FT_EIO, "%s:%ld: read failed: %s", r->path, r->line, m ? m : "gzip error");
        }
        r->len = (size_t)n;
    }
    if (r->len == 0) r->eof = 1;
    if (!r->started) {
        r->started = 1;
        if (r->len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) r->pos = 3; /* UTF-8 BOM */
    }
    return FT_OK;
}

static int fatal(ds_csv *r, ft_error *e, int code, const char *detail) {
    r->finished = 1;
    r->can_continue = 0;
    if (code == FT_ENOMEM) return ft_fail(e, code, "%s:%ld: out of memory reading a CSV record", r->path, r->fline);
    return ft_fail(e, code, "%s:%ld:%ld: %s", r->path, r->fline, r->fcol, detail);
}

/* Feed chunks until a record is complete or the file ends. */
static int feed(ds_csv *r, ft_error *e) {
    r->nbf = 0;
    r->dlen = 0;
    r->ready = 0;
    while (!r->ready && !r->finished) {
        if (r->pos >= r->len) {
            if (!r->eof && fill(r, e)) return e->code;
            if (r->pos >= r->len && r->eof) {
                r->fired = r->ended = 0;
                if (csv_fini(&r->p, on_field, on_record, r) != 0) {
                    int err = csv_error(&r->p);
                    if (err == CSV_EPARSE)
                        return fatal(r, e, FT_EINPUT, "a quoted field is not closed before the end of the file");
                    return fatal(r, e, err == CSV_ENOMEM ? FT_ENOMEM : FT_EINPUT, csv_strerror(err));
                }
                if (r->nomem) return fatal(r, e, FT_ENOMEM, NULL);
                r->finished = 1;
                break;
            }
            continue;
        }
        size_t end = r->pos;
        int all_breaks = 1;
        while (end < r->len) {
            unsigned char c = r->buf[end++];
            if (c == ',' || c == '\r' || c == '\n') break;
            all_breaks = 0;
        }
        unsigned char last = r->buf[end - 1];
        if (last != '\r' && last != '\n') all_breaks = 0;
        size_t n = end - r->pos;
        r->fired = r->ended = 0;
        size_t k = csv_parse(&r->p, r->buf + r->pos, n, on_field, on_record, r);
        if (r->nomem) return fatal(r, e, FT_ENOMEM, NULL);
        if (k < n) {
            int err = csv_error(&r->p);
            if (err == CSV_ENOMEM || err == CSV_ETOOBIG) return fatal(r, e, FT_ENOMEM, NULL);
            advance(r, r->buf + r->pos, k);
            char d[200];
            snprintf(d, sizeof d,
                     "malformed CSV quoting in the field starting here, at line %ld, column %ld (a quote inside "
                     "an unquoted field, or text after a closing quote)",
                     r->line, r->col);
            return fatal(r, e, FT_EINPUT, d);
        }
        advance(r, r->buf + r->pos, n);
        r->pos = end;
        r->rec_bytes += n;
        if (!all_breaks) r->between = 0;
        if (r->ended) {
            r->between = 1;
            r->rec_bytes = 0;
        }
        if (r->fired || (r->between && all_breaks)) {
            r->fline = r->line;
            r->fcol = r->col;
        }
        if (r->rec_bytes > DS_MAX_RECORD) {
            char d[128];
            snprintf(d, sizeof d, "record longer than %u bytes (a quote left open?)", DS_MAX_RECORD);
            if (r->nbf) r->fline = r->bf[0].line, r->fcol = r->bf[0].col; /* where the record starts */
            return fatal(r, e, FT_EINPUT, d);
        }
    }
    if (!r->ready) return FT_OK;
    if (r->cout < r->nbf) {
        r->cout = r->nbf;
        r->out = ft_xrealloc(r->out, (size_t)r->cout * sizeof *r->out);
    }
    for (int i = 0; i < r->nbf; i++) {
        r->out[i].s = r->data + r->bf[i].off;
        r->out[i].len = r->bf[i].len;
        r->out[i].line = r->bf[i].line;
        r->out[i].col = r->bf[i].col;
    }
    r->row.n = r->nbf;
    r->row.f = r->out;
    r->row.line = r->nbf ? r->bf[0].line : r->line;
    return FT_OK;
}

static int read_header(ds_csv *r, ft_error *e) {
    int rc = feed(r, e);
    if (rc) return rc;
    if (!r->ready) return ft_fail(e, FT_EINPUT, "%s: empty CSV file (no header row naming the columns)", r->path);
    r->ncols = r->row.n;
    r->cols = ft_xcalloc((size_t)r->ncols, sizeof *r->cols);
    for (int i = 0; i < r->ncols; i++) {
        r->cols[i] = ft_xstrdup(r->row.f[i].s);
        for (int j = 0; j < i; j++)
            if (r->cols[i][0] && strcmp(r->cols[i], r->cols[j]) == 0)
                return ft_fail(e, FT_EINPUT, "%s:%ld:%ld: the header names column '%s' twice", r->path,
                               r->row.f[i].line, r->row.f[i].col, r->cols[i]);
    }
    return FT_OK;
}

static int open_common(ds_csv *r, ds_csv **out, ft_error *e) {
    r->buf = ft_xmalloc(CSV_BUF);
    r->line = r->col = r->fline = r->fcol = 1;
    r->between = 1;
    if (csv_init(&r->p, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        ds_csv_close(r);
        return ft_fail(e, FT_ENOMEM, "%s: cannot set up the CSV parser", r->path);
    }
    csv_set_space_func(&r->p, no_space);
    int rc = read_header(r, e);
    if (rc) {
        ds_csv_close(r);
        return rc;
    }
    *out = r;
    return FT_OK;
}

int ds_csv_open(const char *path, ds_csv **out, ft_error *e) {
    *out = NULL;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return ft_fail(e, errno == ENOENT || errno == EACCES || errno == EISDIR ? FT_EINPUT : FT_EIO,
                       "%s: cannot open dataset file: %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(gz, 1 << 17);
    ds_csv *r = ft_xcalloc(1, sizeof *r);
    r->path = ft_xstrdup(path);
    r->gz = gz;
    return open_common(r, out, e);
}

int ds_csv_open_mem(const void *data, size_t len, const char *name, ds_csv **out, ft_error *e) {
    *out = NULL;
    ds_csv *r = ft_xcalloc(1, sizeof *r);
    r->path = ft_xstrdup(name ? name : "<memory>");
    r->mem = data ? data : (const unsigned char *)"";
    r->mem_len = data ? len : 0;
    return open_common(r, out, e);
}

void ds_csv_close(ds_csv *r) {
    if (!r) return;
    if (r->buf) csv_free(&r->p);
    if (r->gz) gzclose(r->gz);
    for (int i = 0; i < r->ncols; i++) free(r->cols[i]);
    free(r->cols);
    free(r->path);
    free(r->buf);
    free(r->data);
    free(r->bf);
    free(r->out);
    free(r);
}

const char *ds_csv_path(const ds_csv *r) { return r->path; }
int ds_csv_ncols(const ds_csv *r) { return r->ncols; }
const char *ds_csv_col_name(const ds_csv *r, int i) { return i >= 0 && i < r->ncols ? r->cols[i] : NULL; }
int ds_csv_can_continue(const ds_csv *r) { return r->can_continue; }

int ds_csv_col_find(const ds_csv *r, const char *name) {
    for (int i = 0; i < r->ncols; i++)
        if (strcmp(r->cols[i], name) == 0) return i;
    return -1;
}

void ds_csv_col_list(const ds_csv *r, char *buf, size_t cap) {
    size_t o = 0;
    if (cap) buf[0] = 0;
    for (int i = 0; i < r->ncols && o + 1 < cap; i++) {
        int k = snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", r->cols[i]);
        if (k < 0) break;
        o += (size_t)k;
    }
    if (o >= cap && cap > 4) strcpy(buf + cap - 4, "...");
}

int ds_csv_next(ds_csv *r, const ds_csv_row **row, ft_error *e) {
    *row = NULL;
    r->can_continue = 0;
    int rc = feed(r, e);
    if (rc) return rc;
    if (!r->ready) return FT_OK;
    if (r->row.n != r->ncols) {
        r->can_continue = 1;
        return ft_fail(e, FT_EINPUT, "%s:%ld: the record has %d field%s, the header has %d columns", r->path,
                       r->row.line, r->row.n, r->row.n == 1 ? "" : "s", r->ncols);
    }
    *row = &r->row;
    return FT_OK;
}
