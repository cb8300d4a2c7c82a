#include "datasets/reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct ds_reader {
    char *path;
    gzFile gz; /* gzread also reads uncompressed files transparently */
    unsigned char buf[1 << 16];
    int pos, len, eof;
    long line;      /* current line (1-based) of the next unread byte */
    int array;      /* .json: one top-level array */
    int started;    /* array: '[' consumed */
    int finished;   /* array: ']' seen, or a fatal error */
    int can_continue;
    long records;
    char *rec;      /* the current record's bytes */
    size_t rec_len, rec_cap;
};

static int rd_fill(ds_reader *r, ft_error *e) {
    if (r->eof) return FT_OK;
    int n = gzread(r->gz, r->buf, sizeof r->buf);
    if (n < 0) {
        int err;
        const char *m = gzerror(r->gz, &err);
        r->eof = 1;
        return ft_fail(e, FT_EIO, "%s:%ld: read failed: %s", r->path, r->line, m ? m : "gzip error");
    }
    r->pos = 0;
    r->len = n;
    if (n == 0) r->eof = 1;
    return FT_OK;
}

/* next byte or -1 at EOF; -2 on a read error (e filled) */
static int rd_getc(ds_reader *r, ft_error *e) {
    if (r->pos >= r->len) {
        if (rd_fill(r, e)) return -2;
        if (r->len == 0) return -1;
    }
    int c = r->buf[r->pos++];
    if (c == '\n') r->line++;
    return c;
}

static int rd_peek(ds_reader *r, ft_error *e) {
    if (r->pos >= r->len) {
        if (rd_fill(r, e)) return -2;
        if (r->len == 0) return -1;
    }
    return r->buf[r->pos];
}

static int rec_push(ds_reader *r, int c) {
    if (r->rec_len + 1 >= DS_MAX_RECORD) return 0;
    if (r->rec_len + 2 > r->rec_cap) {
        size_t cap = r->rec_cap ? r->rec_cap * 2 : 4096;
        r->rec = ft_xrealloc(r->rec, cap);
        r->rec_cap = cap;
    }
    r->rec[r->rec_len++] = (char)c;
    return 1;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int ds_reader_open(const char *path, ds_reader **out, ft_error *e) {
    *out = NULL;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return ft_fail(e, errno == ENOENT || errno == EACCES || errno == EISDIR ? FT_EINPUT : FT_EIO,
                       "%s: cannot open dataset file: %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(gz, 1 << 17);
    ds_reader *r = ft_xcalloc(1, sizeof *r);
    r->path = ft_xstrdup(path);
    r->gz = gz;
    r->line = 1;
    if (ends_with(path, ".json") || ends_with(path, ".json.gz")) {
        r->array = 1;
    } else if (!ends_with(path, ".jsonl") && !ends_with(path, ".jsonl.gz")) {
        /* unknown extension: sniff the first non-blank byte */
        int c;
        while ((c = rd_peek(r, e)) == ' ' || c == '\t' || c == '\r' || c == '\n') rd_getc(r, e);
        if (c == -2) {
            ds_reader_close(r);
            return e->code;
        }
        r->array = c == '[';
    }
    *out = r;
    return FT_OK;
}

const char *ds_reader_path(const ds_reader *r) { return r->path; }
int ds_reader_can_continue(const ds_reader *r) { return r->can_continue; }

void ds_reader_close(ds_reader *r) {
    if (!r) return;
    if (r->gz) gzclose(r->gz);
    free(r->path);
    free(r->rec);
    free(r);
}

static int parse_rec(ds_reader *r, long line, cJSON **rec, ft_error *e) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(r->rec, r->rec_len, &end, 0);
    if (!j) {
        size_t off = end && end >= r->rec ? (size_t)(end - r->rec) : 0;
        r->can_continue = 1;
        return ft_fail(e, FT_EINPUT, "%s:%ld: malformed JSON near byte %zu of the record", r->path, line, off);
    }
    *rec = j;
    r->records++;
    return FT_OK;
}

static int empty_file(ds_reader *r, ft_error *e) {
    r->can_continue = 0;
    return ft_fail(e, FT_EINPUT, "%s: empty dataset file (no records)", r->path);
}

static int next_jsonl(ds_reader *r, cJSON **rec, long *line, ft_error *e) {
    for (;;) {
        r->rec_len = 0;
        long start = r->line;
        int c, blank = 1, too_long = 0;
        while ((c = rd_getc(r, e)) >= 0 && c != '\n') {
            if (too_long) continue;
            if (!rec_push(r, c)) too_long = 1;
            if (c != ' ' && c != '\t' && c != '\r') blank = 0;
        }
        if (c == -2) {
            r->can_continue = 0;
            return e->code;
        }
        *line = start;
        if (too_long || !blank) r->started = 1; /* a record was seen: the file is not empty */
        if (too_long) {
            r->can_continue = c >= 0;
            return ft_fail(e, FT_EINPUT, "%s:%ld: line longer than %u bytes", r->path, start, DS_MAX_RECORD);
        }
        if (!blank) return parse_rec(r, start, rec, e);
        if (c == -1) {
            if (r->records == 0 && !r->started) return empty_file(r, e);
            return FT_OK;
        }
    }
}

static int skip_ws(ds_reader *r, ft_error *e) {
    int c;
    while ((c = rd_peek(r, e)) == ' ' || c == '\t' || c == '\r' || c == '\n') rd_getc(r, e);
    return c;
}

static int array_fatal(ds_reader *r, ft_error *e, const char *what) {
    r->finished = 1;
    r->can_continue = 0;
    return ft_fail(e, FT_EINPUT, "%s:%ld: %s", r->path, r->line, what);
}

/* Scan one element of the top-level array: find its extent by tracking
 * brackets and strings, then parse just those bytes. */
static int next_array(ds_reader *r, cJSON **rec, long *line, ft_error *e) {
    if (r->finished) return FT_OK;
    int c = skip_ws(r, e);
    if (c == -2) return e->code;
    if (!r->started) {
        if (c == -1) {
            r->finished = 1;
            return empty_file(r, e);
        }
        if (c != '[') return array_fatal(r, e, "expected a JSON array ('[') at the top level");
        rd_getc(r, e);
        r->started = 1;
        c = skip_ws(r, e);
        if (c == ']') {
            r->finished = 1;
            return empty_file(r, e);
        }
    } else {
        if (c == ']') {
            rd_getc(r, e);
            r->finished = 1;
            return FT_OK;
        }
        if (c != ',') return array_fatal(r, e, "expected ',' or ']' between array elements");
        rd_getc(r, e);
        c = skip_ws(r, e);
    }
    if (c == -1) return array_fatal(r, e, "unexpected end of file inside the top-level array");
    if (c == -2) return e->code;
    r->rec_len = 0;
    long start = r->line;
    *line = start;
    int depth = 0, in_str = 0, esc = 0, too_long = 0;
    for (;;) {
        c = rd_peek(r, e);
        if (c == -2) return e->code;
        if (c == -1) return array_fatal(r, e, "unexpected end of file inside an array element");
        if (!in_str && depth == 0 && (c == ',' || c == ']' || c == ' ' || c == '\n' || c == '\t' || c == '\r'))
            break; /* end of a scalar element */
        rd_getc(r, e);
        if (!too_long && !rec_push(r, c)) too_long = 1;
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0) return array_fatal(r, e, "unbalanced brackets in the top-level array");
            if (depth == 0) break;
        }
    }
    if (too_long) {
        r->can_continue = 1;
        return ft_fail(e, FT_EINPUT, "%s:%ld: array element longer than %u bytes", r->path, start, DS_MAX_RECORD);
    }
    return parse_rec(r, start, rec, e);
}

int ds_reader_next(ds_reader *r, cJSON **rec, long *line, ft_error *e) {
    *rec = NULL;
    *line = r->line;
    r->can_continue = 0;
    return r->array ? next_array(r, rec, line, e) : next_jsonl(r, rec, line, e);
}
