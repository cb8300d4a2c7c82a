#include "finetune/io/ckpt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#define CKPT_TENSORS "tensors.safetensors"
#define CKPT_STATE "state.json"
#define CKPT_MANIFEST "MANIFEST.json"
#define CKPT_HINT "remove the checkpoint or resume from an older one"

/* ---------- small filesystem helpers ---------- */

static int fsync_dir(const char *dir, ft_error *e) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ft_fail_sys(e, errno, "%s: cannot open directory to fsync", dir);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* some filesystems refuse fsync on a directory; that is not a data loss we can fix */
    if (rc != 0 && err != EINVAL && err != EROFS)
        return ft_fail_sys(e, err, "%s: fsync of directory failed", dir);
    return FT_OK;
}

/* Remove a directory tree (checkpoints are flat, but be thorough). */
static int rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char *sub = ft_path_join(path, de->d_name);
        if (rm_rf(sub) != 0) rc = -1;
        free(sub);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

int ckpt_crc32_file(const char *path, uint32_t *crc, uint64_t *size, ft_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return ft_fail(e, FT_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return ft_fail(e, FT_ENOMEM, "%s: out of memory for the CRC buffer", path);
    }
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    size_t n;
    while ((n = fread(buf, 1, cap, f)) > 0) {
        c = crc32(c, buf, (uInt)n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) return ft_fail(e, FT_EIO, "%s: read error while computing CRC32", path);
    *crc = (uint32_t)c;
    if (size) *size = total;
    return FT_OK;
}

char *ckpt_dir_for_step(const char *run_dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, "checkpoints/step-%06" PRId64, step);
    return ft_path_join(run_dir, name);
}

/* "step-000123" -> 123; returns 0 when the name is not exactly that form.
 * With tmp_pid non-NULL, accepts "step-000123.tmp-PID..." instead and gives PID. */
static int parse_step_name(const char *name, int64_t *step, long *tmp_pid) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *p = name + 5;
    if (*p < '0' || *p > '9') return 0;
    int64_t s = 0;
    while (*p >= '0' && *p <= '9') {
        if (s > (INT64_MAX - 9) / 10) return 0;
        s = s * 10 + (*p++ - '0');
    }
    *step = s;
    if (!tmp_pid) return *p == 0;
    if (strncmp(p, ".tmp-", 5) != 0) return 0;
    p += 5;
    char *end;
    long pid = strtol(p, &end, 10);
    if (end == p) return 0;
    *tmp_pid = pid;
    return 1;
}

/* ---------- writer ---------- */

typedef struct {
    char *name;
    const void *data;
} pending;

struct ckpt_writer {
    char *run_dir, *ck_dir, *tmp_dir, *final_dir;
    int64_t step;
    st_writer *st;
    pending *pend;
    size_t npend, cap;
    size_t ndecl, nwritten; /* for the ckpt-mid-write fault point */
    char *state;
};

/* One tensor's bytes are in the temp file: halfway through, the test-only kill point. */
static void wrote_one(ckpt_writer *w) {
    if (++w->nwritten == (w->ndecl + 1) / 2) ft_fault_point("ckpt-mid-write");
}

static void writer_free(ckpt_writer *w) {
    for (size_t i = 0; i < w->npend; i++) free(w->pend[i].name);
    free(w->pend);
    free(w->run_dir);
    free(w->ck_dir);
    free(w->tmp_dir);
    free(w->final_dir);
    free(w->state);
    free(w);
}

int ckpt_writer_begin(const char *run_dir, int64_t step, ckpt_writer **out, ft_error *e) {
    *out = NULL;
    if (step < 0) return ft_fail(e, FT_EINTERNAL, "checkpoint step %" PRId64 " is negative", step);
    ckpt_writer *w = ft_xcalloc(1, sizeof *w);
    w->run_dir = ft_xstrdup(run_dir);
    w->ck_dir = ft_path_join(run_dir, "checkpoints");
    w->step = step;
    w->final_dir = ckpt_dir_for_step(run_dir, step);
    size_t n = strlen(w->final_dir) + 32;
    w->tmp_dir = ft_xmalloc(n);
    snprintf(w->tmp_dir, n, "%s.tmp-%d", w->final_dir, (int)getpid());
    int rc = ft_mkdir_p(w->ck_dir, e);
    if (rc == FT_OK) {
        rm_rf(w->tmp_dir); /* ours from an earlier aborted attempt */
        if (mkdir(w->tmp_dir, 0755) != 0) rc = ft_fail_sys(e, errno, "%s: cannot create directory", w->tmp_dir);
    }
    if (rc == FT_OK) {
        char *p = ft_path_join(w->tmp_dir, CKPT_TENSORS);
        rc = st_writer_open(p, &w->st, e);
        free(p);
    }
    if (rc) {
        rm_rf(w->tmp_dir);
        writer_free(w);
        return rc;
    }
    *out = w;
    return FT_OK;
}

int ckpt_writer_declare(ckpt_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                        ft_error *e) {
    int rc = st_writer_declare(w->st, name, dt, ndim, shape, e);
    if (!rc) w->ndecl++;
    return rc;
}

int ckpt_writer_add_tensor(ckpt_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                           const void *host_data, ft_error *e) {
    int rc = st_writer_declare(w->st, name, dt, ndim, shape, e);
    if (rc) return rc;
    w->ndecl++;
    if (w->npend == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->pend = ft_xrealloc(w->pend, w->cap * sizeof *w->pend);
    }
    w->pend[w->npend++] = (pending){ft_xstrdup(name), host_data};
    return FT_OK;
}

int ckpt_writer_write(ckpt_writer *w, const char *name, const void *host_data, ft_error *e) {
    int rc = st_writer_write(w->st, name, host_data, e);
    if (!rc) wrote_one(w);
    return rc;
}

int ckpt_writer_set_state(ckpt_writer *w, const char *json_text, ft_error *e) {
    cJSON *j = cJSON_Parse(json_text);
    if (!j) return ft_fail(e, FT_EINTERNAL, "checkpoint step %" PRId64 ": trainer state is not valid JSON", w->step);
    cJSON_Delete(j);
    free(w->state);
    w->state = ft_xstrdup(json_text);
    return FT_OK;
}

void ckpt_writer_abort(ckpt_writer *w) {
    if (!w) return;
    if (w->st) st_writer_abort(w->st);
    rm_rf(w->tmp_dir);
    writer_free(w);
}

static int write_manifest(ckpt_writer *w, ft_error *e) {
    const char *files[] = {CKPT_TENSORS, CKPT_STATE};
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "format", 1);
    cJSON_AddNumberToObject(m, "step", (double)w->step);
    cJSON *arr = cJSON_AddArrayToObject(m, "files");
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = ft_path_join(w->tmp_dir, files[i]);
        uint32_t crc;
        uint64_t size;
        int rc = ckpt_crc32_file(p, &crc, &size, e);
        free(p);
        if (rc) {
            cJSON_Delete(m);
            return rc;
        }
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "name", files[i]);
        cJSON_AddNumberToObject(f, "size", (double)size);
        char hex[16];
        snprintf(hex, sizeof hex, "%08" PRIx32, crc);
        cJSON_AddStringToObject(f, "crc32", hex);
        cJSON_AddItemToArray(arr, f);
    }
    char *text = cJSON_Print(m);
    cJSON_Delete(m);
    char *p = ft_path_join(w->tmp_dir, CKPT_MANIFEST);
    int rc = ft_write_file_atomic(p, text, strlen(text), e);
    free(p);
    free(text);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int prune(const char *run_dir, int64_t keep_step, int keep_last, ft_error *e) {
    int64_t *steps;
    size_t n;
    int rc = ckpt_list_steps(run_dir, &steps, &n, e);
    if (rc) return rc;
    size_t kept = 0;
    for (size_t i = n; i-- > 0;) { /* newest first */
        if (steps[i] == keep_step || kept < (size_t)keep_last) {
            kept++;
            continue;
        }
        char *d = ckpt_dir_for_step(run_dir, steps[i]);
        /* remove the manifest first: a half-deleted checkpoint is then never taken as complete */
        char *m = ft_path_join(d, CKPT_MANIFEST);
        unlink(m);
        free(m);
        if (rm_rf(d) != 0) rc = ft_fail_sys(e, errno, "%s: cannot remove old checkpoint", d);
        free(d);
        if (rc) break;
    }
    free(steps);
    return rc;
}

int ckpt_writer_commit(ckpt_writer *w, int keep_last, char **path_out, ft_error *e) {
    if (path_out) *path_out = NULL;
    int rc = FT_OK;
    for (size_t i = 0; rc == FT_OK && i < w->npend; i++) {
        rc = st_writer_write(w->st, w->pend[i].name, w->pend[i].data, e);
        if (!rc) wrote_one(w);
    }
    if (rc) {
        ckpt_writer_abort(w);
        return rc;
    }
    rc = st_writer_finish(w->st, e);
    w->st = NULL;
    if (rc == FT_OK) {
        char *p = ft_path_join(w->tmp_dir, CKPT_STATE);
        const char *s = w->state ? w->state : "{}";
        rc = ft_write_file_atomic(p, s, strlen(s), e);
        free(p);
    }
    if (rc == FT_OK) rc = write_manifest(w, e);
    if (rc == FT_OK) rc = fsync_dir(w->tmp_dir, e);
    char *old = NULL;
    if (rc == FT_OK && ft_file_exists(w->final_dir)) {
        /* re-saving a step: move the old one aside under a .tmp name (cleaned up if we die) */
        size_t n = strlen(w->final_dir) + 40;
        old = ft_xmalloc(n);
        snprintf(old, n, "%s.tmp-%d-old", w->final_dir, (int)getpid());
        rm_rf(old);
        if (rename(w->final_dir, old) != 0)
            rc = ft_fail_sys(e, errno, "%s: cannot move the previous checkpoint aside", w->final_dir);
    }
    if (rc == FT_OK) ft_fault_point("ckpt-before-rename"); /* test-only: complete in its temp dir, not renamed */
    if (rc == FT_OK && rename(w->tmp_dir, w->final_dir) != 0)
        rc = ft_fail_sys(e, errno, "%s: rename to %s failed", w->tmp_dir, w->final_dir);
    if (rc == FT_OK) rc = fsync_dir(w->ck_dir, e);
    if (old) {
        if (rc == FT_OK)
            rm_rf(old);
        else if (!ft_file_exists(w->final_dir))
            rename(old, w->final_dir); /* put the previous checkpoint back */
        free(old);
    }
    if (rc) {
        ckpt_writer_abort(w);
        return rc;
    }
    if (keep_last > 0) rc = prune(w->run_dir, w->step, keep_last, e);
    if (rc == FT_OK && path_out) *path_out = ft_xstrdup(w->final_dir);
    writer_free(w);
    return rc;
}

/* ---------- listing ---------- */

static int scan(const char *run_dir, int cleanup, int64_t **steps, size_t *n, ft_error *e) {
    *steps = NULL;
    *n = 0;
    char *ck = ft_path_join(run_dir, "checkpoints");
    DIR *d = opendir(ck);
    if (!d) {
        int rc = errno == ENOENT ? FT_OK : ft_fail(e, FT_EIO, "%s: cannot list: %s", ck, strerror(errno));
        free(ck);
        return rc;
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        long pid;
        if (parse_step_name(de->d_name, &step, NULL)) {
            char *dir = ft_path_join(ck, de->d_name);
            char *m = ft_path_join(dir, CKPT_MANIFEST);
            int complete = ft_file_exists(m);
            free(m);
            free(dir);
            if (!complete) continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                *steps = ft_xrealloc(*steps, cap * sizeof **steps);
            }
            (*steps)[(*n)++] = step;
        } else if (cleanup && parse_step_name(de->d_name, &step, &pid)) {
            /* a writer killed mid-checkpoint; leave a live process's dir alone */
            int alive = pid == (long)getpid() || (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM));
            if (!alive) {
                char *dir = ft_path_join(ck, de->d_name);
                size_t dl = strlen(de->d_name);
                char *fin = ckpt_dir_for_step(run_dir, step), *m = ft_path_join(dir, CKPT_MANIFEST);
                /* killed while re-saving a step, after moving the previous one aside: put it back */
                if (dl > 4 && strcmp(de->d_name + dl - 4, "-old") == 0 && !ft_file_exists(fin) && ft_file_exists(m) &&
                    rename(dir, fin) == 0) {
                    if (*n == cap) {
                        cap = cap ? 2 * cap : 16;
                        *steps = ft_xrealloc(*steps, cap * sizeof **steps);
                    }
                    (*steps)[(*n)++] = step;
                } else {
                    rm_rf(dir);
                }
                free(m);
                free(fin);
                free(dir);
            }
        }
    }
    closedir(d);
    free(ck);
    if (*n) qsort(*steps, *n, sizeof **steps, cmp_i64);
    size_t k = 0; /* a dir put back above may also have been listed under its final name */
    for (size_t i = 0; i < *n; i++)
        if (k == 0 || (*steps)[k - 1] != (*steps)[i]) (*steps)[k++] = (*steps)[i];
    *n = k;
    return FT_OK;
}

int ckpt_list_steps(const char *run_dir, int64_t **steps, size_t *n, ft_error *e) {
    return scan(run_dir, 0, steps, n, e);
}

int ckpt_latest(const char *run_dir, char **path_out, int64_t *step_out, ft_error *e) {
    *path_out = NULL;
    int64_t *steps;
    size_t n;
    int rc = scan(run_dir, 1, &steps, &n, e);
    if (rc) return rc;
    if (n) {
        *path_out = ckpt_dir_for_step(run_dir, steps[n - 1]);
        if (step_out) *step_out = steps[n - 1];
    }
    free(steps);
    return FT_OK;
}

/* ---------- loading ---------- */

struct ckpt {
    char *dir;
    int64_t step;
    st_file *st;
    char *state;
};

void ckpt_free(ckpt *c) {
    if (!c) return;
    if (c->st) st_close(c->st);
    free(c->state);
    free(c->dir);
    free(c);
}

static int verify_manifest(ckpt *c, ft_error *e) {
    char *mp = ft_path_join(c->dir, CKPT_MANIFEST);
    if (!ft_file_exists(mp)) {
        int rc = ft_fail(e, FT_EINPUT, "%s: missing: the checkpoint is incomplete (interrupted while saving?); " CKPT_HINT,
                         mp);
        free(mp);
        return rc;
    }
    char *text;
    int rc = ft_read_file(mp, &text, NULL, e);
    if (rc) {
        free(mp);
        return rc;
    }
    cJSON *m = cJSON_Parse(text);
    free(text);
    cJSON *files = m ? cJSON_GetObjectItemCaseSensitive(m, "files") : NULL;
    cJSON *step = m ? cJSON_GetObjectItemCaseSensitive(m, "step") : NULL;
    cJSON *fmt = m ? cJSON_GetObjectItemCaseSensitive(m, "format") : NULL;
    if (!cJSON_IsArray(files) || !cJSON_IsNumber(step) || !cJSON_IsNumber(fmt)) {
        cJSON_Delete(m);
        rc = ft_fail(e, FT_EINPUT, "%s: not a valid checkpoint manifest (file corrupt); " CKPT_HINT, mp);
        free(mp);
        return rc;
    }
    if (fmt->valuedouble != 1) {
        cJSON_Delete(m);
        rc = ft_fail(e, FT_EINPUT, "%s: checkpoint format %g is not supported (this build reads format 1)", mp,
                     fmt->valuedouble);
        free(mp);
        return rc;
    }
    c->step = (int64_t)step->valuedouble;
    int have_t = 0, have_s = 0;
    for (cJSON *f = files->child; f && rc == FT_OK; f = f->next) {
        cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        cJSON *size = cJSON_GetObjectItemCaseSensitive(f, "size");
        cJSON *crc = cJSON_GetObjectItemCaseSensitive(f, "crc32");
        if (!cJSON_IsString(name) || !cJSON_IsNumber(size) || !cJSON_IsString(crc) || strchr(name->valuestring, '/') ||
            strcmp(name->valuestring, "..") == 0) {
            rc = ft_fail(e, FT_EINPUT, "%s: malformed file entry (file corrupt); " CKPT_HINT, mp);
            break;
        }
        have_t |= strcmp(name->valuestring, CKPT_TENSORS) == 0;
        have_s |= strcmp(name->valuestring, CKPT_STATE) == 0;
        char *p = ft_path_join(c->dir, name->valuestring);
        struct stat st;
        uint32_t want = (uint32_t)strtoul(crc->valuestring, NULL, 16), got = 0;
        if (stat(p, &st) != 0) {
            rc = ft_fail(e, FT_EINPUT, "%s: missing (listed in the manifest); " CKPT_HINT, p);
        } else if ((double)st.st_size != size->valuedouble) {
            rc = ft_fail(e, FT_EINPUT, "%s: size %lld bytes, the manifest says %.0f (file corrupt or truncated); " CKPT_HINT,
                         p, (long long)st.st_size, size->valuedouble);
        } else if ((rc = ckpt_crc32_file(p, &got, NULL, e)) == FT_OK && got != want) {
            rc = ft_fail(e, FT_EINPUT, "%s: CRC32 mismatch (file corrupt or truncated); " CKPT_HINT, p);
        }
        free(p);
    }
    if (rc == FT_OK && (!have_t || !have_s))
        rc = ft_fail(e, FT_EINPUT, "%s: does not list %s and %s (file corrupt); " CKPT_HINT, mp, CKPT_TENSORS, CKPT_STATE);
    cJSON_Delete(m);
    free(mp);
    return rc;
}

int ckpt_load(const char *dir, ckpt **out, ft_error *e) {
    *out = NULL;
    ckpt *c = ft_xcalloc(1, sizeof *c);
    c->dir = ft_xstrdup(dir);
    struct stat st;
    int rc = FT_OK;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = ft_fail(e, FT_EINPUT, "%s: not a checkpoint directory", dir);
    if (rc == FT_OK) rc = verify_manifest(c, e);
    if (rc == FT_OK) {
        char *p = ft_path_join(dir, CKPT_STATE);
        rc = ft_read_file(p, &c->state, NULL, e);
        free(p);
    }
    if (rc == FT_OK) {
        char *p = ft_path_join(dir, CKPT_TENSORS);
        rc = st_open(p, &c->st, e);
        free(p);
    }
    if (rc) {
        ckpt_free(c);
        return rc;
    }
    *out = c;
    return FT_OK;
}

int64_t ckpt_step(const ckpt *c) { return c->step; }
const char *ckpt_state(const ckpt *c) { return c->state; }
size_t ckpt_num_tensors(const ckpt *c) { return st_count(c->st); }
const st_tensor_info *ckpt_tensor_at(const ckpt *c, size_t i) { return st_at(c->st, i); }
const st_tensor_info *ckpt_find(const ckpt *c, const char *name) { return st_find(c->st, name); }

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int ckpt_read(const ckpt *c, const char *name, ft_dtype dt, int ndim, const int64_t *shape, void *dst, ft_error *e) {
    const st_tensor_info *t = st_find(c->st, name);
    if (!t)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is not in the checkpoint (was it saved with another configuration?)",
                       c->dir, name);
    int same = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[96], b[96];
        shape_str(t->ndim, t->shape, a, sizeof a);
        shape_str(ndim, shape, b, sizeof b);
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is %s %s in the checkpoint, expected %s %s", c->dir, name,
                       ft_dtype_name(t->dtype), a, ft_dtype_name(dt), b);
    }
    if (t->nbytes) memcpy(dst, t->data, t->nbytes);
    return FT_OK;
}
