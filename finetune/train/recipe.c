#include "finetune/train/recipe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *key;
    cJSON *def;  /* default used when absent (owned; NULL = no default recorded) */
    int whole;   /* the whole subtree counts as read (rcp_get_json) */
    cJSON *dump; /* value for the resolved dump (absolute paths), owned; NULL = as in the recipe */
} rcp_read;

struct rcp {
    cJSON *root;
    char *name;
    char *base_dir; /* "" = current directory */
    rcp_read *reads;
    size_t nreads, cap;
    char **ovr; /* keys set by overrides: relative paths there are cwd-relative */
    size_t novr;
};

/* ---------- comments ---------- */

int rcp_strip_comments(char *t, const char *name, ft_error *e) {
    int in_str = 0, line = 1;
    for (char *p = t; *p; p++) {
        if (*p == '\n') line++;
        if (in_str) {
            if (*p == '\\' && p[1]) {
                p++;
                if (*p == '\n') line++;
            } else if (*p == '"') {
                in_str = 0;
            }
        } else if (*p == '"') {
            in_str = 1;
        } else if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n') *p++ = ' ';
            if (!*p) break;
            line++;
        } else if (p[0] == '/' && p[1] == '*') {
            int start = line;
            p[0] = p[1] = ' ';
            p += 2;
            while (*p && !(p[0] == '*' && p[1] == '/')) {
                if (*p == '\n')
                    line++;
                else
                    *p = ' ';
                p++;
            }
            if (!*p) return ft_fail(e, FT_EINPUT, "%s:%d: unterminated /* comment", name, start);
            p[0] = ' ';
            p[1] = ' ';
            p++;
        }
    }
    return FT_OK;
}

/* ---------- helpers ---------- */

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsBool(v)) return "bool";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid value";
}

static int check_dups(const cJSON *o, const char *name, const char *prefix, ft_error *e) {
    if (!cJSON_IsObject(o) && !cJSON_IsArray(o)) return FT_OK;
    for (const cJSON *a = o->child; a; a = a->next) {
        if (cJSON_IsObject(o))
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0)
                    return ft_fail(e, FT_EINPUT, "%s: duplicate key '%s%s'", name, prefix, a->string);
        char sub[512];
        if (cJSON_IsObject(o))
            snprintf(sub, sizeof sub, "%s%s.", prefix, a->string);
        else
            snprintf(sub, sizeof sub, "%s", prefix);
        int rc = check_dups(a, name, sub, e);
        if (rc) return rc;
    }
    return FT_OK;
}

static rcp *rcp_alloc(const char *name, const char *base_dir, cJSON *root) {
    rcp *r = ft_xcalloc(1, sizeof *r);
    r->root = root;
    r->name = ft_xstrdup(name);
    r->base_dir = ft_xstrdup(base_dir ? base_dir : "");
    return r;
}

rcp *rcp_new(void) { return rcp_alloc("recipe", "", cJSON_CreateObject()); }

int rcp_parse(const char *text, const char *name, const char *base_dir, rcp **out, ft_error *e) {
    *out = NULL;
    char *t = ft_xstrdup(text);
    int rc = rcp_strip_comments(t, name, e);
    if (rc) {
        free(t);
        return rc;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(t, &end, 1);
    if (!root) {
        size_t off = end && end >= t ? (size_t)(end - t) : 0;
        int line = 1, col = 1;
        for (size_t i = 0; i < off && t[i]; i++) {
            if (t[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        char near[24] = {0};
        if (end && end >= t) snprintf(near, sizeof near, "%.20s", end);
        for (char *c = near; *c; c++)
            if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
        free(t);
        return ft_fail(e, FT_EINPUT, "%s:%d:%d: invalid JSON near '%s' (a recipe is one JSON object; // comments allowed)",
                       name, line, col, near);
    }
    free(t);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ft_fail(e, FT_EINPUT, "%s: a recipe must be a JSON object, got %s", name, type_name(root));
    }
    rc = check_dups(root, name, "", e);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    *out = rcp_alloc(name, base_dir, root);
    return FT_OK;
}

int rcp_load(const char *path, rcp **out, ft_error *e) {
    char *text;
    int rc = ft_read_file(path, &text, NULL, e);
    if (rc) return rc;
    char *dir = ft_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0; /* "/x.json" -> "/" */
    else if (slash)
        *slash = 0;
    else
        dir[0] = 0;
    rc = rcp_parse(text, path, dir, out, e);
    free(dir);
    free(text);
    return rc;
}

void rcp_free(rcp *r) {
    if (!r) return;
    cJSON_Delete(r->root);
    for (size_t i = 0; i < r->nreads; i++) {
        free(r->reads[i].key);
        cJSON_Delete(r->reads[i].def);
        cJSON_Delete(r->reads[i].dump);
    }
    free(r->reads);
    for (size_t i = 0; i < r->novr; i++) free(r->ovr[i]);
    free(r->ovr);
    free(r->name);
    free(r->base_dir);
    free(r);
}

const char *rcp_name(const rcp *r) { return r->name; }

/* Walk a dotted path. Returns FT_OK with *out NULL when absent; FT_EINPUT when
 * an intermediate is not an object. */
static int lookup(const rcp *r, const char *key, cJSON **out, ft_error *e) {
    *out = NULL;
    cJSON *cur = r->root;
    const char *p = key;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char seg[256];
        if (n == 0 || n >= sizeof seg) return ft_fail(e, FT_EINTERNAL, "recipe key '%s' is malformed", key);
        memcpy(seg, p, n);
        seg[n] = 0;
        cJSON *next = cJSON_GetObjectItemCaseSensitive(cur, seg);
        if (!next) return FT_OK;
        if (!dot) {
            *out = next;
            return FT_OK;
        }
        if (!cJSON_IsObject(next))
            return ft_fail(e, FT_EINPUT, "%s: key '%.*s' must be an object (for '%s'), got %s", r->name,
                           (int)(dot - key), key, key, type_name(next));
        cur = next;
        p = dot + 1;
    }
}

static int is_override(const rcp *r, const char *key) {
    for (size_t i = 0; i < r->novr; i++)
        if (strcmp(r->ovr[i], key) == 0) return 1;
    return 0;
}

static void record(rcp *r, const char *key, cJSON *def, int whole) {
    for (size_t i = 0; i < r->nreads; i++)
        if (strcmp(r->reads[i].key, key) == 0) {
            if (!r->reads[i].def) {
                r->reads[i].def = def;
            } else {
                cJSON_Delete(def);
            }
            r->reads[i].whole |= whole;
            return;
        }
    if (r->nreads == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 32;
        r->reads = ft_xrealloc(r->reads, r->cap * sizeof *r->reads);
    }
    r->reads[r->nreads++] = (rcp_read){ft_xstrdup(key), def, whole, NULL};
}

static int type_error(const rcp *r, const char *key, const char *expected, const cJSON *v, ft_error *e) {
    char got[96];
    if (cJSON_IsString(v))
        snprintf(got, sizeof got, "string \"%.60s\"", v->valuestring);
    else if (cJSON_IsNumber(v))
        snprintf(got, sizeof got, "number %.17g", v->valuedouble);
    else
        snprintf(got, sizeof got, "%s", type_name(v));
    return ft_fail(e, FT_EINPUT, "%s: key '%s'%s: expected %s, got %s", r->name, key,
                   is_override(r, key) ? " (set on the command line)" : "", expected, got);
}

/* Fetch a present, non-null value (NULL when absent) and record the read. */
static int fetch(rcp *r, const char *key, cJSON *def, cJSON **v, ft_error *e) {
    int rc = lookup(r, key, v, e);
    if (rc) {
        cJSON_Delete(def);
        return rc;
    }
    if (*v && cJSON_IsNull(*v)) *v = NULL;
    record(r, key, def, 0);
    return FT_OK;
}

int rcp_has(const rcp *r, const char *key) {
    cJSON *v;
    if (lookup(r, key, &v, NULL)) return 0;
    return v && !cJSON_IsNull(v);
}

int rcp_get_i64(rcp *r, const char *key, int64_t def, int64_t *out, ft_error *e) {
    cJSON *v;
    int rc = fetch(r, key, cJSON_CreateNumber((double)def), &v, e);
    if (rc) return rc;
    if (!v) {
        *out = def;
        return FT_OK;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || fabs(d) > 9007199254740992.0)
        return type_error(r, key, "an integer", v, e);
    *out = (int64_t)d;
    return FT_OK;
}

int rcp_get_int(rcp *r, const char *key, int def, int *out, ft_error *e) {
    int64_t x;
    int rc = rcp_get_i64(r, key, def, &x, e);
    if (rc) return rc;
    if (x < -2147483647 - 1 || x > 2147483647) {
        cJSON *v;
        lookup(r, key, &v, NULL);
        return type_error(r, key, "an integer in 32-bit range", v, e);
    }
    *out = (int)x;
    return FT_OK;
}

int rcp_get_float(rcp *r, const char *key, double def, double *out, ft_error *e) {
    cJSON *v;
    int rc = fetch(r, key, cJSON_CreateNumber(def), &v, e);
    if (rc) return rc;
    if (!v) {
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsNumber(v)) return type_error(r, key, "a number", v, e);
    *out = v->valuedouble;
    return FT_OK;
}

int rcp_get_bool(rcp *r, const char *key, int def, int *out, ft_error *e) {
    cJSON *v;
    int rc = fetch(r, key, cJSON_CreateBool(def), &v, e);
    if (rc) return rc;
    if (!v) {
        *out = def != 0;
        return FT_OK;
    }
    if (!cJSON_IsBool(v)) return type_error(r, key, "true or false", v, e);
    *out = cJSON_IsTrue(v);
    return FT_OK;
}

int rcp_get_string(rcp *r, const char *key, const char *def, const char **out, ft_error *e) {
    cJSON *v;
    int rc = fetch(r, key, def ? cJSON_CreateString(def) : NULL, &v, e);
    if (rc) return rc;
    if (!v) {
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsString(v)) return type_error(r, key, "a string", v, e);
    *out = v->valuestring;
    return FT_OK;
}

int rcp_get_string_list(rcp *r, const char *key, const char *const *def, size_t ndef, const char ***out,
                        size_t *n, ft_error *e) {
    cJSON *d = NULL;
    if (def) {
        d = cJSON_CreateArray();
        for (size_t i = 0; i < ndef; i++) cJSON_AddItemToArray(d, cJSON_CreateString(def[i]));
    }
    cJSON *v;
    int rc = fetch(r, key, d, &v, e);
    if (rc) return rc;
    *out = NULL;
    *n = 0;
    if (!v) {
        if (def && ndef) {
            *out = ft_xcalloc(ndef, sizeof **out);
            for (size_t i = 0; i < ndef; i++) (*out)[i] = def[i];
            *n = ndef;
        }
        return FT_OK;
    }
    if (cJSON_IsString(v)) {
        *out = ft_xcalloc(1, sizeof **out);
        (*out)[0] = v->valuestring;
        *n = 1;
        return FT_OK;
    }
    if (!cJSON_IsArray(v)) return type_error(r, key, "a string or an array of strings", v, e);
    size_t cnt = (size_t)cJSON_GetArraySize(v), i = 0;
    const char **arr = ft_xcalloc(cnt ? cnt : 1, sizeof *arr);
    for (cJSON *it = v->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it)) {
            free(arr);
            char k[300];
            snprintf(k, sizeof k, "%s[%zu]", key, i);
            return ft_fail(e, FT_EINPUT, "%s: key '%s': expected a string, got %s", r->name, k, type_name(it));
        }
        arr[i] = it->valuestring;
    }
    *out = arr;
    *n = cnt;
    return FT_OK;
}

/* p spelled without "." components, repeated slashes and "dir/.." pairs, in place ("recipes/../out/x" ->
 * "out/x"), so the paths we print are the ones a user would type. A "dir/.." pair is kept when dir is a
 * symbolic link, where removing it would name another place. */
static void normalize_path(char *p) {
    int absolute = p[0] == '/';
    char *src = ft_xstrdup(p), *save = NULL;
    size_t n = 0, *starts = ft_xmalloc((strlen(p) / 2 + 2) * sizeof *starts); /* start of each kept component */
    char *out = p;
    size_t len = 0;
    if (absolute) out[len++] = '/';
    for (char *c = strtok_r(src, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0) continue;
        if (strcmp(c, "..") == 0 && n > 0) {
            const char *last = out + starts[n - 1];
            struct stat st;
            out[len] = 0;
            if (strcmp(last, "..") != 0 && !(lstat(out, &st) == 0 && S_ISLNK(st.st_mode))) {
                len = starts[--n];
                if (len > (size_t)absolute) len--; /* the slash before it */
                continue;
            }
        }
        if (strcmp(c, "..") == 0 && absolute && n == 0) continue; /* "/.." is "/" */
        if (len > (size_t)absolute) out[len++] = '/';
        starts[n++] = len;
        size_t cl = strlen(c);
        memcpy(out + len, c, cl);
        len += cl;
    }
    if (len == 0) out[len++] = '.';
    out[len] = 0;
    free(starts);
    free(src);
}

/* v: not empty (the getters refuse "": normalize_path rewrites in place and "." would not fit). */
static char *resolve(const rcp *r, const char *key, const char *v) {
    char *p = v[0] == '/' || !r->base_dir[0] || is_override(r, key) ? ft_xstrdup(v) : ft_path_join(r->base_dir, v);
    normalize_path(p);
    return p;
}

/* The resolved dump holds absolute paths, so recipe.resolved.json works from the run dir. */
static cJSON *abs_path_json(const char *p) {
    char cwd[4096];
    if (p[0] == '/' || !getcwd(cwd, sizeof cwd)) return cJSON_CreateString(p);
    const char *q = p;
    while (q[0] == '.' && q[1] == '/') q += 2;
    char *a = ft_path_join(cwd, q[0] && strcmp(q, ".") != 0 ? q : "");
    size_t n = strlen(a);
    if (n > 1 && a[n - 1] == '/') a[n - 1] = 0;
    cJSON *j = cJSON_CreateString(a);
    free(a);
    return j;
}

static void set_dump(rcp *r, const char *key, cJSON *v) {
    for (size_t i = 0; i < r->nreads; i++)
        if (strcmp(r->reads[i].key, key) == 0) {
            cJSON_Delete(r->reads[i].dump);
            r->reads[i].dump = v;
            return;
        }
    cJSON_Delete(v);
}

int rcp_get_path(rcp *r, const char *key, const char *def, char **out, ft_error *e) {
    const char *s;
    *out = NULL;
    cJSON *v;
    int rc = lookup(r, key, &v, e);
    if (rc) return rc;
    int present = v && !cJSON_IsNull(v);
    rc = rcp_get_string(r, key, def, &s, e);
    if (rc) return rc;
    if (!s) return FT_OK;
    if (present && !s[0]) return ft_fail(e, FT_EINPUT, "%s: key '%s' is an empty path", rcp_name(r), key);
    *out = present ? resolve(r, key, s) : ft_xstrdup(s);
    set_dump(r, key, abs_path_json(*out));
    return FT_OK;
}

int rcp_get_path_list(rcp *r, const char *key, char ***out, size_t *n, ft_error *e) {
    const char **v;
    *out = NULL;
    *n = 0;
    int rc = rcp_get_string_list(r, key, NULL, 0, &v, n, e);
    if (rc) return rc;
    if (*n == 0) {
        free(v);
        return FT_OK;
    }
    for (size_t i = 0; i < *n; i++)
        if (!v[i][0]) {
            free(v);
            *n = 0;
            return ft_fail(e, FT_EINPUT, "%s: key '%s': entry %zu is an empty path", rcp_name(r), key, i);
        }
    *out = ft_xcalloc(*n, sizeof **out);
    cJSON *dump = cJSON_CreateArray();
    for (size_t i = 0; i < *n; i++) {
        (*out)[i] = resolve(r, key, v[i]);
        cJSON_AddItemToArray(dump, abs_path_json((*out)[i]));
    }
    set_dump(r, key, dump);
    free(v);
    return FT_OK;
}

void rcp_free_list(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

int rcp_get_json(rcp *r, const char *key, char **out, ft_error *e) {
    cJSON *v;
    *out = NULL;
    int rc = lookup(r, key, &v, e);
    if (rc) return rc;
    record(r, key, NULL, 1);
    if (v) *out = cJSON_PrintUnformatted(v);
    return FT_OK;
}

/* ---------- overrides ---------- */

int rcp_override(rcp *r, const char *kv, ft_error *e) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return ft_fail(e, FT_EINPUT, "override '%s': expected key=value (e.g. lora.r=8, optim.lr=2e-5)", kv);
    size_t klen = (size_t)(eq - kv);
    char *key = ft_xmalloc(klen + 1);
    memcpy(key, kv, klen);
    key[klen] = 0;
    if (key[0] == '.' || key[klen - 1] == '.' || strstr(key, "..")) {
        free(key);
        return ft_fail(e, FT_EINPUT, "override '%s': malformed key (dotted path like lora.r expected)", kv);
    }
    const char *val = eq + 1;
    cJSON *v = cJSON_ParseWithOpts(val, NULL, 1);
    if (!v) v = cJSON_CreateString(val);
    /* walk / create the intermediate objects */
    cJSON *cur = r->root;
    char *p = key;
    for (;;) {
        char *dot = strchr(p, '.');
        if (!dot) break;
        *dot = 0;
        cJSON *next = cJSON_GetObjectItemCaseSensitive(cur, p);
        if (!next) {
            next = cJSON_CreateObject();
            cJSON_AddItemToObject(cur, p, next);
        } else if (!cJSON_IsObject(next)) {
            *dot = '.';
            cJSON_Delete(v);
            int rc = ft_fail(e, FT_EINPUT, "override '%s': '%.*s' is a %s in %s, not an object", kv,
                             (int)(dot - key), key, type_name(next), r->name);
            free(key);
            return rc;
        }
        *dot = '.';
        cur = next;
        p = dot + 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(cur, p))
        cJSON_ReplaceItemInObjectCaseSensitive(cur, p, v);
    else
        cJSON_AddItemToObject(cur, p, v);
    if (!is_override(r, key)) {
        r->ovr = ft_xrealloc(r->ovr, (r->novr + 1) * sizeof *r->ovr);
        r->ovr[r->novr++] = key;
    } else {
        free(key);
    }
    return FT_OK;
}

/* ---------- unused keys ---------- */

static int was_read(const rcp *r, const char *path) {
    size_t pl = strlen(path);
    for (size_t i = 0; i < r->nreads; i++) {
        const char *k = r->reads[i].key;
        size_t kl = strlen(k);
        if (strcmp(k, path) == 0) return 1;
        if (r->reads[i].whole && kl < pl && strncmp(k, path, kl) == 0 && path[kl] == '.') return 1;
    }
    return 0;
}

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    size_t *prev = ft_xcalloc(lb + 1, sizeof *prev), *cur = ft_xcalloc(lb + 1, sizeof *cur);
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            cur[j] = best;
        }
        size_t *t = prev;
        prev = cur;
        cur = t;
    }
    size_t d = prev[lb];
    free(prev);
    free(cur);
    return d;
}

typedef struct {
    char *buf;
    size_t len, cap;
    int count;
} strbuf;

static void sb_add(strbuf *s, const char *t) {
    size_t n = strlen(t);
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->buf = ft_xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, t, n + 1);
    s->len += n;
}

static void walk_unused(const rcp *r, const cJSON *o, const char *prefix, strbuf *sb) {
    for (const cJSON *it = o->child; it; it = it->next) {
        char path[512];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        if (was_read(r, path) || cJSON_IsNull(it)) continue; /* null is absent: it sets nothing */
        if (cJSON_IsObject(it)) {
            walk_unused(r, it, path, sb);
            continue;
        }
        const char *best = NULL;
        size_t bd = (size_t)-1, lim = strlen(path) / 3 > 2 ? strlen(path) / 3 : 2;
        for (size_t i = 0; i < r->nreads; i++) {
            size_t d = edit_distance(path, r->reads[i].key);
            if (d < bd) {
                bd = d;
                best = r->reads[i].key;
            }
        }
        char line[1200];
        if (best && bd <= lim)
            snprintf(line, sizeof line, "%sunknown key '%s' (did you mean '%s'?)", sb->count ? "; " : "", path, best);
        else
            snprintf(line, sizeof line, "%sunknown key '%s'", sb->count ? "; " : "", path);
        sb_add(sb, line);
        sb->count++;
    }
}

int rcp_check_unused(const rcp *r, ft_error *e) {
    strbuf sb = {0};
    walk_unused(r, r->root, "", &sb);
    if (!sb.count) return FT_OK;
    int rc = ft_fail(e, FT_EINPUT, "%s: %s (see docs/recipes.md for the keys)", r->name, sb.buf);
    free(sb.buf);
    return rc;
}

/* ---------- resolved dump ---------- */

static void set_path(cJSON *root, const char *key, cJSON *v) {
    char *k = ft_xstrdup(key), *p = k;
    cJSON *cur = root;
    for (;;) {
        char *dot = strchr(p, '.');
        if (!dot) break;
        *dot = 0;
        cJSON *next = cJSON_GetObjectItemCaseSensitive(cur, p);
        if (!next) {
            next = cJSON_CreateObject();
            cJSON_AddItemToObject(cur, p, next);
        } else if (!cJSON_IsObject(next)) {
            cJSON_Delete(v);
            free(k);
            return;
        }
        cur = next;
        p = dot + 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(cur, p))
        cJSON_ReplaceItemInObjectCaseSensitive(cur, p, v);
    else
        cJSON_AddItemToObject(cur, p, v);
    free(k);
}

char *rcp_dump_resolved(const rcp *r) {
    cJSON *out = cJSON_Duplicate(r->root, 1);
    for (size_t i = 0; i < r->nreads; i++) {
        const rcp_read *rd = &r->reads[i];
        if (rd->dump) {
            set_path(out, rd->key, cJSON_Duplicate(rd->dump, 1));
            continue;
        }
        if (!rd->def) continue;
        cJSON *v = NULL;
        if (lookup(r, rd->key, &v, NULL) != FT_OK) continue;
        if (!v || cJSON_IsNull(v)) set_path(out, rd->key, cJSON_Duplicate(rd->def, 1));
    }
    char *s = cJSON_Print(out);
    cJSON_Delete(out);
    return s;
}
