/* refcache: round trip, resume after a pass killed mid-chunk (file cut inside a chunk), key and
 * pair-count mismatch invalidate with a message naming what changed, a flipped byte is caught by the
 * chunk's CRC32, a damaged header or foreign file restarts, misuse errors, and the key builder's
 * fingerprints follow file contents (not paths). */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dpo/refcache.h"
#include "test.h"

#define NP 10

static char dir[256], path[512];

static double val(int64_t i, int side) { return -(double)(i * 7 + 3) - 0.123456789 * side - 1e-9 * (double)i; }

static void fill(int64_t first, int64_t count, double *v) {
    for (int64_t j = 0; j < count; j++) {
        v[2 * j] = val(first + j, 0);
        v[2 * j + 1] = val(first + j, 1);
    }
}

static int append(refc_cache *c, int64_t first, int64_t count) {
    double v[2 * NP];
    ft_error e = {0};
    fill(first, count, v);
    int rc = refc_append(c, first, count, v, &e);
    if (rc) fprintf(stderr, "append: %s\n", e.msg);
    return rc;
}

static int values_ok(refc_cache *c, int64_t upto) {
    ft_error e;
    for (int64_t i = 0; i < upto; i++) {
        double a, b;
        if (refc_get(c, i, &a, &b, &e) || a != val(i, 0) || b != val(i, 1)) return 0;
    }
    return 1;
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static void write_bytes(const char *p, const char *s) {
    FILE *f = fopen(p, "wb");
    fputs(s, f);
    fclose(f);
}

static void flip_byte(const char *p, long off) {
    FILE *f = fopen(p, "r+b");
    fseek(f, off, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ft_refcache_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/ref_logps.bin", dir);
    ft_error e = {0};
    refc_cache *c = NULL;

    refc_key k;
    refc_key_init(&k);
    CHECK(refc_key_add(&k, "model", "abc123", &e) == FT_OK);
    CHECK(refc_key_add(&k, "template", "danube", &e) == FT_OK);
    CHECK(refc_key_add_int(&k, "max_length", 1024, &e) == FT_OK);
    CHECK(refc_key_add(&k, "truncation", "keep_start", &e) == FT_OK);
    CHECK(!strcmp(k.s, "model=abc123\ntemplate=danube\nmax_length=1024\ntruncation=keep_start"));
    CHECK(refc_key_add(&k, "bad=name", "x", &e) != FT_OK);
    CHECK(refc_key_add(&k, "name", "two\nlines", &e) != FT_OK);

    /* 1. round trip: new, three chunks, complete, reopen complete */
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_NEW && refc_done(c) == 0 && !refc_is_complete(c) && !refc_note(c)[0]);
    CHECK(append(c, 0, 4) == FT_OK && append(c, 4, 4) == FT_OK);
    CHECK(refc_complete(c, &e) == FT_EINTERNAL); /* not all pairs yet */
    CHECK(append(c, 8, 2) == FT_OK && refc_done(c) == NP);
    CHECK(values_ok(c, NP));
    CHECK(refc_complete(c, &e) == FT_OK && refc_is_complete(c));
    refc_close(c);
    long full = file_size(path);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_COMPLETE && refc_done(c) == NP && refc_is_complete(c) && values_ok(c, NP));
    CHECK(!refc_note(c)[0]);
    CHECK(append(c, NP, 1) != FT_OK);
    refc_close(c);
    CHECK(file_size(path) == full);

    /* 2. killed mid-chunk: cut the file inside the third chunk, resume at pair 8 */
    unlink(path);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(append(c, 0, 4) == FT_OK && append(c, 4, 4) == FT_OK);
    long two_chunks = file_size(path);
    CHECK(append(c, 8, 2) == FT_OK);
    refc_close(c);
    CHECK(truncate(path, two_chunks + 20) == 0);
    char kept[600];
    snprintf(kept, sizeof kept, "%s/kept", dir);
    CHECK(link(path, kept) == 0); /* the tail is cut by rewriting beside + rename: the old inode is untouched */
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(file_size(kept) == two_chunks + 20);
    unlink(kept);
    CHECK(refc_status(c) == REFC_RESUMED && refc_done(c) == 8 && values_ok(c, 8));
    CHECK_MSG(strstr(refc_note(c), "cut short") && strstr(refc_note(c), "resuming at pair 8"), "%s", refc_note(c));
    CHECK(file_size(path) == two_chunks); /* the torn tail is cut off */
    double a, b;
    CHECK(refc_get(c, 8, &a, &b, &e) != FT_OK);
    CHECK(append(c, 4, 2) != FT_OK); /* must continue where the pass is */
    CHECK(append(c, 8, 2) == FT_OK && refc_complete(c, &e) == FT_OK);
    refc_close(c);
    CHECK(file_size(path) == full);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_COMPLETE && values_ok(c, NP));
    refc_close(c);
    /* killed right after a chunk's header: the same */
    CHECK(truncate(path, two_chunks + 3) == 0);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_RESUMED && refc_done(c) == 8);
    refc_close(c);

    /* 3. corruption: a flipped value byte in chunk 2 is caught; chunk 1 is kept */
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(append(c, 8, 2) == FT_OK && refc_complete(c, &e) == FT_OK);
    refc_close(c);
    long chunk1_end = two_chunks - (16 + 4 * 16 + 4);
    flip_byte(path, chunk1_end + 16 + 5);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_RESUMED && refc_done(c) == 4 && !refc_is_complete(c) && values_ok(c, 4));
    CHECK_MSG(strstr(refc_note(c), "CRC32") && strstr(refc_note(c), "pairs 4..7"), "%s", refc_note(c));
    CHECK(file_size(path) == chunk1_end);
    CHECK(append(c, 4, 6) == FT_OK && refc_complete(c, &e) == FT_OK);
    refc_close(c);
    /* a damaged end record is dropped; the values stay */
    flip_byte(path, file_size(path) - 2);
    CHECK(refc_open(path, k.s, NP, &c, &e) == FT_OK);
    CHECK(refc_done(c) == NP && !refc_is_complete(c) && strstr(refc_note(c), "end record"));
    CHECK(refc_complete(c, &e) == FT_OK);
    refc_close(c);

    /* 3b. every cut length and every single-byte flip of a finished cache: open never fails, keeps
     * only pairs whose values are right, and is complete only when every byte is intact */
    {
        char *orig = NULL;
        size_t olen = 0;
        CHECK(ft_read_file(path, &orig, &olen, &e) == FT_OK);
        int bad = 0;
        for (size_t cut = 0; cut <= olen * 2; cut++) {
            int flip = cut > olen;
            size_t at = flip ? cut - olen - 1 : cut;
            FILE *f = fopen(path, "wb");
            if (flip) {
                orig[at] ^= 0x01;
                fwrite(orig, 1, olen, f);
                orig[at] ^= 0x01;
            } else {
                fwrite(orig, 1, at, f);
            }
            fclose(f);
            refc_cache *x = NULL;
            if (refc_open(path, k.s, NP, &x, &e) != FT_OK) {
                bad++;
                fprintf(stderr, "%s at %zu: %s\n", flip ? "flip" : "cut", at, e.msg);
                continue;
            }
            if (!values_ok(x, refc_done(x)) || (refc_is_complete(x) && refc_done(x) != NP) ||
                (!flip && at == olen && refc_status(x) != REFC_COMPLETE) || (flip && refc_is_complete(x))) {
                bad++;
                fprintf(stderr, "%s at %zu: done %lld complete %d note %s\n", flip ? "flip" : "cut", at,
                        (long long)refc_done(x), refc_is_complete(x), refc_note(x));
            }
            refc_close(x);
        }
        CHECK(bad == 0);
        FILE *f = fopen(path, "wb");
        fwrite(orig, 1, olen, f);
        fclose(f);
        free(orig);
    }

    /* 4. key mismatch: the message names the field that changed */
    refc_key k2;
    refc_key_init(&k2);
    refc_key_add(&k2, "model", "abc123", &e);
    refc_key_add(&k2, "template", "chatml", &e);
    refc_key_add_int(&k2, "max_length", 1024, &e);
    refc_key_add(&k2, "truncation", "keep_start", &e);
    CHECK(refc_open(path, k2.s, NP, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_INVALIDATED && refc_done(c) == 0);
    CHECK_MSG(strstr(refc_note(c), "were computed for a different model/data/template") &&
                  strstr(refc_note(c), "template: danube -> chatml") && strstr(refc_note(c), "recomputing") &&
                  strstr(refc_note(c), path),
              "%s", refc_note(c));
    CHECK(append(c, 0, NP) == FT_OK && refc_complete(c, &e) == FT_OK);
    refc_close(c);
    /* a field only in the old key is named too */
    refc_key k3;
    refc_key_init(&k3);
    refc_key_add(&k3, "model", "abc123", &e);
    CHECK(refc_open(path, k3.s, NP, &c, &e) == FT_OK);
    CHECK_MSG(refc_status(c) == REFC_INVALIDATED && strstr(refc_note(c), "template: chatml -> (none)"), "%s",
              refc_note(c));
    refc_close(c);

    /* 5. pair count changed */
    CHECK(refc_open(path, k3.s, NP + 1, &c, &e) == FT_OK);
    CHECK_MSG(refc_status(c) == REFC_INVALIDATED && strstr(refc_note(c), "pairs"), "%s", refc_note(c));
    refc_close(c);

    /* 6. damaged header, foreign file, empty file */
    flip_byte(path, 20);
    CHECK(refc_open(path, k3.s, NP + 1, &c, &e) == FT_OK);
    CHECK_MSG(refc_status(c) == REFC_INVALIDATED && strstr(refc_note(c), "header"), "%s", refc_note(c));
    refc_close(c);
    write_bytes(path, "{\"not\": \"a cache\"}\n");
    CHECK(refc_open(path, k3.s, 3, &c, &e) == FT_OK);
    CHECK(refc_status(c) == REFC_INVALIDATED && refc_done(c) == 0);
    CHECK(append(c, 0, 3) == FT_OK && refc_complete(c, &e) == FT_OK);
    refc_close(c);
    CHECK(refc_open(path, k3.s, 3, &c, &e) == FT_OK && refc_status(c) == REFC_COMPLETE && values_ok(c, 3));
    refc_close(c);
    write_bytes(path, "");
    CHECK(refc_open(path, k3.s, 3, &c, &e) == FT_OK && refc_status(c) == REFC_INVALIDATED);

    /* 7. misuse */
    double bad[2] = {-1.0, NAN};
    CHECK(refc_append(c, 0, 1, bad, &e) == FT_EINPUT && strstr(e.msg, "rejected") && strstr(e.msg, "pair 0"));
    CHECK(refc_done(c) == 0);
    CHECK(refc_append(c, 0, 4, bad, &e) != FT_OK); /* more than n_pairs */
    CHECK(refc_get(c, -1, &a, &b, &e) != FT_OK);
    refc_close(c);
    CHECK(refc_open(path, k3.s, 0, &c, &e) == FT_EINPUT && c == NULL);
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/missing/ref.bin", dir);
    CHECK(refc_open(nodir, k3.s, 3, &c, &e) != FT_OK && c == NULL);

    /* 8. fingerprints: content, not path; model dir */
    char f1[600], f2[600], f3[600];
    snprintf(f1, sizeof f1, "%s/a.jsonl", dir);
    snprintf(f2, sizeof f2, "%s/b.jsonl", dir);
    snprintf(f3, sizeof f3, "%s/config.json", dir);
    write_bytes(f1, "{\"prompt\":\"hi\",\"chosen\":\"a\",\"rejected\":\"b\"}\n");
    write_bytes(f2, "{\"prompt\":\"hi\",\"chosen\":\"a\",\"rejected\":\"b\"}\n");
    refc_key ka, kb, kc, km1, km2;
    refc_key_init(&ka);
    refc_key_init(&kb);
    refc_key_init(&kc);
    const char *pa[1] = {f1}, *pb[1] = {f2}, *pab[2] = {f1, f2}, *miss[1] = {nodir};
    CHECK(refc_key_add_files(&ka, "data", pa, 1, &e) == FT_OK);
    CHECK(refc_key_add_files(&kb, "data", pb, 1, &e) == FT_OK);
    CHECK(!strcmp(ka.s, kb.s) && strlen(ka.s) == strlen("data=") + 16);
    write_bytes(f2, "{\"prompt\":\"hi\",\"chosen\":\"b\",\"rejected\":\"a\"}\n"); /* same size, new content */
    CHECK(refc_key_add_files(&kc, "data", pb, 1, &e) == FT_OK && strcmp(ka.s, kc.s));
    CHECK(refc_key_add_files(&kc, "data2", pab, 2, &e) == FT_OK);
    CHECK(refc_key_add_files(&kc, "data3", miss, 1, &e) == FT_EINPUT && strstr(e.msg, "missing"));
    write_bytes(f3, "{\"hidden_size\": 32}");
    refc_key_init(&km1);
    refc_key_init(&km2);
    CHECK(refc_key_add_model_dir(&km1, "model", dir, &e) == FT_OK);
    write_bytes(f3, "{\"hidden_size\": 64}");
    CHECK(refc_key_add_model_dir(&km2, "model", dir, &e) == FT_OK && strcmp(km1.s, km2.s));
    CHECK(refc_key_add_model_dir(&km2, "model", nodir, &e) == FT_EINPUT);

    refc_key_free(&k);
    refc_key_free(&k2);
    refc_key_free(&k3);
    refc_key_free(&ka);
    refc_key_free(&kb);
    refc_key_free(&kc);
    refc_key_free(&km1);
    refc_key_free(&km2);
    unlink(path);
    unlink(f1);
    unlink(f2);
    unlink(f3);
    rmdir(dir);
    TEST_DONE();
}
