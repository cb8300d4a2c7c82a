#include "datasets/format.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *FMT_NAMES[DS_FMT_COUNT] = {
    "auto", "openorca", "metamath", "messages", "sharegpt", "alpaca", "prompt_completion", "oasst",
    "ultrafeedback", "orca_dpo", "prompt_chosen_rejected", "sharegpt_preference", "openai_preference",
    "oasst_preference",
};

static const char *SKIP_NAMES[DS_SKIP_COUNT] = {
    "malformed JSON", "record too long", "missing or mistyped field", "invalid UTF-8", "empty turn",
    "unknown role", "roles out of order", "oasst deleted message", "oasst missing parent",
    "oasst unranked replies", "oasst tree without reply",
};

const char *ds_skip_reason_name(int r) { return r >= 0 && r < DS_SKIP_COUNT ? SKIP_NAMES[r] : "?"; }
const char *ds_format_name(ds_format f) { return f >= 0 && f < DS_FMT_COUNT ? FMT_NAMES[f] : "?"; }
int ds_format_is_preference(ds_format f) { return f >= DS_FMT_ULTRAFEEDBACK && f < DS_FMT_COUNT; }
const char *ds_role_name(ds_role r) { return r == DS_SYSTEM ? "system" : r == DS_USER ? "user" : "assistant"; }

int ds_format_from_name(const char *name, ds_format *out, ft_error *e) {
    for (int i = 0; i < DS_FMT_COUNT; i++)
        if (strcmp(name, FMT_NAMES[i]) == 0) {
            *out = (ds_format)i;
            return FT_OK;
        }
    char list[512] = "";
    for (int i = 0; i < DS_FMT_COUNT; i++) {
        strncat(list, FMT_NAMES[i], sizeof list - strlen(list) - 1);
        if (i + 1 < DS_FMT_COUNT) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return ft_fail(e, FT_EINPUT, "unknown dataset format '%s' (known: %s)", name, list);
}

int ds_utf8_valid(const char *s, size_t n, size_t *bad_off) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            goto bad;
        }
        if (i + len > n) goto bad;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) goto bad;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        i += len;
    }
    return 1;
bad:
    if (bad_off) *bad_off = i;
    return 0;
}

void ds_conv_add(ds_conv *c, ds_role role, const char *text) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->msgs = ft_xrealloc(c->msgs, (size_t)c->cap * sizeof *c->msgs);
    }
    c->msgs[c->n].role = role;
    c->msgs[c->n].content = ft_xstrdup(text);
    c->n++;
}

void ds_conv_free(ds_conv *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->msgs[i].content);
    free(c->msgs);
    c->msgs = NULL;
    c->n = c->cap = 0;
}

void ds_pref_free(ds_pref *p) {
    if (!p) return;
    ds_conv_free(&p->prompt);
    free(p->chosen);
    free(p->rejected);
    p->chosen = p->rejected = NULL;
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return 0;
    return 1;
}

static int bad(int *reason, int r, ft_error *e, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int bad(int *reason, int r, ft_error *e, const char *fmt, ...) {
    if (reason) *reason = r;
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = FT_EINPUT;
    }
    return FT_EINPUT;
}

int ds_conv_check(const ds_conv *c, ds_role end_role, int *reason, ft_error *e) {
    if (c->n == 0) return bad(reason, DS_SKIP_EMPTY_TURN, e, "%s: conversation has no turns", c->where);
    int i = 0;
    if (c->msgs[0].role == DS_SYSTEM) i = 1;
    if (i >= c->n) return bad(reason, DS_SKIP_ORDER, e, "%s: conversation has only a system turn", c->where);
    for (int k = 0; k < c->n; k++)
        if (blank(c->msgs[k].content))
            return bad(reason, DS_SKIP_EMPTY_TURN, e, "%s: turn %d (%s) is empty", c->where, k,
                       ds_role_name(c->msgs[k].role));
    for (int k = i; k < c->n; k++) {
        ds_role want = (k - i) % 2 == 0 ? DS_USER : DS_ASSISTANT;
        if (c->msgs[k].role != want)
            return bad(reason, DS_SKIP_ORDER, e, "%s: turn %d is %s where %s was expected (roles must be [system] user assistant user ...)",
                       c->where, k, ds_role_name(c->msgs[k].role), ds_role_name(want));
    }
    if (c->msgs[c->n - 1].role != end_role)
        return bad(reason, DS_SKIP_ORDER, e, "%s: conversation ends with a %s turn; expected %s", c->where,
                   ds_role_name(c->msgs[c->n - 1].role), ds_role_name(end_role));
    return FT_OK;
}

/* A string field: present, a string, valid UTF-8. *out points into rec. */
static int get_str(const cJSON *obj, const char *key, const char *where, const char *ctx, int optional,
                   const char **out, int *reason, ft_error *e) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (optional) return FT_OK;
        return bad(reason, DS_SKIP_FIELD, e, "%s: missing field '%s%s'", where, ctx, key);
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return bad(reason, DS_SKIP_FIELD, e, "%s: field '%s%s' must be a string", where, ctx, key);
    size_t off;
    if (!ds_utf8_valid(v->valuestring, strlen(v->valuestring), &off))
        return bad(reason, DS_SKIP_UTF8, e, "%s: field '%s%s' has invalid UTF-8 at byte %zu", where, ctx, key, off);
    *out = v->valuestring;
    return FT_OK;
}

#define TRY(x)               \
    do {                     \
        int _rc = (x);       \
        if (_rc) goto fail;  \
    } while (0)

/* role names per list format; -1 = unknown */
static int map_role(const char *r, int sharegpt) {
    if (strcmp(r, "system") == 0) return DS_SYSTEM;
    if (strcmp(r, "user") == 0 || (sharegpt && strcmp(r, "human") == 0)) return DS_USER;
    if (strcmp(r, "assistant") == 0 || (sharegpt && strcmp(r, "gpt") == 0)) return DS_ASSISTANT;
    /* tool use: the model's call is an assistant turn (trained); the tool's
     * answer is input to the model, so it becomes a user turn (not trained). */
    if (strcmp(r, "function_call") == 0) return DS_ASSISTANT;
    if (strcmp(r, "observation") == 0 || strcmp(r, "tool") == 0 || strcmp(r, "function") == 0) return DS_USER;
    return -1;
}

/* Append a list of {role,content} / {from,value} messages to c. */
static int add_list(ds_conv *c, const cJSON *list, const char *field, int sharegpt, const char *where,
                    int *reason, ft_error *e) {
    const char *rk = sharegpt ? "from" : "role", *ck = sharegpt ? "value" : "content";
    if (!cJSON_IsArray(list))
        return bad(reason, DS_SKIP_FIELD, e, "%s: field '%s' must be a list of {%s, %s}", where, field, rk, ck);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, list) {
        char ctx[96];
        snprintf(ctx, sizeof ctx, "%s[%d].", field, i);
        if (!cJSON_IsObject(m))
            return bad(reason, DS_SKIP_FIELD, e, "%s: '%s[%d]' must be an object {%s, %s}", where, field, i, rk, ck);
        const char *role, *content;
        int rc = get_str(m, rk, where, ctx, 0, &role, reason, e);
        if (!rc) rc = get_str(m, ck, where, ctx, 0, &content, reason, e);
        if (rc) return rc;
        int r = map_role(role, sharegpt);
        if (r < 0)
            return bad(reason, DS_SKIP_ROLE, e, "%s: field '%s%s' has unknown role '%s'", where, ctx, rk, role);
        if (r == DS_SYSTEM) {
            if (c->n > 0)
                return bad(reason, DS_SKIP_ORDER, e, "%s: '%s' is a system turn after the first turn", where, ctx);
            if (content[0] == '\0') { /* an empty system prompt means none */
                i++;
                continue;
            }
        }
        ds_conv_add(c, (ds_role)r, content);
        i++;
    }
    return FT_OK;
}

static int need_obj(const cJSON *rec, const char *where, int *reason, ft_error *e) {
    if (!cJSON_IsObject(rec)) return bad(reason, DS_SKIP_JSON, e, "%s: record is not a JSON object", where);
    return FT_OK;
}

int ds_record_to_conv(ds_format f, const cJSON *rec, const char *where, ds_conv *out, int *reason, ft_error *e) {
    memset(out, 0, sizeof *out);
    snprintf(out->where, sizeof out->where, "%s", where);
    const char *a, *b, *c;
    TRY(need_obj(rec, where, reason, e));
    switch (f) {
    case DS_FMT_OPENORCA:
        TRY(get_str(rec, "system_prompt", where, "", 1, &a, reason, e));
        TRY(get_str(rec, "question", where, "", 0, &b, reason, e));
        TRY(get_str(rec, "response", where, "", 0, &c, reason, e));
        if (a && a[0]) ds_conv_add(out, DS_SYSTEM, a);
        ds_conv_add(out, DS_USER, b);
        ds_conv_add(out, DS_ASSISTANT, c);
        break;
    case DS_FMT_METAMATH:
        TRY(get_str(rec, "query", where, "", 0, &a, reason, e));
        TRY(get_str(rec, "response", where, "", 0, &b, reason, e));
        ds_conv_add(out, DS_USER, a);
        ds_conv_add(out, DS_ASSISTANT, b);
        break;
    case DS_FMT_PROMPT_COMPLETION:
        TRY(get_str(rec, "prompt", where, "", 0, &a, reason, e));
        TRY(get_str(rec, "completion", where, "", 0, &b, reason, e));
        ds_conv_add(out, DS_USER, a);
        ds_conv_add(out, DS_ASSISTANT, b);
        break;
    case DS_FMT_ALPACA: {
        TRY(get_str(rec, "instruction", where, "", 0, &a, reason, e));
        TRY(get_str(rec, "input", where, "", 1, &b, reason, e));
        TRY(get_str(rec, "output", where, "", 0, &c, reason, e));
        if (b && b[0]) { /* instruction + "\n\n" + input, as most tools do */
            size_t la = strlen(a), lb = strlen(b);
            char *u = ft_xmalloc(la + lb + 3);
            memcpy(u, a, la);
            memcpy(u + la, "\n\n", 2);
            memcpy(u + la + 2, b, lb + 1);
            ds_conv_add(out, DS_USER, u);
            free(u);
        } else {
            ds_conv_add(out, DS_USER, a);
        }
        ds_conv_add(out, DS_ASSISTANT, c);
        break;
    }
    case DS_FMT_MESSAGES: {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rec, "messages");
        if (!m) {
            bad(reason, DS_SKIP_FIELD, e, "%s: missing field 'messages'", where);
            goto fail;
        }
        TRY(add_list(out, m, "messages", 0, where, reason, e));
        break;
    }
    case DS_FMT_SHAREGPT: {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rec, "conversations");
        if (!m) {
            bad(reason, DS_SKIP_FIELD, e, "%s: missing field 'conversations'", where);
            goto fail;
        }
        TRY(get_str(rec, "system", where, "", 1, &a, reason, e));
        TRY(get_str(rec, "tools", where, "", 1, &b, reason, e));
        if (b && b[0]) {
            /* tool definitions are shown to the model in the system turn rather than dropped */
            static const char hdr[] = "You have access to the following tools:\n";
            size_t la = a && a[0] ? strlen(a) + 2 : 0, lb = strlen(b);
            char *s = ft_xmalloc(la + sizeof hdr + lb);
            s[0] = 0;
            if (la) strcat(strcat(s, a), "\n\n");
            strcat(strcat(s, hdr), b);
            ds_conv_add(out, DS_SYSTEM, s);
            free(s);
        } else if (a && a[0]) {
            ds_conv_add(out, DS_SYSTEM, a);
        }
        TRY(add_list(out, m, "conversations", 1, where, reason, e));
        break;
    }
    default:
        bad(reason, DS_SKIP_FIELD, e, "%s: format '%s' does not give SFT conversations", where, ds_format_name(f));
        goto fail;
    }
    TRY(ds_conv_check(out, DS_ASSISTANT, reason, e));
    return FT_OK;
fail:
    ds_conv_free(out);
    return FT_EINPUT;
}

/* The single assistant reply of a list (ultrafeedback / openai preference). */
static int last_assistant(const cJSON *rec, const char *key, const char *rk, const char *ck, const char *where,
                          ds_conv *prompt_out, char **text, int *reason, ft_error *e) {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (!l) return bad(reason, DS_SKIP_FIELD, e, "%s: missing field '%s'", where, key);
    ds_conv tmp = {0};
    snprintf(tmp.where, sizeof tmp.where, "%s", where);
    int rc = add_list(&tmp, l, key, strcmp(rk, "from") == 0, where, reason, e);
    if (!rc && (tmp.n == 0 || tmp.msgs[tmp.n - 1].role != DS_ASSISTANT))
        rc = bad(reason, DS_SKIP_ORDER, e, "%s: field '%s' must end with an assistant turn", where, key);
    if (rc) {
        ds_conv_free(&tmp);
        return rc;
    }
    *text = tmp.msgs[tmp.n - 1].content;
    tmp.msgs[tmp.n - 1].content = NULL;
    tmp.n--;
    if (prompt_out) *prompt_out = tmp;
    else ds_conv_free(&tmp);
    return FT_OK;
}

static int same_conv(const ds_conv *a, const ds_conv *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->msgs[i].role != b->msgs[i].role || strcmp(a->msgs[i].content, b->msgs[i].content)) return 0;
    return 1;
}

/* {from, value} (sharegpt_preference chosen/rejected) */
static int one_reply(const cJSON *rec, const char *key, const char *where, char **text, int *reason, ft_error *e) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (!o) return bad(reason, DS_SKIP_FIELD, e, "%s: missing field '%s'", where, key);
    if (!cJSON_IsObject(o)) return bad(reason, DS_SKIP_FIELD, e, "%s: field '%s' must be an object {from, value}", where, key);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "%s.", key);
    const char *from, *val;
    int rc = get_str(o, "from", where, ctx, 0, &from, reason, e);
    if (!rc) rc = get_str(o, "value", where, ctx, 0, &val, reason, e);
    if (rc) return rc;
    if (map_role(from, 1) != DS_ASSISTANT)
        return bad(reason, DS_SKIP_ROLE, e, "%s: field '%s.from' is '%s'; expected an assistant (gpt) reply", where, key, from);
    *text = ft_xstrdup(val);
    return FT_OK;
}

int ds_record_to_pref(ds_format f, const cJSON *rec, const char *where, ds_pref *out, int *reason, ft_error *e) {
    memset(out, 0, sizeof *out);
    snprintf(out->prompt.where, sizeof out->prompt.where, "%s", where);
    const char *a, *b, *c, *d;
    TRY(need_obj(rec, where, reason, e));
    switch (f) {
    case DS_FMT_ORCA_DPO:
        TRY(get_str(rec, "system", where, "", 1, &a, reason, e));
        TRY(get_str(rec, "question", where, "", 0, &b, reason, e));
        TRY(get_str(rec, "chosen", where, "", 0, &c, reason, e));
        TRY(get_str(rec, "rejected", where, "", 0, &d, reason, e));
        if (a && a[0]) ds_conv_add(&out->prompt, DS_SYSTEM, a);
        ds_conv_add(&out->prompt, DS_USER, b);
        out->chosen = ft_xstrdup(c);
        out->rejected = ft_xstrdup(d);
        break;
    case DS_FMT_PROMPT_CHOSEN_REJECTED:
        TRY(get_str(rec, "prompt", where, "", 0, &a, reason, e));
        TRY(get_str(rec, "chosen", where, "", 0, &c, reason, e));
        TRY(get_str(rec, "rejected", where, "", 0, &d, reason, e));
        ds_conv_add(&out->prompt, DS_USER, a);
        out->chosen = ft_xstrdup(c);
        out->rejected = ft_xstrdup(d);
        break;
    case DS_FMT_ULTRAFEEDBACK: {
        ds_conv p2 = {0};
        TRY(last_assistant(rec, "chosen", "role", "content", where, &out->prompt, &out->chosen, reason, e));
        snprintf(out->prompt.where, sizeof out->prompt.where, "%s", where);
        TRY(last_assistant(rec, "rejected", "role", "content", where, &p2, &out->rejected, reason, e));
        int same = same_conv(&out->prompt, &p2);
        ds_conv_free(&p2);
        if (!same) {
            bad(reason, DS_SKIP_FIELD, e, "%s: 'chosen' and 'rejected' have different prompt turns", where);
            goto fail;
        }
        /* score_* are optional numbers; mistyped ones are reported */
        const char *sk[2] = {"score_chosen", "score_rejected"};
        for (int i = 0; i < 2; i++) {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, sk[i]);
            if (s && !cJSON_IsNumber(s) && !cJSON_IsNull(s)) {
                bad(reason, DS_SKIP_FIELD, e, "%s: field '%s' must be a number", where, sk[i]);
                goto fail;
            }
        }
        break;
    }
    case DS_FMT_OPENAI_PREFERENCE: {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(rec, "input");
        if (!cJSON_IsObject(in)) {
            bad(reason, DS_SKIP_FIELD, e, "%s: field 'input' must be an object with 'messages'", where);
            goto fail;
        }
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(in, "messages");
        if (!m) {
            bad(reason, DS_SKIP_FIELD, e, "%s: missing field 'input.messages'", where);
            goto fail;
        }
        TRY(add_list(&out->prompt, m, "input.messages", 0, where, reason, e));
        TRY(last_assistant(rec, "preferred_output", "role", "content", where, NULL, &out->chosen, reason, e));
        TRY(last_assistant(rec, "non_preferred_output", "role", "content", where, NULL, &out->rejected, reason, e));
        break;
    }
    case DS_FMT_SHAREGPT_PREFERENCE: {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rec, "conversations");
        if (!m) {
            bad(reason, DS_SKIP_FIELD, e, "%s: missing field 'conversations'", where);
            goto fail;
        }
        TRY(get_str(rec, "system", where, "", 1, &a, reason, e));
        if (a && a[0]) ds_conv_add(&out->prompt, DS_SYSTEM, a);
        TRY(add_list(&out->prompt, m, "conversations", 1, where, reason, e));
        TRY(one_reply(rec, "chosen", where, &out->chosen, reason, e));
        TRY(one_reply(rec, "rejected", where, &out->rejected, reason, e));
        break;
    }
    default:
        bad(reason, DS_SKIP_FIELD, e, "%s: format '%s' does not give preference pairs", where, ds_format_name(f));
        goto fail;
    }
    TRY(ds_conv_check(&out->prompt, DS_USER, reason, e));
    if (blank(out->chosen) || blank(out->rejected)) {
        bad(reason, DS_SKIP_EMPTY_TURN, e, "%s: the %s reply is empty", where, blank(out->chosen) ? "chosen" : "rejected");
        goto fail;
    }
    return FT_OK;
fail:
    ds_pref_free(out);
    return FT_EINPUT;
}

static int has(const cJSON *r, const char *k) { return cJSON_GetObjectItemCaseSensitive(r, k) != NULL; }

int ds_format_detect(const cJSON *r, const char *where, ds_format *out, ft_error *e) {
    if (!cJSON_IsObject(r)) return ft_fail(e, FT_EINPUT, "%s: cannot detect the dataset format: record is not a JSON object", where);
    ds_format f = DS_FMT_AUTO;
    if (has(r, "message_tree_id") && has(r, "message_id") && has(r, "role") && has(r, "text")) f = DS_FMT_OASST;
    else if (has(r, "input") && has(r, "preferred_output")) f = DS_FMT_OPENAI_PREFERENCE;
    else if (has(r, "conversations") && has(r, "chosen") && has(r, "rejected")) f = DS_FMT_SHAREGPT_PREFERENCE;
    else if (has(r, "conversations")) f = DS_FMT_SHAREGPT;
    else if (has(r, "chosen") && has(r, "rejected")) {
        if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r, "chosen"))) f = DS_FMT_ULTRAFEEDBACK;
        else if (has(r, "question")) f = DS_FMT_ORCA_DPO;
        else if (has(r, "prompt")) f = DS_FMT_PROMPT_CHOSEN_REJECTED;
    } else if (has(r, "messages")) f = DS_FMT_MESSAGES;
    else if (has(r, "question") && has(r, "response")) f = DS_FMT_OPENORCA;
    else if (has(r, "query") && has(r, "response")) f = DS_FMT_METAMATH;
    else if (has(r, "instruction") && has(r, "output")) f = DS_FMT_ALPACA;
    else if (has(r, "prompt") && has(r, "completion")) f = DS_FMT_PROMPT_COMPLETION;
    if (f == DS_FMT_AUTO) {
        char keys[512] = "";
        const cJSON *k;
        cJSON_ArrayForEach(k, r) {
            if (strlen(keys) + strlen(k->string) + 3 >= sizeof keys) break;
            if (keys[0]) strcat(keys, ", ");
            strcat(keys, k->string);
        }
        return ft_fail(e, FT_EINPUT, "%s: cannot detect the dataset format from the fields {%s}; pass the format by name", where, keys);
    }
    *out = f;
    return FT_OK;
}
