/* libFuzzer: the dataset formats one record at a time. Each line of the input is parsed as JSON, its
 * format detected (ds_format_detect), and then converted as EVERY format in turn, as a recipe's explicit
 * `format` would (ds_record_to_conv / ds_record_to_pref): a record of the wrong shape for a format must be
 * refused with a reason, and what is accepted must hold the format layer's contract (valid structure,
 * non-empty valid UTF-8 turns). The whole input is also opened as a .jsonl file (ds_open) with a format
 * named from its size and middle byte, which covers the oasst trees (rows not converted one by one). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets/dataset.h"

static void check_conv(const ds_conv *c, ds_role end) {
    int reason = -1;
    ft_error e;
    if (ds_conv_check(c, end, &reason, &e) != 0) abort(); /* accepted but not a valid conversation */
    for (int i = 0; i < c->n; i++) {
        const char *s = c->msgs[i].content;
        if (!s || !s[0] || !ds_utf8_valid(s, strlen(s), NULL)) abort();
    }
}

static void one_record(const char *line, size_t n) {
    cJSON *rec = cJSON_ParseWithLength(line, n);
    if (!rec) return;
    ft_error e;
    ds_format det;
    if (ds_format_detect(rec, "fuzz:1", &det, &e) == 0 && (det <= DS_FMT_AUTO || det >= DS_FMT_COUNT)) abort();
    for (int f = DS_FMT_AUTO + 1; f < DS_FMT_COUNT; f++) {
        if (f == DS_FMT_OASST || f == DS_FMT_OASST_PREFERENCE) continue; /* trees: through ds_open below */
        int reason = -1, rc;
        if (ds_format_is_preference((ds_format)f)) {
            ds_pref p;
            rc = ds_record_to_pref((ds_format)f, rec, "fuzz:1", &p, &reason, &e);
            if (rc == 0) {
                check_conv(&p.prompt, DS_USER);
                if (!p.chosen || !p.rejected || !ds_utf8_valid(p.chosen, strlen(p.chosen), NULL) ||
                    !ds_utf8_valid(p.rejected, strlen(p.rejected), NULL))
                    abort();
                ds_pref_free(&p);
            }
        } else {
            ds_conv c;
            rc = ds_record_to_conv((ds_format)f, rec, "fuzz:1", &c, &reason, &e);
            if (rc == 0) {
                check_conv(&c, DS_ASSISTANT);
                ds_conv_free(&c);
            }
        }
        if (rc != 0 && (rc != FT_EINPUT || reason < 0 || reason >= DS_SKIP_COUNT || !e.msg[0])) abort();
    }
    cJSON_Delete(rec);
}

static void whole_file(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_formats_%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, size, f);
    fclose(f);
    ds_format fmt = (ds_format)(1 + (size + data[size / 2]) % (DS_FMT_COUNT - 1)); /* any format, by name */
    ft_error e;
    ds_dataset *d;
    if (ds_open(path, ds_format_name(fmt), DS_BAD_SKIP, &d, &e) == 0) {
        for (int guard = 0; guard < 100000; guard++) {
            int done = 0, rc;
            if (ds_dataset_is_preference(d)) {
                ds_pref p;
                rc = ds_next_pref(d, &p, &done, &e);
                if (!rc && !done) {
                    check_conv(&p.prompt, DS_USER);
                    ds_pref_free(&p);
                }
            } else {
                ds_conv c;
                rc = ds_next_conv(d, &c, &done, &e);
                if (!rc && !done) {
                    check_conv(&c, DS_ASSISTANT);
                    ds_conv_free(&c);
                }
            }
            if (rc || done) break;
        }
        const ds_read_stats *st = ds_dataset_stats(d);
        long skipped = 0;
        for (int r = 0; r < DS_SKIP_COUNT; r++) skipped += st->skipped[r];
        if (skipped != st->skipped_total) abort();
        ds_close(d);
    }
    remove(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *s = (const char *)data;
    for (size_t i = 0; i < size;) {
        const char *nl = memchr(s + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - s) : size;
        one_record(s + i, end - i);
        i = end + 1;
    }
    whole_file(data, size);
    return 0;
}
