#include "finetune/io/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "finetune/io/gguf_model.h"

/* ======================================================================
 * Reader
 * ====================================================================== */

struct st_file {
    char *path;                /* names the file in errors */
    void *map;                 /* mmap base, NULL for in-memory images */
    size_t map_len;
    const unsigned char *data; /* the data section */
    size_t data_len;
    st_tensor_info *t;         /* sorted by name */
    size_t n;
    char **meta;               /* key0, value0, key1, value1, ... in file order */
    size_t n_meta;
};

static int cmp_info_name(const void *a, const void *b) {
    return strcmp(((const st_tensor_info *)a)->name, ((const st_tensor_info *)b)->name);
}

typedef struct {
    uint64_t begin, end;
    size_t idx;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is an exact non-negative integer no larger than 2^53. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void st_free_contents(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((char *)f->t[i].name);
    free(f->t);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    f->t = NULL;
    f->meta = NULL;
    f->n = f->n_meta = 0;
}

static int parse_tensor(st_file *f, const cJSON *ent, st_tensor_info *ti, st_range *r, ft_error *e) {
    const char *P = f->path, *N = ent->string;
    if (!cJSON_IsObject(ent))
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': entry is not a JSON object", P, N);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(ent, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(ent, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(ent, "data_offsets");
    if (!cJSON_IsString(dt)) return ft_fail(e, FT_EINPUT, "%s: tensor '%s': missing or non-string \"dtype\"", P, N);
    if (ft_dtype_from_name(dt->valuestring, &ti->dtype) != 0)
        return ft_fail(e, FT_EINPUT,
                       "%s: tensor '%s': unknown dtype '%.32s' (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 "
                       "or BOOL)",
                       P, N, dt->valuestring);
    if (!cJSON_IsArray(sh)) return ft_fail(e, FT_EINPUT, "%s: tensor '%s': missing or non-array \"shape\"", P, N);
    int nd = cJSON_GetArraySize(sh);
    if (nd > 4) return ft_fail(e, FT_EINPUT, "%s: tensor '%s': shape has %d dims, at most 4 are supported", P, N, nd);
    ti->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    int i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return ft_fail(e, FT_EINPUT, "%s: tensor '%s': shape[%d] is not a non-negative integer", P, N, i);
        ti->shape[i] = (int64_t)v;
        if (!ft_mul_ok(numel, v, &numel)) overflow = 1;
    }
    for (; i < 4; i++) ti->shape[i] = 0;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", P, N);
    uint64_t b, en;
    if (!json_uint(off->child, &b) || !json_uint(off->child->next, &en))
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': data_offsets are not non-negative integers", P, N);
    if (b > en)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", P, N,
                       (unsigned long long)b, (unsigned long long)en);
    if (en > f->data_len)
        return ft_fail(e, FT_EINPUT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the data section of %zu bytes "
                       "(file truncated?)",
                       P, N, (unsigned long long)b, (unsigned long long)en, f->data_len);
    uint64_t need;
    char sb[128];
    shape_str(ti->shape, nd, sb, sizeof sb);
    if (overflow || !ft_mul_ok(numel, ft_dtype_size(ti->dtype), &need))
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': shape %s of %s overflows 64-bit size", P, N, sb,
                       ft_dtype_name(ti->dtype));
    if (need != en - b)
        return ft_fail(e, FT_EINPUT, "%s: tensor '%s': data_offsets [%llu, %llu] but shape %s of %s needs %llu bytes", P,
                       N, (unsigned long long)b, (unsigned long long)en, sb, ft_dtype_name(ti->dtype),
                       (unsigned long long)need);
    ti->data = f->data + b;
    ti->nbytes = (size_t)(en - b);
    ti->file = f->path;
    r->begin = b;
    r->end = en;
    return FT_OK;
}

/* Validate and index the header of the image buf[0..len). f->path is set. */
static int st_parse(st_file *f, const unsigned char *buf, size_t len, ft_error *e) {
    const char *P = f->path;
    if (len < 8)
        return ft_fail(e, FT_EINPUT, "%s: file is %zu bytes, too short for a safetensors header (truncated?)", P, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER)
        return ft_fail(e, FT_EINPUT, "%s: header length %llu exceeds the %llu-byte limit (not a safetensors file?)", P,
                       (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > len - 8)
        return ft_fail(e, FT_EINPUT, "%s: header length %llu exceeds the file size %zu (truncated?)", P,
                       (unsigned long long)hlen, len);
    const char *h = (const char *)buf + 8;
    if (hlen < 2 || h[0] != '{')
        return ft_fail(e, FT_EINPUT, "%s: header does not start with a JSON object '{'", P);
    f->data = buf + 8 + hlen;
    f->data_len = len - 8 - (size_t)hlen;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= h && end <= h + hlen ? (size_t)(end - h) : 0;
        return ft_fail(e, FT_EINPUT, "%s: header is not valid JSON (error near byte %zu of %llu)", P, at,
                       (unsigned long long)hlen);
    }
    for (const char *p = end; p && p < h + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) {
            cJSON_Delete(root);
            return ft_fail(e, FT_EINPUT, "%s: header has trailing bytes after its JSON object", P);
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ft_fail(e, FT_EINPUT, "%s: header is not a JSON object", P);
    }

    size_t cap = 0;
    for (const cJSON *c = root->child; c; c = c->next) cap++;
    f->t = ft_xcalloc(cap ? cap : 1, sizeof *f->t);
    st_range *rg = ft_xcalloc(cap ? cap : 1, sizeof *rg);
    int rc = FT_OK;
    for (const cJSON *c = root->child; c && rc == FT_OK; c = c->next) {
        if (!c->string) {
            rc = ft_fail(e, FT_EINPUT, "%s: header entry without a name", P);
            break;
        }
        if (strcmp(c->string, "__metadata__") == 0) {
            if (f->meta) {
                rc = ft_fail(e, FT_EINPUT, "%s: header has two __metadata__ entries", P);
                break;
            }
            if (cJSON_IsNull(c)) continue;
            if (!cJSON_IsObject(c)) {
                rc = ft_fail(e, FT_EINPUT, "%s: __metadata__ is not a JSON object", P);
                break;
            }
            size_t nm = 0;
            for (const cJSON *m = c->child; m; m = m->next) nm++;
            f->meta = ft_xcalloc(2 * nm + 1, sizeof *f->meta);
            for (const cJSON *m = c->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    rc = ft_fail(e, FT_EINPUT, "%s: __metadata__ key '%s' is not a string", P, m->string);
                    break;
                }
                f->meta[2 * f->n_meta] = ft_xstrdup(m->string);
                f->meta[2 * f->n_meta + 1] = ft_xstrdup(m->valuestring);
                f->n_meta++;
            }
            continue;
        }
        st_tensor_info *ti = &f->t[f->n];
        rc = parse_tensor(f, c, ti, &rg[f->n], e);
        if (rc == FT_OK) {
            ti->name = ft_xstrdup(c->string);
            rg[f->n].idx = f->n;
            f->n++;
        }
    }
    cJSON_Delete(root);
    if (rc == FT_OK) {
        /* no two tensors may share bytes (empty tensors share nothing) */
        qsort(rg, f->n, sizeof *rg, cmp_range);
        uint64_t prev_end = 0;
        size_t prev = (size_t)-1;
        for (size_t i = 0; i < f->n; i++) {
            if (rg[i].begin == rg[i].end) continue;
            if (prev != (size_t)-1 && rg[i].begin < prev_end) {
                rc = ft_fail(e, FT_EINPUT, "%s: tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])",
                             P, f->t[rg[prev].idx].name, f->t[rg[i].idx].name, (unsigned long long)rg[prev].begin,
                             (unsigned long long)prev_end, (unsigned long long)rg[i].begin,
                             (unsigned long long)rg[i].end);
                break;
            }
            prev = i;
            prev_end = rg[i].end;
        }
    }
    free(rg);
    if (rc == FT_OK) {
        qsort(f->t, f->n, sizeof *f->t, cmp_info_name);
        for (size_t i = 1; i < f->n; i++)
            if (strcmp(f->t[i - 1].name, f->t[i].name) == 0) {
                rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' appears twice in the header", P, f->t[i].name);
                break;
            }
    }
    if (rc != FT_OK) st_free_contents(f);
    return rc;
}

int st_open_memory(const void *buf, size_t len, const char *name, st_file **out, ft_error *e) {
    *out = NULL;
    st_file *f = ft_xcalloc(1, sizeof *f);
    f->path = ft_xstrdup(name ? name : "<memory>");
    int rc = st_parse(f, buf, len, e);
    if (rc != FT_OK) {
        st_close(f);
        return rc;
    }
    *out = f;
    return FT_OK;
}

int st_open(const char *path, st_file **out, ft_error *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ft_fail(e, errno == ENOENT ? FT_EINPUT : FT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int rc = ft_fail(e, FT_EIO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ft_fail(e, FT_EINPUT, "%s: not a regular file", path);
    }
    st_file *f = ft_xcalloc(1, sizeof *f);
    f->path = ft_xstrdup(path);
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        st_close(f);
        return ft_fail(e, FT_EINPUT, "%s: file is %zu bytes, too short for a safetensors header (truncated?)", path,
                       len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        st_close(f);
        return ft_fail(e, FT_EIO, "%s: mmap of %zu bytes failed: %s", path, len, strerror(errno));
    }
    f->map = map;
    f->map_len = len;
    int rc = st_parse(f, map, len, e);
    if (rc != FT_OK) {
        st_close(f);
        return rc;
    }
    *out = f;
    return FT_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    st_free_contents(f);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

const st_tensor_info *st_find(const st_file *f, const char *name) {
    if (!f || !name) return NULL;
    st_tensor_info key;
    memset(&key, 0, sizeof key);
    key.name = name;
    return bsearch(&key, f->t, f->n, sizeof *f->t, cmp_info_name);
}

size_t st_count(const st_file *f) { return f ? f->n : 0; }
const st_tensor_info *st_at(const st_file *f, size_t i) { return f && i < f->n ? &f->t[i] : NULL; }

const char *st_metadata(const st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

size_t st_metadata_count(const st_file *f) { return f ? f->n_meta : 0; }

void st_metadata_at(const st_file *f, size_t i, const char **key, const char **value) {
    *key = i < f->n_meta ? f->meta[2 * i] : NULL;
    *value = i < f->n_meta ? f->meta[2 * i + 1] : NULL;
}

/* ======================================================================
 * Model view: one file or a sharded checkpoint
 * ====================================================================== */

struct st_model {
    st_file **files;
    size_t nfiles;
    gguf_model *gguf;      /* a GGUF file instead of safetensors */
    st_tensor_info *ginfo; /* its tensors' infos */
    const st_tensor_info **idx; /* sorted by name */
    size_t n;
};

static int cmp_infop_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor_info *const *)a)->name, (*(const st_tensor_info *const *)b)->name);
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* DIR holds no safetensors: say why we will not read what is there. */
static int refuse_dir(const char *dir, ft_error *e) {
    DIR *d = opendir(dir);
    if (!d) return ft_fail(e, FT_EINPUT, "%s: cannot open checkpoint directory: %s", dir, strerror(errno));
    int pickle = 0;
    char other[256] = "";
    struct dirent *de;
    while ((de = readdir(d))) {
        if (ends_with(de->d_name, ".bin") || ends_with(de->d_name, ".pt") || ends_with(de->d_name, ".pth") ||
            strcmp(de->d_name, "pytorch_model.bin.index.json") == 0)
            pickle = 1;
        else if (ends_with(de->d_name, ".safetensors") && !other[0])
            snprintf(other, sizeof other, "%s", de->d_name);
    }
    closedir(d);
    if (pickle)
        return ft_fail(e, FT_EINPUT,
                       "%s: only pickle checkpoints (pytorch_model*.bin) found; they are not loaded (they can run "
                       "code). Convert with: python -c 'from transformers import AutoModelForCausalLM as M; "
                       "M.from_pretrained(\"%s\").save_pretrained(\"%s\", safe_serialization=True)'",
                       dir, dir, dir);
    if (other[0])
        return ft_fail(e, FT_EINPUT,
                       "%s: no model.safetensors or model.safetensors.index.json (found %s; pass that file's path "
                       "to load it alone)",
                       dir, other);
    return ft_fail(e, FT_EINPUT, "%s: no model.safetensors or model.safetensors.index.json in this directory", dir);
}

static void model_add_file(st_model *m, st_file *f) {
    m->files = ft_xrealloc(m->files, (m->nfiles + 1) * sizeof *m->files);
    m->files[m->nfiles++] = f;
}

static int model_open_index(st_model *m, const char *dir, const char *ipath, ft_error *e) {
    char *text = NULL;
    size_t len = 0;
    int rc = ft_read_file(ipath, &text, &len, e);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return ft_fail(e, FT_EINPUT, "%s: not valid JSON", ipath);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return ft_fail(e, FT_EINPUT, "%s: missing or non-object \"weight_map\"", ipath);
    }
    size_t cap = 0;
    for (const cJSON *c = wm->child; c; c = c->next) cap++;
    m->idx = ft_xcalloc(cap ? cap : 1, sizeof *m->idx);
    char **names = NULL; /* shard names parallel to m->files */
    for (const cJSON *c = wm->child; c && rc == FT_OK; c = c->next) {
        if (!cJSON_IsString(c)) {
            rc = ft_fail(e, FT_EINPUT, "%s: weight_map entry '%s' is not a string (shard file name)", ipath, c->string);
            break;
        }
        const char *shard = c->valuestring;
        if (!shard[0] || strchr(shard, '/') || strcmp(shard, "..") == 0 || strcmp(shard, ".") == 0) {
            rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' maps to shard '%s', which is not a plain file name", ipath,
                         c->string, shard);
            break;
        }
        size_t k = 0;
        while (k < m->nfiles && strcmp(names[k], shard) != 0) k++;
        if (k == m->nfiles) {
            char *sp = ft_path_join(dir, shard);
            if (!ft_file_exists(sp)) {
                rc = ft_fail(e, FT_EINPUT, "%s: shard '%s' (holding tensor '%s') is missing: %s", ipath, shard,
                             c->string, sp);
                free(sp);
                break;
            }
            st_file *f = NULL;
            rc = st_open(sp, &f, e);
            free(sp);
            if (rc) break;
            names = ft_xrealloc(names, (m->nfiles + 1) * sizeof *names);
            names[m->nfiles] = ft_xstrdup(shard);
            model_add_file(m, f);
        }
        const st_tensor_info *ti = st_find(m->files[k], c->string);
        if (!ti) {
            rc = ft_fail(e, FT_EINPUT, "%s: tensor '%s' is mapped to shard '%s' but that shard does not contain it",
                         ipath, c->string, shard);
            break;
        }
        m->idx[m->n++] = ti;
    }
    for (size_t k = 0; k < m->nfiles; k++) free(names[k]);
    free(names);
    cJSON_Delete(root);
    if (rc) return rc;
    qsort(m->idx, m->n, sizeof *m->idx, cmp_infop_name);
    for (size_t i = 1; i < m->n; i++)
        if (strcmp(m->idx[i - 1]->name, m->idx[i]->name) == 0)
            return ft_fail(e, FT_EINPUT, "%s: tensor '%s' is listed twice in weight_map", ipath, m->idx[i]->name);
    return FT_OK;
}

static int model_open_single(st_model *m, const char *path, ft_error *e) {
    st_file *f = NULL;
    int rc = st_open(path, &f, e);
    if (rc) return rc;
    model_add_file(m, f);
    m->n = f->n;
    m->idx = ft_xcalloc(f->n ? f->n : 1, sizeof *m->idx);
    for (size_t i = 0; i < f->n; i++) m->idx[i] = &f->t[i]; /* already sorted */
    return FT_OK;
}

/* A GGUF model file: its tensors under their HF names (gguf_model sorts them by name). */
static int model_open_gguf(st_model *m, const char *path, ft_error *e) {
    int rc = gguf_model_open(path, &m->gguf, e);
    if (rc) return rc;
    m->n = gguf_model_count(m->gguf);
    m->ginfo = ft_xcalloc(m->n ? m->n : 1, sizeof *m->ginfo);
    m->idx = ft_xcalloc(m->n ? m->n : 1, sizeof *m->idx);
    for (size_t i = 0; i < m->n; i++) {
        const gguf_model_tensor *g = gguf_model_at(m->gguf, i);
        st_tensor_info *t = &m->ginfo[i];
        t->name = g->name;
        t->dtype = FT_F32;
        t->ndim = g->ndim;
        for (int d = 0; d < g->ndim; d++) t->shape[d] = g->shape[d];
        t->data = g->t->data;
        t->nbytes = (size_t)g->t->nbytes;
        t->file = gguf_model_path(m->gguf);
        t->gguf = m->gguf;
        t->gguf_tensor = g;
        m->idx[i] = t;
    }
    return FT_OK;
}

int st_model_open(const char *dir, st_model **out, ft_error *e) {
    *out = NULL;
    st_model *m = ft_xcalloc(1, sizeof *m);
    int rc;
    if (!is_dir(dir) && gguf_is_gguf_path(dir)) {
        rc = model_open_gguf(m, dir, e);
    } else if (!is_dir(dir)) {
        if (!ft_file_exists(dir))
            rc = ft_fail(e, FT_EINPUT, "%s: no such checkpoint directory or file", dir);
        else if (ends_with(dir, ".bin") || ends_with(dir, ".pt") || ends_with(dir, ".pth"))
            rc = ft_fail(e, FT_EINPUT, "%s: pickle checkpoints are not loaded (they can run code); convert it to "
                                       "safetensors first", dir);
        else
            rc = model_open_single(m, dir, e);
    } else {
        char *single = ft_path_join(dir, "model.safetensors");
        char *index = ft_path_join(dir, "model.safetensors.index.json");
        if (ft_file_exists(single))
            rc = model_open_single(m, single, e);
        else if (ft_file_exists(index))
            rc = model_open_index(m, dir, index, e);
        else
            rc = refuse_dir(dir, e);
        free(single);
        free(index);
    }
    if (rc) {
        st_model_close(m);
        return rc;
    }
    *out = m;
    return FT_OK;
}

void st_model_close(st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nfiles; i++) st_close(m->files[i]);
    free(m->files);
    free(m->idx);
    free(m->ginfo);
    gguf_model_close(m->gguf);
    free(m);
}

const st_tensor_info *st_model_find(const st_model *m, const char *name) {
    if (!m || !name) return NULL;
    st_tensor_info key;
    memset(&key, 0, sizeof key);
    key.name = name;
    const st_tensor_info *kp = &key;
    const st_tensor_info **r = bsearch(&kp, m->idx, m->n, sizeof *m->idx, cmp_infop_name);
    return r ? *r : NULL;
}

size_t st_model_count(const st_model *m) { return m ? m->n : 0; }
const st_tensor_info *st_model_at(const st_model *m, size_t i) { return m && i < m->n ? m->idx[i] : NULL; }

const char *st_model_metadata(const st_model *m, const char *key) {
    if (!m) return NULL;
    for (size_t i = 0; i < m->nfiles; i++) {
        const char *v = st_metadata(m->files[i], key);
        if (v) return v;
    }
    return NULL;
}

int st_read_f32(const st_tensor_info *t, float *dst, size_t n, ft_error *e) {
    if (t->gguf) {
        const gguf_model_tensor *g = t->gguf_tensor;
        size_t numel = 1;
        for (int d = 0; d < g->ndim; d++) numel *= (size_t)g->shape[d];
        if (n != numel)
            return ft_fail(e, FT_EINPUT, "%s: tensor '%s' has %zu elements but the destination holds %zu", t->file,
                           t->name, numel, n);
        return gguf_model_read_f32(t->gguf, g, dst, n, e);
    }
    size_t es = ft_dtype_size(t->dtype);
    size_t numel = es ? t->nbytes / es : 0;
    char sb[128];
    shape_str(t->shape, t->ndim, sb, sizeof sb);
    if (t->dtype != FT_F32 && t->dtype != FT_F16 && t->dtype != FT_BF16)
        return ft_fail(e, FT_EINPUT, "tensor '%s': dtype %s cannot be read as fp32 (expected F32, F16 or BF16)",
                       t->name, ft_dtype_name(t->dtype));
    if (n != numel)
        return ft_fail(e, FT_EINPUT, "tensor '%s': has %zu elements (shape %s) but the destination holds %zu", t->name,
                       numel, sb, n);
    const unsigned char *p = t->data;
    if (t->dtype == FT_F32) {
        memcpy(dst, p, n * 4);
    } else {
        int bf = t->dtype == FT_BF16;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2); /* unaligned-safe; safetensors is little-endian like us */
            dst[i] = bf ? ft_bf16_to_f32(h) : ft_f16_to_f32(h);
        }
    }
    return FT_OK;
}

int st_model_read_f32(const st_model *m, const char *name, float *dst, size_t n, ft_error *e) {
    const st_tensor_info *t = st_model_find(m, name);
    if (!t) return ft_fail(e, FT_EINPUT, "checkpoint has no tensor '%s'", name);
    return st_read_f32(t, dst, n, e);
}

/* ======================================================================
 * Writer
 * ====================================================================== */

typedef struct {
    char *name;
    ft_dtype dt;
    int ndim;
    int64_t shape[4];
    uint64_t nbytes, begin;
    int written;
} st_decl;

struct st_writer {
    char *path, *tmp;
    int fd;
    char **meta; /* key, value pairs in insertion order */
    size_t n_meta;
    st_decl *d;
    size_t n, cap;
    int laid_out;
    uint64_t data_start;
};

/* Order of the Python library: larger dtypes (by its Dtype enum) first, then name. */
static int dtype_rank(ft_dtype t) {
    switch (t) {
    case FT_I64: return 9;
    case FT_F64: return 8;
    case FT_F32: return 7;
    case FT_I32: return 6;
    case FT_BF16: return 5;
    case FT_F16: return 4;
    case FT_I16: return 3;
    case FT_I8: return 2;
    case FT_U8: return 1;
    default: return 0; /* BOOL */
    }
}

static int cmp_decl(const void *a, const void *b) {
    const st_decl *x = a, *y = b;
    int rx = dtype_rank(x->dt), ry = dtype_rank(y->dt);
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);
}

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = ft_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* JSON string the way serde_json writes it (what the Python library uses). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_puts(b, esc);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

int st_writer_open(const char *path, st_writer **out, ft_error *e) {
    *out = NULL;
    st_writer *w = ft_xcalloc(1, sizeof *w);
    w->path = ft_xstrdup(path);
    size_t n = strlen(path) + 32;
    w->tmp = ft_xmalloc(n);
    snprintf(w->tmp, n, "%s.tmp.%d", path, (int)getpid());
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        int rc = ft_fail_sys(e, errno, "%s: cannot create", w->tmp);
        free(w->tmp);
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return FT_OK;
}

int st_writer_metadata(st_writer *w, const char *key, const char *value, ft_error *e) {
    if (w->laid_out) return ft_fail(e, FT_EINTERNAL, "%s: metadata '%s' set after data was written", w->path, key);
    for (size_t i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[2 * i], key) == 0) {
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = ft_xstrdup(value);
            return FT_OK;
        }
    w->meta = ft_xrealloc(w->meta, 2 * (w->n_meta + 1) * sizeof *w->meta);
    w->meta[2 * w->n_meta] = ft_xstrdup(key);
    w->meta[2 * w->n_meta + 1] = ft_xstrdup(value);
    w->n_meta++;
    return FT_OK;
}

static st_decl *find_decl(st_writer *w, const char *name) {
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->d[i].name, name) == 0) return &w->d[i];
    return NULL;
}

static int check_decl(const char *where, const char *name, ft_dtype dt, int ndim, const int64_t *shape,
                      uint64_t *nbytes, ft_error *e) {
    if (!name || strcmp(name, "__metadata__") == 0)
        return ft_fail(e, FT_EINTERNAL, "%s: invalid tensor name '%s'", where, name ? name : "(null)");
    if ((unsigned)dt >= FT_DTYPE_COUNT) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s': bad dtype %d", where, name, dt);
    if (ndim < 0 || ndim > 4)
        return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s': %d dims, 0..4 supported", where, name, ndim);
    uint64_t nb = ft_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s': negative dim %d", where, name, i);
        if (!ft_mul_ok(nb, (uint64_t)shape[i], &nb))
            return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s': size overflows", where, name);
    }
    *nbytes = nb;
    return FT_OK;
}

int st_writer_declare(st_writer *w, const char *name, ft_dtype dt, int ndim, const int64_t *shape, ft_error *e) {
    if (w->laid_out)
        return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' declared after data was written", w->path, name);
    uint64_t nb = 0;
    int rc = check_decl(w->path, name, dt, ndim, shape, &nb, e);
    if (rc) return rc;
    if (find_decl(w, name)) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' declared twice", w->path, name);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->d = ft_xrealloc(w->d, w->cap * sizeof *w->d);
    }
    st_decl *d = &w->d[w->n++];
    memset(d, 0, sizeof *d);
    d->name = ft_xstrdup(name);
    d->dt = dt;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++) d->shape[i] = shape[i];
    d->nbytes = nb;
    return FT_OK;
}

/* Fix offsets and write the header; after this only data may be written. */
static int writer_layout(st_writer *w, ft_error *e) {
    if (w->laid_out) return FT_OK;
    qsort(w->d, w->n, sizeof *w->d, cmp_decl);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        w->d[i].begin = off;
        off += w->d[i].nbytes;
    }
    sbuf b = {0};
    sb_puts(&b, "{");
    int first = 1;
    if (w->n_meta) {
        sb_puts(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_puts(&b, ",");
            sb_json_str(&b, w->meta[2 * i]);
            sb_puts(&b, ":");
            sb_json_str(&b, w->meta[2 * i + 1]);
        }
        sb_puts(&b, "}");
        first = 0;
    }
    for (size_t i = 0; i < w->n; i++) {
        const st_decl *d = &w->d[i];
        char num[64];
        if (!first) sb_puts(&b, ",");
        first = 0;
        sb_json_str(&b, d->name);
        sb_puts(&b, ":{\"dtype\":\"");
        sb_puts(&b, ft_dtype_name(d->dt));
        sb_puts(&b, "\",\"shape\":[");
        for (int k = 0; k < d->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)d->shape[k]);
            sb_puts(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)d->begin,
                 (unsigned long long)(d->begin + d->nbytes));
        sb_puts(&b, num);
    }
    sb_puts(&b, "}");
    while (b.len % 8) sb_puts(&b, " "); /* data starts 8-aligned, as the Python library pads */
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
    w->data_start = 8 + b.len;
    int rc = FT_OK;
    if (ft_write_all(w->fd, len8, 8, 0, w->tmp) != 0 || ft_write_all(w->fd, b.s, b.len, 8, w->tmp) != 0 ||
        ftruncate(w->fd, (off_t)(w->data_start + off)) != 0)
        rc = ft_fail_sys(e, errno, "%s: writing the header failed", w->tmp);
    free(b.s);
    w->laid_out = 1;
    return rc;
}

int st_writer_write(st_writer *w, const char *name, const void *data, ft_error *e) {
    int rc = writer_layout(w, e);
    if (rc) return rc;
    st_decl *d = find_decl(w, name);
    if (!d) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' written but never declared", w->path, name);
    if (d->nbytes && ft_write_all(w->fd, data, d->nbytes, (int64_t)(w->data_start + d->begin), w->tmp) != 0)
        return ft_fail_sys(e, errno, "%s: writing tensor '%s' (%llu bytes) failed", w->tmp, name,
                           (unsigned long long)d->nbytes);
    d->written = 1;
    return FT_OK;
}

static void writer_free(st_writer *w) {
    for (size_t i = 0; i < w->n; i++) free(w->d[i].name);
    free(w->d);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    free(w->tmp);
    free(w->path);
    free(w);
}

static void fsync_parent(const char *path) {
    char *p = ft_xstrdup(path);
    int fd = open(dirname(p), O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: makes the rename durable */
        close(fd);
    }
    free(p);
}

int st_writer_finish(st_writer *w, ft_error *e) {
    int rc = writer_layout(w, e);
    for (size_t i = 0; rc == FT_OK && i < w->n; i++)
        if (!w->d[i].written && w->d[i].nbytes)
            rc = ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' was declared but its data never written", w->path,
                         w->d[i].name);
    if (rc == FT_OK && fsync(w->fd) != 0) rc = ft_fail_sys(e, errno, "%s: fsync failed", w->tmp);
    if (close(w->fd) != 0 && rc == FT_OK) rc = ft_fail_sys(e, errno, "%s: close failed", w->tmp);
    w->fd = -1;
    if (rc == FT_OK && rename(w->tmp, w->path) != 0)
        rc = ft_fail_sys(e, errno, "%s: rename to %s failed", w->tmp, w->path);
    if (rc == FT_OK)
        fsync_parent(w->path);
    else
        unlink(w->tmp);
    writer_free(w);
    return rc;
}

void st_writer_abort(st_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    writer_free(w);
}

/* ======================================================================
 * Sharded writer (transformers' save_pretrained layout)
 * ====================================================================== */

typedef struct {
    char *name;
    ft_dtype dt;
    int ndim;
    int64_t shape[4];
    uint64_t nbytes, numel;
    int shard;
} st_sdecl;

struct st_sharded {
    char *dir, *prefix;
    uint64_t max;
    char **meta;
    size_t n_meta;
    st_sdecl *d;
    size_t n, cap;
    st_writer **w;
    int nshards;
    int started;
};

int st_sharded_open(const char *dir, const char *prefix, uint64_t max_shard_bytes, st_sharded **out, ft_error *e) {
    *out = NULL;
    int rc = ft_mkdir_p(dir, e);
    if (rc) return rc;
    st_sharded *s = ft_xcalloc(1, sizeof *s);
    s->dir = ft_xstrdup(dir);
    s->prefix = ft_xstrdup(prefix && prefix[0] ? prefix : "model");
    s->max = max_shard_bytes ? max_shard_bytes : ST_DEFAULT_SHARD_BYTES;
    *out = s;
    return FT_OK;
}

int st_sharded_metadata(st_sharded *s, const char *key, const char *value, ft_error *e) {
    if (s->started) return ft_fail(e, FT_EINTERNAL, "%s: metadata '%s' set after data was written", s->dir, key);
    s->meta = ft_xrealloc(s->meta, 2 * (s->n_meta + 1) * sizeof *s->meta);
    s->meta[2 * s->n_meta] = ft_xstrdup(key);
    s->meta[2 * s->n_meta + 1] = ft_xstrdup(value);
    s->n_meta++;
    return FT_OK;
}

static st_sdecl *sfind(st_sharded *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->d[i].name, name) == 0) return &s->d[i];
    return NULL;
}

int st_sharded_declare(st_sharded *s, const char *name, ft_dtype dt, int ndim, const int64_t *shape, ft_error *e) {
    if (s->started) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' declared after data was written", s->dir, name);
    uint64_t nb = 0;
    int rc = check_decl(s->dir, name, dt, ndim, shape, &nb, e);
    if (rc) return rc;
    if (sfind(s, name)) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' declared twice", s->dir, name);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->d = ft_xrealloc(s->d, s->cap * sizeof *s->d);
    }
    st_sdecl *d = &s->d[s->n++];
    memset(d, 0, sizeof *d);
    d->name = ft_xstrdup(name);
    d->dt = dt;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++) d->shape[i] = shape[i];
    d->nbytes = nb;
    d->numel = nb / ft_dtype_size(dt);
    return FT_OK;
}

static char *shard_path(const st_sharded *s, int i) {
    char name[512];
    if (s->nshards == 1)
        snprintf(name, sizeof name, "%s.safetensors", s->prefix);
    else
        snprintf(name, sizeof name, "%s-%05d-of-%05d.safetensors", s->prefix, i + 1, s->nshards);
    return ft_path_join(s->dir, name);
}

/* Assign shards as huggingface_hub's split_state_dict_into_shards does, then open one writer per shard. */
static int sharded_start(st_sharded *s, ft_error *e) {
    if (s->started) return FT_OK;
    s->started = 1;
    int cur = -1;      /* shard being filled, -1 = none yet */
    uint64_t cur_size = 0;
    int next = 0;      /* shards are numbered in the order they are closed */
    int *order = ft_xcalloc(s->n + 1, sizeof *order); /* provisional id -> final index */
    int nprov = 0;
    for (size_t i = 0; i < s->n; i++) {
        st_sdecl *d = &s->d[i];
        if (d->nbytes > s->max) { /* a shard of its own, closed at once */
            d->shard = nprov;
            order[nprov++] = next++;
            continue;
        }
        if (cur >= 0 && cur_size + d->nbytes > s->max) {
            order[cur] = next++;
            cur = -1;
        }
        if (cur < 0) {
            cur = nprov++;
            cur_size = 0;
        }
        d->shard = cur;
        cur_size += d->nbytes;
    }
    if (cur >= 0) order[cur] = next++;
    if (next == 0) next = 1; /* no tensors: one empty file */
    for (size_t i = 0; i < s->n; i++) s->d[i].shard = order[s->d[i].shard];
    free(order);
    s->nshards = next;
    s->w = ft_xcalloc((size_t)next, sizeof *s->w);
    for (int k = 0; k < next; k++) {
        char *p = shard_path(s, k);
        int rc = st_writer_open(p, &s->w[k], e);
        free(p);
        if (rc) return rc;
        for (size_t m = 0; m < s->n_meta; m++)
            if ((rc = st_writer_metadata(s->w[k], s->meta[2 * m], s->meta[2 * m + 1], e))) return rc;
    }
    for (size_t i = 0; i < s->n; i++) {
        const st_sdecl *d = &s->d[i];
        int rc = st_writer_declare(s->w[d->shard], d->name, d->dt, d->ndim, d->shape, e);
        if (rc) return rc;
    }
    return FT_OK;
}

int st_sharded_write(st_sharded *s, const char *name, const void *data, ft_error *e) {
    int rc = sharded_start(s, e);
    if (rc) return rc;
    st_sdecl *d = sfind(s, name);
    if (!d) return ft_fail(e, FT_EINTERNAL, "%s: tensor '%s' written but never declared", s->dir, name);
    return st_writer_write(s->w[d->shard], name, data, e);
}

static int cmp_sdecl_name(const void *a, const void *b) {
    return strcmp((*(const st_sdecl *const *)a)->name, (*(const st_sdecl *const *)b)->name);
}

/* model.safetensors.index.json as transformers writes it: json.dumps(indent=2, sort_keys=True) + "\n". */
static int write_index(st_sharded *s, ft_error *e) {
    uint64_t total = 0, params = 0;
    const st_sdecl **v = ft_xcalloc(s->n + 1, sizeof *v);
    for (size_t i = 0; i < s->n; i++) {
        total += s->d[i].nbytes;
        params += s->d[i].numel;
        v[i] = &s->d[i];
    }
    qsort(v, s->n, sizeof *v, cmp_sdecl_name);
    sbuf b = {0};
    char num[160];
    snprintf(num, sizeof num, "{\n  \"metadata\": {\n    \"total_parameters\": %llu,\n    \"total_size\": %llu\n  },\n",
             (unsigned long long)params, (unsigned long long)total);
    sb_puts(&b, num);
    sb_puts(&b, "  \"weight_map\": {");
    for (size_t i = 0; i < s->n; i++) {
        sb_puts(&b, i ? ",\n    " : "\n    ");
        sb_json_str(&b, v[i]->name);
        char *p = shard_path(s, v[i]->shard);
        sb_puts(&b, ": ");
        sb_json_str(&b, strrchr(p, '/') ? strrchr(p, '/') + 1 : p);
        free(p);
    }
    sb_puts(&b, s->n ? "\n  }\n}\n" : "}\n}\n");
    char name[512];
    snprintf(name, sizeof name, "%s.safetensors.index.json", s->prefix);
    char *ip = ft_path_join(s->dir, name);
    int rc = ft_write_file_atomic(ip, b.s, b.len, e);
    free(ip);
    free(b.s);
    free(v);
    return rc;
}

static void sharded_free(st_sharded *s) {
    for (size_t i = 0; i < s->n; i++) free(s->d[i].name);
    free(s->d);
    for (size_t i = 0; i < 2 * s->n_meta; i++) free(s->meta[i]);
    free(s->meta);
    free(s->w);
    free(s->dir);
    free(s->prefix);
    free(s);
}

int st_sharded_finish(st_sharded *s, ft_error *e) {
    int rc = sharded_start(s, e);
    int k = 0;
    for (; rc == FT_OK && k < s->nshards; k++) {
        rc = st_writer_finish(s->w[k], e);
        s->w[k] = NULL;
    }
    for (; k < s->nshards; k++) st_writer_abort(s->w[k]); /* after a failure: leave no temp files */
    if (rc == FT_OK && s->nshards > 1) rc = write_index(s, e);
    sharded_free(s);
    return rc;
}

void st_sharded_abort(st_sharded *s) {
    if (!s) return;
    for (int k = 0; k < s->nshards; k++) st_writer_abort(s->w[k]);
    sharded_free(s);
}

int st_sharded_num_shards(const st_sharded *s) { return s ? s->nshards : 0; }
