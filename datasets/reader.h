/* reader: streaming record reader for .jsonl, .json (one top-level array) and
 * either of them gzipped (.gz).
 *
 * Contract: ds_reader_next yields one parsed JSON record at a time together
 * with the 1-based line where it starts; the file is never read whole (a
 * .json array is scanned element by element; each element is parsed alone).
 * A record longer than DS_MAX_RECORD bytes is an error, not an allocation.
 * Errors name file:line. After a bad record (malformed JSON, too long) the
 * reader can continue with the next one (ds_reader_can_continue) so a caller
 * may skip it; structural damage of a .json array ends the file. An empty
 * file (no records at all) is an error. */
#ifndef DS_READER_H
#define DS_READER_H

#include <cjson/cJSON.h>

#include "finetune/base/util.h"

#define DS_MAX_RECORD (64u << 20) /* 64 MiB per line / array element */

typedef struct ds_reader ds_reader;

int ds_reader_open(const char *path, ds_reader **out, ft_error *e);
/* *rec = the next record (caller cJSON_Deletes it), *line = its first line;
 * *rec == NULL and FT_OK at the end. On FT_EINPUT *line still names the record. */
int ds_reader_next(ds_reader *r, cJSON **rec, long *line, ft_error *e);
/* 1 when the last error left the reader positioned at the next record. */
int ds_reader_can_continue(const ds_reader *r);
const char *ds_reader_path(const ds_reader *r);
void ds_reader_close(ds_reader *r);

#endif
