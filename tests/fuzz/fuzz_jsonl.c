/* libFuzzer: the dataset reader (.jsonl and .json array paths) + format
 * detection and conversion, under the skip policy. Never crashes, never
 * leaks; every record is yielded or counted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets/dataset.h"

static void run(const char *path) {
    ft_error e;
    ds_dataset *d;
    if (ds_open(path, NULL, DS_BAD_SKIP, &d, &e)) return;
    for (int guard = 0; guard < 100000; guard++) {
        int done = 0, rc;
        if (ds_dataset_is_preference(d)) {
            ds_pref p;
            rc = ds_next_pref(d, &p, &done, &e);
            if (!rc && !done) ds_pref_free(&p);
        } else {
            ds_conv c;
            rc = ds_next_conv(d, &c, &done, &e);
            if (!rc && !done) ds_conv_free(&c);
        }
        if (rc || done) break;
    }
    ds_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[2][64];
    snprintf(path[0], sizeof path[0], "/tmp/fuzz_jsonl_%d.jsonl", (int)getpid());
    snprintf(path[1], sizeof path[1], "/tmp/fuzz_jsonl_%d.json", (int)getpid());
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path[k], "wb");
        if (!f) return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        run(path[k]);
        remove(path[k]);
    }
    return 0;
}
