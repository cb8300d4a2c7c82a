/* csv: RFC 4180 CSV files (.csv, and .csv.gz) read record by record with libcsv, each field with the
 * physical line and column where it starts.
 *
 * Contract: ds_csv_open reads the header record (the column names; a UTF-8 BOM before it is dropped) and
 * ds_csv_next yields the data records one at a time, streamed (the file is never read whole). Quoted
 * fields may hold the delimiter, "" (one quote) and line breaks; records end with LF, CRLF or CR; empty
 * lines between records are ignored; spaces are kept (a field is exactly its bytes, as pandas and
 * Python's csv read it). Parsing is libcsv's strict mode: a quote inside an unquoted field, text after a
 * closing quote, or a quote left open at the end of the file is an input error naming file:line:column
 * where the field starts. Lines count LF, CRLF and CR; columns count characters (UTF-8), from 1.
 * A record with a different number of fields than the header is FT_EINPUT that leaves the reader at
 * the next record (ds_csv_can_continue), so a caller may skip it; malformed quoting, a record over
 * DS_MAX_RECORD bytes (an unterminated quote, usually) and read errors end the file. Fields are not
 * checked for UTF-8 here. An empty file (no header) and a header naming a column twice are errors. */
#ifndef DS_CSV_H
#define DS_CSV_H

#include <stddef.h>

#include "finetune/base/util.h"

typedef struct ds_csv_field {
    const char *s; /* NUL-terminated (a field holding NUL bytes is cut there for C strings; len is exact) */
    size_t len;
    long line, col; /* where the field starts (its opening quote when quoted) */
} ds_csv_field;

typedef struct ds_csv_row {
    int n;
    const ds_csv_field *f;
    long line; /* where the record starts */
} ds_csv_row;

typedef struct ds_csv ds_csv;

int ds_csv_open(const char *path, ds_csv **out, ft_error *e);
/* The same over bytes in memory (tests, fuzzing); name stands for the path in messages. */
int ds_csv_open_mem(const void *data, size_t len, const char *name, ds_csv **out, ft_error *e);
void ds_csv_close(ds_csv *r);

const char *ds_csv_path(const ds_csv *r);
int ds_csv_ncols(const ds_csv *r);
const char *ds_csv_col_name(const ds_csv *r, int i);
/* Index of the column named name, or -1. */
int ds_csv_col_find(const ds_csv *r, const char *name);
/* "a, b, c": the header's names for messages (truncated to cap). */
void ds_csv_col_list(const ds_csv *r, char *buf, size_t cap);

/* *row = the next record (valid until the next call), or NULL at the end with FT_OK. */
int ds_csv_next(ds_csv *r, const ds_csv_row **row, ft_error *e);
/* 1 when the last error left the reader at the next record. */
int ds_csv_can_continue(const ds_csv *r);

#endif
