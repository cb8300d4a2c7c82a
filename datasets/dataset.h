/* dataset: a dataset file read as SFT conversations or preference pairs,
 * applying the on_bad_record policy.
 *
 * Contract: ds_open detects the format from the first record (or takes it by
 * name) and streams records (oasst is the exception: its rows form trees, so
 * the file's rows are held in memory and converted once opened). With
 * DS_BAD_FAIL the first bad record ends reading with FT_EINPUT and a message
 * naming file:line and the field; with DS_BAD_SKIP it is counted in
 * stats.skipped[reason] and reading goes on. Nothing is dropped silently:
 * records_read == yielded + sum(skipped) for non-oasst formats (oasst counts
 * messages). */
#ifndef DS_DATASET_H
#define DS_DATASET_H

#include "datasets/format.h"

typedef enum { DS_BAD_FAIL = 0, DS_BAD_SKIP = 1 } ds_on_bad;

typedef struct ds_read_stats {
    long records;               /* records (oasst: message rows) read */
    long yielded;               /* conversations / pairs handed out */
    long skipped[DS_SKIP_COUNT];
    long skipped_total;
    char first_skip[512];       /* message of the first skipped record */
} ds_read_stats;

typedef struct ds_dataset ds_dataset;

int ds_parse_on_bad(const char *s, ds_on_bad *out, ft_error *e);
/* format: NULL or "auto" to detect. */
int ds_open(const char *path, const char *format, ds_on_bad on_bad, ds_dataset **out, ft_error *e);
void ds_close(ds_dataset *d);
ds_format ds_dataset_format(const ds_dataset *d);
int ds_dataset_is_preference(const ds_dataset *d);
const ds_read_stats *ds_dataset_stats(const ds_dataset *d);
/* *done = 1 at the end (out untouched). Caller frees out with ds_conv_free / ds_pref_free. */
int ds_next_conv(ds_dataset *d, ds_conv *out, int *done, ft_error *e);
int ds_next_pref(ds_dataset *d, ds_pref *out, int *done, ft_error *e);

#endif
