/* jinja: see jinja.h. Lexer (with jinja2's whitespace rules) -> AST -> tree-walking
 * evaluator over arena-allocated values. */
#include "datasets/jinja.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------- arena ---------- */
typedef struct jblk {
    struct jblk *next;
    size_t used, cap;
    _Alignas(16) char data[];
} jblk;
typedef struct {
    jblk *head;
} jarena;

static void *ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        jblk *b = ft_xmalloc(sizeof *b + cap);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}
static void ja_free(jarena *a) {
    while (a->head) {
        jblk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}
static char *ja_strndup(jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---------- growable buffer ---------- */
typedef struct {
    char *p;
    size_t n, cap;
} jbuf;
static void jb_put(jbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        b->p = ft_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void jb_puts(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
static void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(jbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) jb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---------- values ---------- */
enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_FUNC };
typedef struct jv jv;
typedef struct {
    jv *k, *v;
} jkv;
struct jv {
    int t;
    int ns;  /* a namespace() object: attributes may be set */
    int tup; /* a tuple (prints as one) */
    union {
        int b;
        long long i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct {
            jv **v;
            int n, cap;
        } l;
        struct {
            jkv *e;
            int n, cap;
        } d;
        struct {
            const char *name;
            jv *self;
        } fn;
    } u;
    const char *uname; /* V_UNDEF: the name that was looked up (for messages) */
};

/* ---------- tokens ---------- */
enum {
    T_EOF, T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP
};
typedef struct {
    int k;
    const char *p; /* T_TEXT / T_NAME / T_STR (decoded) / T_OP text */
    size_t n;
    long long i;
    double f;
    int line, col;
} jtok;

typedef struct jn jn;
struct jinja_tmpl {
    jarena ar;
    char *name;
    jn **body;
    int nbody;
};

typedef struct {
    jarena *ar;
    const char *src;
    size_t len;
    const char *name;
    ft_error *e;
    jtok *t;
    int nt, cap, pos;
} jparser;

static void linecol(const char *src, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else
            c++;
    }
    *line = l;
    *col = c;
}

static jtok *tk_add(jparser *P, int k, size_t off) {
    if (P->nt == P->cap) {
        P->cap = P->cap ? P->cap * 2 : 256;
        P->t = ft_xrealloc(P->t, (size_t)P->cap * sizeof *P->t);
    }
    jtok *t = &P->t[P->nt++];
    memset(t, 0, sizeof *t);
    t->k = k;
    linecol(P->src, off, &t->line, &t->col);
    return t;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Lex the expression part of a tag: src[a, b). */
static int lex_expr(jparser *P, size_t a, size_t b) {
    const char *s = P->src;
    size_t i = a;
    while (i < b) {
        char c = s[i];
        if (is_ws(c)) {
            i++;
            continue;
        }
        if (isalpha((unsigned char)c) || c == '_') {
            size_t j = i;
            while (j < b && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            jtok *t = tk_add(P, T_NAME, i);
            t->p = s + i;
            t->n = j - i;
            i = j;
            continue;
        }
        if (isdigit((unsigned char)c)) {
            size_t j = i;
            int fl = 0;
            while (j < b && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
            if (j + 1 < b && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
                fl = 1;
                j++;
                while (j < b && isdigit((unsigned char)s[j])) j++;
            }
            if (j < b && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < b && (s[k] == '+' || s[k] == '-')) k++;
                if (k < b && isdigit((unsigned char)s[k])) {
                    fl = 1;
                    j = k;
                    while (j < b && isdigit((unsigned char)s[j])) j++;
                }
            }
            char tmp[64];
            size_t m = 0;
            for (size_t k = i; k < j && m < sizeof tmp - 1; k++)
                if (s[k] != '_') tmp[m++] = s[k];
            tmp[m] = 0;
            jtok *t = tk_add(P, fl ? T_FLOAT : T_INT, i);
            if (fl)
                t->f = strtod(tmp, NULL);
            else
                t->i = strtoll(tmp, NULL, 10);
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            jbuf d = {0};
            size_t j = i + 1;
            while (j < b && s[j] != c) {
                if (s[j] == '\\' && j + 1 < b) {
                    char x = s[j + 1];
                    j += 2;
                    switch (x) {
                    case 'n': jb_put(&d, "\n", 1); break;
                    case 't': jb_put(&d, "\t", 1); break;
                    case 'r': jb_put(&d, "\r", 1); break;
                    case '0': jb_put(&d, "\0", 1); break;
                    case '\\': jb_put(&d, "\\", 1); break;
                    case '\'': jb_put(&d, "'", 1); break;
                    case '"': jb_put(&d, "\"", 1); break;
                    case '\n': break;
                    default: jb_put(&d, "\\", 1); jb_put(&d, &x, 1);
                    }
                    continue;
                }
                jb_put(&d, s + j, 1);
                j++;
            }
            if (j >= b) {
                int l, cc;
                linecol(s, i, &l, &cc);
                free(d.p);
                return ft_fail(P->e, FT_EINPUT, "%s: line %d column %d: unterminated string literal", P->name, l, cc);
            }
            jtok *t = tk_add(P, T_STR, i);
            t->p = ja_strndup(P->ar, d.p ? d.p : "", d.n);
            t->n = d.n;
            free(d.p);
            i = j + 1;
            continue;
        }
        static const char *ops2[] = {"==", "!=", "<=", ">=", "//", "**"};
        size_t n = 0;
        for (size_t k = 0; k < sizeof ops2 / sizeof *ops2; k++)
            if (i + 1 < b && s[i] == ops2[k][0] && s[i + 1] == ops2[k][1]) n = 2;
        if (!n && strchr("+-*/%~|.,:()[]{}=<>!", c)) n = 1;
        if (!n) {
            int l, cc;
            linecol(s, i, &l, &cc);
            return ft_fail(P->e, FT_EINPUT, "%s: line %d column %d: unexpected character '%c'", P->name, l, cc, c);
        }
        jtok *t = tk_add(P, T_OP, i);
        t->p = s + i;
        t->n = n;
        i += n;
    }
    return 0;
}

/* Find the closing delimiter of a tag ("}}" / "%}" / "#}") from i, skipping string literals. */
static size_t find_close(const char *s, size_t len, size_t i, char close, int comment) {
    char q = 0;
    for (; i + 1 < len; i++) {
        if (!comment) {
            if (q) {
                if (s[i] == '\\') {
                    i++;
                    continue;
                }
                if (s[i] == q) q = 0;
                continue;
            }
            if (s[i] == '\'' || s[i] == '"') {
                q = s[i];
                continue;
            }
        }
        if (s[i] == close && s[i + 1] == '}') return i;
    }
    return (size_t)-1;
}

typedef struct {
    int kind; /* 0 text, 1 var, 2 block, 3 comment */
    size_t a, b;        /* text: the span; tag: the inner span (after the markers) */
    size_t tag_off;     /* tag: offset of its '{' */
    int lminus, rminus; /* '-' markers */
    int lplus;          /* '+' after the opening: lstrip_blocks off */
} jchunk;

static int lex(jparser *P) {
    const char *s = P->src;
    size_t len = P->len, i = 0;
    jchunk *ch = NULL;
    int nch = 0, cap = 0;
    while (i <= len) {
        size_t j = i;
        while (j + 1 < len && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#'))) j++;
        if (j + 1 >= len) j = len;
        if (nch + 2 > cap) {
            cap = cap ? cap * 2 : 64;
            ch = ft_xrealloc(ch, (size_t)cap * sizeof *ch);
        }
        ch[nch++] = (jchunk){.kind = 0, .a = i, .b = j};
        if (j >= len) break;
        char o = s[j + 1];
        jchunk c = {.kind = o == '{' ? 1 : o == '%' ? 2 : 3, .tag_off = j};
        size_t k = j + 2;
        if (k < len && s[k] == '-') {
            c.lminus = 1;
            k++;
        } else if (k < len && s[k] == '+') {
            c.lplus = 1;
            k++;
        }
        char close = c.kind == 1 ? '}' : c.kind == 2 ? '%' : '#';
        size_t end = find_close(s, len, k, close, c.kind == 3);
        if (end == (size_t)-1) {
            int l, cc;
            linecol(s, j, &l, &cc);
            free(ch);
            return ft_fail(P->e, FT_EINPUT, "%s: line %d column %d: unclosed '{%c' tag", P->name, l, cc, o);
        }
        size_t inner_end = end;
        if (end > k && s[end - 1] == '-') {
            c.rminus = 1;
            inner_end = end - 1;
        } else if (end > k && s[end - 1] == '+' && c.kind != 1)
            inner_end = end - 1;
        c.a = k;
        c.b = inner_end;
        ch[nch++] = c;
        i = end + 2;
    }
    /* whitespace control over the text chunks */
    int line_start = 1;
    for (int n = 0; n < nch; n++) {
        jchunk *c = &ch[n];
        if (c->kind != 0) continue;
        jchunk *prev = n > 0 ? &ch[n - 1] : NULL, *next = n + 1 < nch ? &ch[n + 1] : NULL;
        line_start = !prev;
        if (prev) {
            if (prev->rminus) {
                while (c->a < c->b && is_ws(s[c->a])) c->a++;
            } else if (prev->kind >= 2) {
                if (c->a < c->b && s[c->a] == '\n') {
                    c->a++;
                    line_start = 1;
                } else if (c->a + 1 < c->b && s[c->a] == '\r' && s[c->a + 1] == '\n') {
                    c->a += 2;
                    line_start = 1;
                }
            }
        }
        if (next) {
            if (next->lminus) {
                while (c->b > c->a && is_ws(s[c->b - 1])) c->b--;
            } else if (next->kind >= 2 && !next->lplus) {
                size_t l = c->b;
                while (l > c->a && (s[l - 1] == ' ' || s[l - 1] == '\t')) l--;
                if ((l > c->a && s[l - 1] == '\n') || (l == c->a && line_start)) c->b = l;
            }
        }
    }
    int rc = 0;
    for (int n = 0; n < nch && !rc; n++) {
        jchunk *c = &ch[n];
        if (c->kind == 0) {
            if (c->b > c->a) {
                jtok *t = tk_add(P, T_TEXT, c->a);
                t->p = s + c->a;
                t->n = c->b - c->a;
            }
        } else if (c->kind == 3) {
            continue;
        } else {
            tk_add(P, c->kind == 1 ? T_VBEG : T_BBEG, c->tag_off);
            rc = lex_expr(P, c->a, c->b);
            if (!rc) tk_add(P, c->kind == 1 ? T_VEND : T_BEND, c->b);
        }
    }
    if (!rc) tk_add(P, T_EOF, len);
    free(ch);
    return rc;
}

/* ---------- AST ---------- */
enum {
    /* statements */
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_BLOCK,
    /* expressions */
    E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NEG, E_POS, E_NOT, E_AND, E_OR,
    E_COND, E_LIST, E_DICT
};
struct jn {
    int k, line, col;
    const char *s; /* text / name / attr / op / filter / test */
    size_t n;
    jv *lit;
    jn *a, *b, *c, *d;
    jn **args; /* call / filter / test args, list / dict items (dict: k0 v0 k1 v1 ...) */
    const char **kw; /* per arg: keyword name or NULL */
    int nargs;
    int negate; /* E_TEST: is not */
    jn **body, **ebody;
    int nbody, nebody;
    const char **tg; /* S_FOR / S_SET targets; S_SET with attr: tg[0].tg[1] */
    int ntg;
};

#define PT(P) (&(P)->t[(P)->pos])
static int perr(jparser *P, const jtok *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(jparser *P, const jtok *t, const char *fmt, ...) {
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return ft_fail(P->e, FT_EINPUT, "%s: line %d column %d: %s", P->name, t->line, t->col, m);
}
static int is_op(const jtok *t, const char *op) { return t->k == T_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n); }
static int is_name(const jtok *t, const char *nm) { return t->k == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n); }
static const char *tokdesc(const jtok *t, char *buf, size_t n) {
    switch (t->k) {
    case T_EOF: return "end of template";
    case T_VEND: return "'}}'";
    case T_BEND: return "'%}'";
    case T_TEXT: return "text";
    case T_STR: return "a string";
    case T_INT:
    case T_FLOAT: return "a number";
    default: snprintf(buf, n, "'%.*s'", (int)(t->n < 40 ? t->n : 40), t->p); return buf;
    }
}
static int expect_op(jparser *P, const char *op) {
    if (!is_op(PT(P), op)) {
        char b[64];
        return perr(P, PT(P), "expected '%s', found %s", op, tokdesc(PT(P), b, sizeof b));
    }
    P->pos++;
    return 0;
}
static jn *nn(jparser *P, int k, const jtok *at) {
    jn *n = ja_alloc(P->ar, sizeof *n);
    n->k = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}
static jv *mkv(jarena *a, int t) {
    jv *v = ja_alloc(a, sizeof *v);
    v->t = t;
    return v;
}
static jv *mkstr(jarena *a, const char *p, size_t n) {
    jv *v = mkv(a, V_STR);
    v->u.s.p = ja_strndup(a, p, n);
    v->u.s.n = n;
    return v;
}

static int p_expr(jparser *P, jn **out);
static int p_or(jparser *P, jn **out);

static void add_arg(jparser *P, jn *n, jn *a, const char *kw, int *cap) {
    if (n->nargs == *cap) {
        int c = *cap ? *cap * 2 : 4;
        jn **na = ja_alloc(P->ar, (size_t)c * sizeof *na);
        const char **nk = ja_alloc(P->ar, (size_t)c * sizeof *nk);
        if (n->nargs) {
            memcpy(na, n->args, (size_t)n->nargs * sizeof *na);
            memcpy(nk, n->kw, (size_t)n->nargs * sizeof *nk);
        }
        n->args = na;
        n->kw = nk;
        *cap = c;
    }
    n->args[n->nargs] = a;
    n->kw[n->nargs] = kw;
    n->nargs++;
}

/* (args) after the '(' has been consumed */
static int p_args(jparser *P, jn *n) {
    int cap = 0;
    while (!is_op(PT(P), ")")) {
        const char *kw = NULL;
        if (PT(P)->k == T_NAME && is_op(&P->t[P->pos + 1], "=")) {
            kw = ja_strndup(P->ar, PT(P)->p, PT(P)->n);
            P->pos += 2;
        }
        jn *a;
        if (p_expr(P, &a)) return 1;
        add_arg(P, n, a, kw, &cap);
        if (is_op(PT(P), ",")) {
            P->pos++;
            continue;
        }
        if (!is_op(PT(P), ")")) {
            char b[64];
            return perr(P, PT(P), "expected ',' or ')', found %s", tokdesc(PT(P), b, sizeof b));
        }
    }
    P->pos++;
    return 0;
}

static int p_primary(jparser *P, jn **out) {
    jtok *t = PT(P);
    char b[64];
    if (t->k == T_STR) {
        jn *n = nn(P, E_LIT, t);
        /* adjacent string literals concatenate */
        jbuf s = {0};
        while (PT(P)->k == T_STR) {
            jb_put(&s, PT(P)->p, PT(P)->n);
            P->pos++;
        }
        n->lit = mkstr(P->ar, s.p ? s.p : "", s.n);
        free(s.p);
        *out = n;
        return 0;
    }
    if (t->k == T_INT || t->k == T_FLOAT) {
        jn *n = nn(P, E_LIT, t);
        n->lit = mkv(P->ar, t->k == T_INT ? V_INT : V_FLOAT);
        if (t->k == T_INT)
            n->lit->u.i = t->i;
        else
            n->lit->u.f = t->f;
        P->pos++;
        *out = n;
        return 0;
    }
    if (t->k == T_NAME) {
        jn *n = nn(P, E_LIT, t);
        P->pos++;
        if (is_name(t, "true") || is_name(t, "True") || is_name(t, "false") || is_name(t, "False")) {
            n->lit = mkv(P->ar, V_BOOL);
            n->lit->u.b = t->p[0] == 't' || t->p[0] == 'T';
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n->lit = mkv(P->ar, V_NONE);
        } else {
            n->k = E_NAME;
            n->s = ja_strndup(P->ar, t->p, t->n);
        }
        *out = n;
        return 0;
    }
    if (is_op(t, "(")) {
        P->pos++;
        jn *a;
        if (p_expr(P, &a)) return 1;
        if (is_op(PT(P), ",")) { /* tuple: a list */
            jn *n = nn(P, E_LIST, t);
            n->negate = 1;
            int cap = 0;
            add_arg(P, n, a, NULL, &cap);
            while (is_op(PT(P), ",")) {
                P->pos++;
                if (is_op(PT(P), ")")) break;
                if (p_expr(P, &a)) return 1;
                add_arg(P, n, a, NULL, &cap);
            }
            a = n;
        }
        if (expect_op(P, ")")) return 1;
        *out = a;
        return 0;
    }
    if (is_op(t, "[")) {
        P->pos++;
        jn *n = nn(P, E_LIST, t);
        int cap = 0;
        while (!is_op(PT(P), "]")) {
            jn *a;
            if (p_expr(P, &a)) return 1;
            add_arg(P, n, a, NULL, &cap);
            if (is_op(PT(P), ",")) {
                P->pos++;
                continue;
            }
            if (!is_op(PT(P), "]")) return perr(P, PT(P), "expected ',' or ']', found %s", tokdesc(PT(P), b, sizeof b));
        }
        P->pos++;
        *out = n;
        return 0;
    }
    if (is_op(t, "{")) {
        P->pos++;
        jn *n = nn(P, E_DICT, t);
        int cap = 0;
        while (!is_op(PT(P), "}")) {
            jn *k, *v;
            if (p_expr(P, &k) || expect_op(P, ":") || p_expr(P, &v)) return 1;
            add_arg(P, n, k, NULL, &cap);
            add_arg(P, n, v, NULL, &cap);
            if (is_op(PT(P), ",")) {
                P->pos++;
                continue;
            }
            if (!is_op(PT(P), "}")) return perr(P, PT(P), "expected ',' or '}', found %s", tokdesc(PT(P), b, sizeof b));
        }
        P->pos++;
        *out = n;
        return 0;
    }
    return perr(P, t, "expected an expression, found %s", tokdesc(t, b, sizeof b));
}

static int p_postfix(jparser *P, jn **io) {
    for (;;) {
        jtok *t = PT(P);
        if (is_op(t, ".")) {
            P->pos++;
            jtok *nm = PT(P);
            if (nm->k != T_NAME && nm->k != T_INT) return perr(P, nm, "expected an attribute name after '.'");
            jn *n = nn(P, E_ATTR, t);
            n->a = *io;
            if (nm->k == T_NAME)
                n->s = ja_strndup(P->ar, nm->p, nm->n);
            else {
                n->k = E_ITEM;
                n->b = nn(P, E_LIT, nm);
                n->b->lit = mkv(P->ar, V_INT);
                n->b->lit->u.i = nm->i;
            }
            P->pos++;
            *io = n;
        } else if (is_op(t, "[")) {
            P->pos++;
            jn *lo = NULL, *hi = NULL, *st = NULL;
            int slice = 0;
            if (!is_op(PT(P), ":") && p_expr(P, &lo)) return 1;
            if (is_op(PT(P), ":")) {
                slice = 1;
                P->pos++;
                if (!is_op(PT(P), ":") && !is_op(PT(P), "]") && p_expr(P, &hi)) return 1;
                if (is_op(PT(P), ":")) {
                    P->pos++;
                    if (!is_op(PT(P), "]") && p_expr(P, &st)) return 1;
                }
            }
            if (expect_op(P, "]")) return 1;
            jn *n = nn(P, slice ? E_SLICE : E_ITEM, t);
            n->a = *io;
            n->b = lo;
            n->c = hi;
            n->d = st;
            *io = n;
        } else if (is_op(t, "(")) {
            P->pos++;
            jn *n = nn(P, E_CALL, t);
            n->a = *io;
            if (p_args(P, n)) return 1;
            *io = n;
        } else
            return 0;
    }
}

static int p_filters(jparser *P, jn **io) {
    for (;;) {
        jtok *t = PT(P);
        if (is_op(t, "|")) {
            P->pos++;
            jtok *nm = PT(P);
            if (nm->k != T_NAME) return perr(P, nm, "expected a filter name after '|'");
            jn *n = nn(P, E_FILTER, nm);
            n->s = ja_strndup(P->ar, nm->p, nm->n);
            n->a = *io;
            P->pos++;
            if (is_op(PT(P), "(")) {
                P->pos++;
                if (p_args(P, n)) return 1;
            }
            *io = n;
        } else if (is_name(t, "is")) {
            P->pos++;
            jn *n = nn(P, E_TEST, t);
            if (is_name(PT(P), "not")) {
                n->negate = 1;
                P->pos++;
            }
            jtok *nm = PT(P);
            if (nm->k != T_NAME) return perr(P, nm, "expected a test name after 'is'");
            n->s = ja_strndup(P->ar, nm->p, nm->n);
            n->a = *io;
            P->pos++;
            if (is_op(PT(P), "(")) {
                P->pos++;
                if (p_args(P, n)) return 1;
            } else if (PT(P)->k == T_STR || PT(P)->k == T_INT || PT(P)->k == T_FLOAT ||
                       (PT(P)->k == T_NAME && !is_name(PT(P), "and") && !is_name(PT(P), "or") &&
                        !is_name(PT(P), "if") && !is_name(PT(P), "else") && !is_name(PT(P), "is") &&
                        !is_name(PT(P), "in") && !is_name(PT(P), "not"))) {
                jn *a;
                int cap = 0;
                if (p_primary(P, &a)) return 1;
                add_arg(P, n, a, NULL, &cap);
            }
            *io = n;
        } else
            return 0;
    }
}

static int p_unary(jparser *P, jn **out) {
    jtok *t = PT(P);
    if (is_op(t, "-") || is_op(t, "+")) {
        P->pos++;
        jn *n = nn(P, t->p[0] == '-' ? E_NEG : E_POS, t);
        if (p_unary(P, &n->a)) return 1;
        *out = n;
        return p_filters(P, out);
    }
    if (p_primary(P, out) || p_postfix(P, out)) return 1;
    return p_filters(P, out);
}

static jn *mkbin(jparser *P, const jtok *t, const char *op, jn *a, jn *b) {
    jn *n = nn(P, E_BIN, t);
    n->s = op;
    n->a = a;
    n->b = b;
    return n;
}
static int p_pow(jparser *P, jn **out) {
    if (p_unary(P, out)) return 1;
    while (is_op(PT(P), "**")) {
        jtok *t = PT(P);
        P->pos++;
        jn *r;
        if (p_unary(P, &r)) return 1;
        *out = mkbin(P, t, "**", *out, r);
    }
    return 0;
}
static int p_mul(jparser *P, jn **out) {
    if (p_pow(P, out)) return 1;
    for (;;) {
        jtok *t = PT(P);
        const char *op = is_op(t, "*") ? "*" : is_op(t, "/") ? "/" : is_op(t, "//") ? "//" : is_op(t, "%") ? "%" : NULL;
        if (!op) return 0;
        P->pos++;
        jn *r;
        if (p_pow(P, &r)) return 1;
        *out = mkbin(P, t, op, *out, r);
    }
}
static int p_concat(jparser *P, jn **out) {
    if (p_mul(P, out)) return 1;
    while (is_op(PT(P), "~")) {
        jtok *t = PT(P);
        P->pos++;
        jn *r;
        if (p_mul(P, &r)) return 1;
        *out = mkbin(P, t, "~", *out, r);
    }
    return 0;
}
static int p_add(jparser *P, jn **out) {
    if (p_concat(P, out)) return 1;
    for (;;) {
        jtok *t = PT(P);
        const char *op = is_op(t, "+") ? "+" : is_op(t, "-") ? "-" : NULL;
        if (!op) return 0;
        P->pos++;
        jn *r;
        if (p_concat(P, &r)) return 1;
        *out = mkbin(P, t, op, *out, r);
    }
}
static int p_cmp(jparser *P, jn **out) {
    if (p_add(P, out)) return 1;
    for (;;) {
        jtok *t = PT(P);
        const char *op = NULL;
        static const char *ops[] = {"==", "!=", "<=", ">=", "<", ">"};
        for (size_t i = 0; i < 6; i++)
            if (is_op(t, ops[i])) op = ops[i];
        if (!op && is_name(t, "in")) op = "in";
        if (!op && is_name(t, "not") && is_name(&P->t[P->pos + 1], "in")) {
            op = "not in";
            P->pos++;
        }
        if (!op) return 0;
        P->pos++;
        jn *r;
        if (p_add(P, &r)) return 1;
        *out = mkbin(P, t, op, *out, r);
    }
}
static int p_not(jparser *P, jn **out) {
    jtok *t = PT(P);
    if (is_name(t, "not")) {
        P->pos++;
        jn *n = nn(P, E_NOT, t);
        if (p_not(P, &n->a)) return 1;
        *out = n;
        return 0;
    }
    return p_cmp(P, out);
}
static int p_and(jparser *P, jn **out) {
    if (p_not(P, out)) return 1;
    while (is_name(PT(P), "and")) {
        jtok *t = PT(P);
        P->pos++;
        jn *n = nn(P, E_AND, t);
        n->a = *out;
        if (p_not(P, &n->b)) return 1;
        *out = n;
    }
    return 0;
}
static int p_or(jparser *P, jn **out) {
    if (p_and(P, out)) return 1;
    while (is_name(PT(P), "or")) {
        jtok *t = PT(P);
        P->pos++;
        jn *n = nn(P, E_OR, t);
        n->a = *out;
        if (p_and(P, &n->b)) return 1;
        *out = n;
    }
    return 0;
}
static int p_expr(jparser *P, jn **out) {
    if (p_or(P, out)) return 1;
    if (is_name(PT(P), "if")) {
        jtok *t = PT(P);
        P->pos++;
        jn *n = nn(P, E_COND, t);
        n->a = *out;
        if (p_or(P, &n->b)) return 1;
        if (is_name(PT(P), "else")) {
            P->pos++;
            if (p_expr(P, &n->c)) return 1;
        }
        *out = n;
    }
    return 0;
}

/* ---------- statements ---------- */
typedef struct {
    jn **v;
    int n, cap;
} jnlist;
static void nl_add(jparser *P, jnlist *l, jn *n) {
    if (l->n == l->cap) {
        int c = l->cap ? l->cap * 2 : 8;
        jn **nv = ja_alloc(P->ar, (size_t)c * sizeof *nv);
        if (l->n) memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        l->v = nv;
        l->cap = c;
    }
    l->v[l->n++] = n;
}

static int expect_bend(jparser *P) {
    if (PT(P)->k != T_BEND) {
        char b[64];
        return perr(P, PT(P), "expected '%%}', found %s", tokdesc(PT(P), b, sizeof b));
    }
    P->pos++;
    return 0;
}

/* Parse statements until a block tag whose keyword is in `ends` (space-separated); *endkw gets that
 * keyword's token (left at the keyword, after the '{%'). */
static int p_body(jparser *P, const char *ends, jnlist *out, jtok **endkw) {
    for (;;) {
        jtok *t = PT(P);
        if (t->k == T_EOF) {
            if (!ends) return 0;
            return perr(P, t, "unexpected end of template: expected {%% %s %%}", ends);
        }
        if (t->k == T_TEXT) {
            jn *n = nn(P, S_TEXT, t);
            n->s = t->p;
            n->n = t->n;
            nl_add(P, out, n);
            P->pos++;
            continue;
        }
        if (t->k == T_VBEG) {
            P->pos++;
            jn *n = nn(P, S_OUT, t);
            if (p_expr(P, &n->a)) return 1;
            if (PT(P)->k != T_VEND) {
                char b[64];
                return perr(P, PT(P), "expected '}}', found %s", tokdesc(PT(P), b, sizeof b));
            }
            P->pos++;
            nl_add(P, out, n);
            continue;
        }
        if (t->k != T_BBEG) return perr(P, t, "internal: unexpected token");
        jtok *kw = &P->t[P->pos + 1];
        if (kw->k != T_NAME) return perr(P, kw, "expected a statement keyword after '{%%'");
        if (ends) {
            char w[32];
            snprintf(w, sizeof w, "%.*s", (int)(kw->n < 30 ? kw->n : 30), kw->p);
            const char *p = ends;
            size_t wl = strlen(w);
            while ((p = strstr(p, w))) {
                if ((p == ends || p[-1] == ' ') && (p[wl] == 0 || p[wl] == ' ')) {
                    P->pos++;
                    *endkw = kw;
                    return 0;
                }
                p += wl;
            }
        }
        P->pos += 2;
        if (is_name(kw, "if")) {
            jn *n = nn(P, S_IF, kw);
            jn *cur = n;
            if (p_expr(P, &cur->a) || expect_bend(P)) return 1;
            for (;;) {
                jnlist b = {0};
                jtok *ek;
                if (p_body(P, "elif else endif", &b, &ek)) return 1;
                cur->body = b.v;
                cur->nbody = b.n;
                P->pos++; /* the keyword */
                if (is_name(ek, "endif")) {
                    if (expect_bend(P)) return 1;
                    break;
                }
                if (is_name(ek, "else")) {
                    if (expect_bend(P)) return 1;
                    jnlist eb = {0};
                    if (p_body(P, "endif", &eb, &ek)) return 1;
                    P->pos++;
                    if (expect_bend(P)) return 1;
                    cur->ebody = eb.v;
                    cur->nebody = eb.n;
                    break;
                }
                /* elif: a nested if as the else body */
                jn *m = nn(P, S_IF, ek);
                if (p_expr(P, &m->a) || expect_bend(P)) return 1;
                cur->ebody = ja_alloc(P->ar, sizeof(jn *));
                cur->ebody[0] = m;
                cur->nebody = 1;
                cur = m;
            }
            nl_add(P, out, n);
        } else if (is_name(kw, "for")) {
            jn *n = nn(P, S_FOR, kw);
            const char *tg[8];
            int ntg = 0;
            int paren = is_op(PT(P), "(");
            if (paren) P->pos++;
            for (;;) {
                if (PT(P)->k != T_NAME) return perr(P, PT(P), "expected a loop variable name");
                if (ntg == 8) return perr(P, PT(P), "too many loop variables");
                tg[ntg++] = ja_strndup(P->ar, PT(P)->p, PT(P)->n);
                P->pos++;
                if (!is_op(PT(P), ",")) break;
                P->pos++;
            }
            if (paren && expect_op(P, ")")) return 1;
            n->tg = ja_alloc(P->ar, (size_t)ntg * sizeof *n->tg);
            memcpy(n->tg, tg, (size_t)ntg * sizeof *tg);
            n->ntg = ntg;
            if (!is_name(PT(P), "in")) return perr(P, PT(P), "expected 'in' in the for statement");
            P->pos++;
            if (p_or(P, &n->a)) return 1;
            if (is_name(PT(P), "if")) {
                P->pos++;
                if (p_or(P, &n->b)) return 1;
            }
            if (is_name(PT(P), "recursive")) return perr(P, PT(P), "unsupported construct: recursive for loops");
            if (expect_bend(P)) return 1;
            jnlist b = {0};
            jtok *ek;
            if (p_body(P, "else endfor", &b, &ek)) return 1;
            n->body = b.v;
            n->nbody = b.n;
            P->pos++;
            if (expect_bend(P)) return 1;
            if (is_name(ek, "else")) {
                jnlist eb = {0};
                if (p_body(P, "endfor", &eb, &ek)) return 1;
                P->pos++;
                if (expect_bend(P)) return 1;
                n->ebody = eb.v;
                n->nebody = eb.n;
            }
            nl_add(P, out, n);
        } else if (is_name(kw, "set")) {
            jn *n = nn(P, S_SET, kw);
            const char *tg[8];
            int ntg = 0;
            for (;;) {
                if (PT(P)->k != T_NAME) return perr(P, PT(P), "expected a variable name after 'set'");
                if (ntg == 8) return perr(P, PT(P), "too many variables in set");
                tg[ntg++] = ja_strndup(P->ar, PT(P)->p, PT(P)->n);
                P->pos++;
                if (is_op(PT(P), ".")) { /* ns.attr */
                    P->pos++;
                    if (PT(P)->k != T_NAME) return perr(P, PT(P), "expected an attribute name after '.'");
                    n->s = ja_strndup(P->ar, PT(P)->p, PT(P)->n);
                    P->pos++;
                    break;
                }
                if (!is_op(PT(P), ",")) break;
                P->pos++;
            }
            n->tg = ja_alloc(P->ar, (size_t)ntg * sizeof *n->tg);
            memcpy(n->tg, tg, (size_t)ntg * sizeof *tg);
            n->ntg = ntg;
            if (PT(P)->k == T_BEND && ntg == 1 && !n->s) { /* {% set x %}...{% endset %} */
                P->pos++;
                n->k = S_SETBLOCK;
                jnlist b = {0};
                jtok *ek;
                if (p_body(P, "endset", &b, &ek)) return 1;
                P->pos++;
                if (expect_bend(P)) return 1;
                n->body = b.v;
                n->nbody = b.n;
            } else {
                if (expect_op(P, "=") || p_expr(P, &n->a)) return 1;
                if (is_op(PT(P), ",")) { /* set a, b = x, y */
                    jn *l = nn(P, E_LIST, PT(P));
                    int cap = 0;
                    add_arg(P, l, n->a, NULL, &cap);
                    while (is_op(PT(P), ",")) {
                        P->pos++;
                        jn *a;
                        if (p_expr(P, &a)) return 1;
                        add_arg(P, l, a, NULL, &cap);
                    }
                    n->a = l;
                }
                if (expect_bend(P)) return 1;
            }
            nl_add(P, out, n);
        } else if (is_name(kw, "generation")) {
            /* transformers' {% generation %} marker: renders its body */
            jn *n = nn(P, S_BLOCK, kw);
            if (expect_bend(P)) return 1;
            jnlist b = {0};
            jtok *ek;
            if (p_body(P, "endgeneration", &b, &ek)) return 1;
            P->pos++;
            if (expect_bend(P)) return 1;
            n->body = b.v;
            n->nbody = b.n;
            nl_add(P, out, n);
        } else {
            char b[64];
            if (is_name(kw, "endif") || is_name(kw, "endfor") || is_name(kw, "else") || is_name(kw, "elif") ||
                is_name(kw, "endset") || is_name(kw, "endgeneration"))
                return perr(P, kw, "unexpected {%% %.*s %%}%s", (int)kw->n, kw->p, ends ? "" : " (no block is open)");
            (void)b;
            return perr(P, t, "unsupported construct: {%% %.*s %%} (this interpreter covers for/if/elif/else/set/generation)",
                        (int)(kw->n < 40 ? kw->n : 40), kw->p);
        }
    }
}

int jinja_parse(const char *src, size_t len, const char *name, jinja_tmpl **out, ft_error *e) {
    *out = NULL;
    jinja_tmpl *t = ft_xmalloc(sizeof *t);
    memset(t, 0, sizeof *t);
    t->name = ft_xstrdup(name ? name : "chat template");
    jparser P = {.ar = &t->ar, .name = t->name, .e = e};
    /* as jinja2's lexer: every newline (\r\n, \r, \n) becomes \n, and one trailing newline is dropped
     * (keep_trailing_newline=False) */
    char *norm = ja_alloc(&t->ar, len + 1);
    size_t m = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[m++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else
            norm[m++] = src[i];
    }
    if (m && norm[m - 1] == '\n') m--;
    norm[m] = 0;
    P.src = norm; /* the tokens point into it */
    P.len = m;
    int rc = lex(&P);
    jnlist body = {0};
    if (!rc) rc = p_body(&P, NULL, &body, NULL);
    free(P.t);
    if (rc) {
        jinja_free(t);
        return e && e->code ? e->code : FT_EINPUT;
    }
    t->body = body.v;
    t->nbody = body.n;
    *out = t;
    return 0;
}

void jinja_free(jinja_tmpl *t) {
    if (!t) return;
    ja_free(&t->ar);
    free(t->name);
    free(t);
}

/* ---------- evaluation ---------- */
typedef struct {
    const char **k;
    jv **v;
    int n, cap;
} jscope;
typedef struct {
    jarena ar;
    const jinja_tmpl *t;
    ft_error *e;
    jscope *sc;
    int nsc, capsc;
    int depth;
} jctx;

static int rerr(jctx *C, const jn *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rerr(jctx *C, const jn *at, const char *fmt, ...) {
    char m[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return ft_fail(C->e, FT_EINPUT, "%s: line %d column %d: %s", C->t->name, at->line, at->col, m);
}

static jv V_NONE_C = {.t = V_NONE}, V_TRUE_C = {.t = V_BOOL, .u.b = 1},
          V_FALSE_C = {.t = V_BOOL, .u.b = 0};
static jv *mkbool(int b) { return b ? &V_TRUE_C : &V_FALSE_C; }
static jv *mkint(jctx *C, long long i) {
    jv *v = mkv(&C->ar, V_INT);
    v->u.i = i;
    return v;
}
static jv *mkflt(jctx *C, double f) {
    jv *v = mkv(&C->ar, V_FLOAT);
    v->u.f = f;
    return v;
}
static jv *mkundef(jctx *C, const char *name) {
    jv *v = mkv(&C->ar, V_UNDEF);
    v->uname = name;
    return v;
}
static void list_push(jctx *C, jv *l, jv *x) {
    if (l->u.l.n == l->u.l.cap) {
        int c = l->u.l.cap ? l->u.l.cap * 2 : 4;
        jv **nv = ja_alloc(&C->ar, (size_t)c * sizeof *nv);
        if (l->u.l.n) memcpy(nv, l->u.l.v, (size_t)l->u.l.n * sizeof *nv);
        l->u.l.v = nv;
        l->u.l.cap = c;
    }
    l->u.l.v[l->u.l.n++] = x;
}
static int veq(const jv *a, const jv *b);
static jv *dict_get(const jv *d, const char *k, size_t kn) {
    for (int i = 0; i < d->u.d.n; i++) {
        const jv *key = d->u.d.e[i].k;
        if (key->t == V_STR && key->u.s.n == kn && !memcmp(key->u.s.p, k, kn)) return d->u.d.e[i].v;
    }
    return NULL;
}
static jv *dict_getv(const jv *d, const jv *k) {
    for (int i = 0; i < d->u.d.n; i++)
        if (veq(d->u.d.e[i].k, k)) return d->u.d.e[i].v;
    return NULL;
}
static void dict_set(jctx *C, jv *d, jv *k, jv *v) {
    for (int i = 0; i < d->u.d.n; i++)
        if (veq(d->u.d.e[i].k, k)) {
            d->u.d.e[i].v = v;
            return;
        }
    if (d->u.d.n == d->u.d.cap) {
        int c = d->u.d.cap ? d->u.d.cap * 2 : 4;
        jkv *ne = ja_alloc(&C->ar, (size_t)c * sizeof *ne);
        if (d->u.d.n) memcpy(ne, d->u.d.e, (size_t)d->u.d.n * sizeof *ne);
        d->u.d.e = ne;
        d->u.d.cap = c;
    }
    d->u.d.e[d->u.d.n].k = k;
    d->u.d.e[d->u.d.n].v = v;
    d->u.d.n++;
}
static void dict_sets(jctx *C, jv *d, const char *k, jv *v) { dict_set(C, d, mkstr(&C->ar, k, strlen(k)), v); }

static jv *from_json(jctx *C, const cJSON *j) {
    if (cJSON_IsNull(j)) return &V_NONE_C;
    if (cJSON_IsBool(j)) return mkbool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* cJSON keeps no int/float distinction: integral values within range are ints */
        if (d == floor(d) && fabs(d) < 9e15) return mkint(C, (long long)d);
        return mkflt(C, d);
    }
    if (cJSON_IsString(j)) return mkstr(&C->ar, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        jv *l = mkv(&C->ar, V_LIST);
        for (const cJSON *x = j->child; x; x = x->next) list_push(C, l, from_json(C, x));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = mkv(&C->ar, V_DICT);
        for (const cJSON *x = j->child; x; x = x->next) dict_sets(C, d, x->string ? x->string : "", from_json(C, x));
        return d;
    }
    return &V_NONE_C;
}

static int truthy(const jv *v) {
    switch (v->t) {
    case V_UNDEF:
    case V_NONE: return 0;
    case V_BOOL: return v->u.b;
    case V_INT: return v->u.i != 0;
    case V_FLOAT: return v->u.f != 0.0;
    case V_STR: return v->u.s.n != 0;
    case V_LIST: return v->u.l.n != 0;
    case V_DICT: return v->u.d.n != 0 || v->ns;
    default: return 1;
    }
}
static int isnum(const jv *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double numf(const jv *v) { return v->t == V_FLOAT ? v->u.f : v->t == V_INT ? (double)v->u.i : (double)v->u.b; }
static long long numi(const jv *v) { return v->t == V_INT ? v->u.i : v->t == V_BOOL ? v->u.b : (long long)v->u.f; }

static int veq(const jv *a, const jv *b) {
    if (isnum(a) && isnum(b)) return numf(a) == numf(b);
    if (a->t != b->t) return 0;
    switch (a->t) {
    case V_UNDEF:
    case V_NONE: return 1;
    case V_STR: return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case V_LIST:
        if (a->u.l.n != b->u.l.n) return 0;
        for (int i = 0; i < a->u.l.n; i++)
            if (!veq(a->u.l.v[i], b->u.l.v[i])) return 0;
        return 1;
    case V_DICT:
        if (a->u.d.n != b->u.d.n) return 0;
        for (int i = 0; i < a->u.d.n; i++) {
            jv *o = dict_getv(b, a->u.d.e[i].k);
            if (!o || !veq(a->u.d.e[i].v, o)) return 0;
        }
        return 1;
    default: return a == b;
    }
}

static const char *type_name(const jv *v) {
    static const char *n[] = {"undefined", "none", "bool", "int", "float", "str", "list", "dict", "function"};
    return v->ns ? "namespace" : n[v->t];
}

/* Python's repr of a float (shortest round-trip, with ".0" when integral). */
static void put_float(jbuf *b, double f) {
    if (isnan(f)) {
        jb_puts(b, "nan");
        return;
    }
    if (isinf(f)) {
        jb_puts(b, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* Python switches to exponent form at 1e16 and below 1e-4 as %g does; fix "1e+16" -> "1e+16" */
    char *ex = strchr(tmp, 'e');
    if (ex) {
        /* Python: mantissa without trailing ".0", exponent at least 2 digits: same as C */
        jb_puts(b, tmp);
        return;
    }
    jb_puts(b, tmp);
    if (!strchr(tmp, '.') && !strchr(tmp, 'n') && !strchr(tmp, 'i')) jb_puts(b, ".0");
}

static void put_repr_str(jbuf *b, const char *p, size_t n) {
    int has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    jb_put(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') jb_puts(b, "\\\\");
        else if (c == (unsigned char)q) {
            jb_puts(b, "\\");
            jb_put(b, &q, 1);
        } else if (c == '\n') jb_puts(b, "\\n");
        else if (c == '\r') jb_puts(b, "\\r");
        else if (c == '\t') jb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f) jb_printf(b, "\\x%02x", c);
        else jb_put(b, (const char *)&c, 1);
    }
    jb_put(b, &q, 1);
}

static void put_str(jbuf *b, const jv *v, int repr);
static void put_str(jbuf *b, const jv *v, int repr) {
    switch (v->t) {
    case V_UNDEF: break;
    case V_NONE: jb_puts(b, "None"); break;
    case V_BOOL: jb_puts(b, v->u.b ? "True" : "False"); break;
    case V_INT: jb_printf(b, "%lld", v->u.i); break;
    case V_FLOAT: put_float(b, v->u.f); break;
    case V_STR:
        if (repr)
            put_repr_str(b, v->u.s.p, v->u.s.n);
        else
            jb_put(b, v->u.s.p, v->u.s.n);
        break;
    case V_LIST:
        jb_puts(b, v->tup ? "(" : "[");
        for (int i = 0; i < v->u.l.n; i++) {
            if (i) jb_puts(b, ", ");
            put_str(b, v->u.l.v[i], 1);
        }
        jb_puts(b, v->tup ? (v->u.l.n == 1 ? ",)" : ")") : "]");
        break;
    case V_DICT:
        if (v->ns) jb_puts(b, "<Namespace ");
        jb_puts(b, "{");
        for (int i = 0; i < v->u.d.n; i++) {
            if (i) jb_puts(b, ", ");
            put_str(b, v->u.d.e[i].k, 1);
            jb_puts(b, ": ");
            put_str(b, v->u.d.e[i].v, 1);
        }
        jb_puts(b, "}");
        if (v->ns) jb_puts(b, ">");
        break;
    case V_FUNC: jb_printf(b, "<function %s>", v->u.fn.name); break;
    }
}

static jv *tostr(jctx *C, const jv *v) {
    if (v->t == V_STR) return (jv *)v;
    jbuf b = {0};
    put_str(&b, v, 0);
    jv *r = mkstr(&C->ar, b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

/* json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=...) */
static void put_json_str(jbuf *b, const char *p, size_t n) {
    jb_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        switch (c) {
        case '"': jb_puts(b, "\\\""); break;
        case '\\': jb_puts(b, "\\\\"); break;
        case '\n': jb_puts(b, "\\n"); break;
        case '\r': jb_puts(b, "\\r"); break;
        case '\t': jb_puts(b, "\\t"); break;
        case '\b': jb_puts(b, "\\b"); break;
        case '\f': jb_puts(b, "\\f"); break;
        default:
            if (c < 0x20)
                jb_printf(b, "\\u%04x", c);
            else
                jb_put(b, (const char *)&c, 1);
        }
    }
    jb_puts(b, "\"");
}
static void indent_nl(jbuf *b, int indent, int level) {
    jb_puts(b, "\n");
    for (int i = 0; i < indent * level; i++) jb_puts(b, " ");
}
static int put_json(jctx *C, const jn *at, jbuf *b, const jv *v, int indent, int level, int sort_keys) {
    switch (v->t) {
    case V_NONE: jb_puts(b, "null"); return 0;
    case V_BOOL: jb_puts(b, v->u.b ? "true" : "false"); return 0;
    case V_INT: jb_printf(b, "%lld", v->u.i); return 0;
    case V_FLOAT:
        if (isnan(v->u.f)) jb_puts(b, "NaN");
        else if (isinf(v->u.f)) jb_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else put_float(b, v->u.f);
        return 0;
    case V_STR: put_json_str(b, v->u.s.p, v->u.s.n); return 0;
    case V_LIST:
        if (!v->u.l.n) {
            jb_puts(b, "[]");
            return 0;
        }
        jb_puts(b, "[");
        for (int i = 0; i < v->u.l.n; i++) {
            if (i) jb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) indent_nl(b, indent, level + 1);
            if (put_json(C, at, b, v->u.l.v[i], indent, level + 1, sort_keys)) return 1;
        }
        if (indent >= 0) indent_nl(b, indent, level);
        jb_puts(b, "]");
        return 0;
    case V_DICT: {
        if (!v->u.d.n) {
            jb_puts(b, "{}");
            return 0;
        }
        int n = v->u.d.n;
        int *ord = ft_xmalloc((size_t)n * sizeof *ord);
        for (int i = 0; i < n; i++) ord[i] = i;
        if (sort_keys) /* insertion sort by key bytes */
            for (int i = 1; i < n; i++)
                for (int j = i; j > 0; j--) {
                    const jv *x = v->u.d.e[ord[j - 1]].k, *y = v->u.d.e[ord[j]].k;
                    size_t m = x->u.s.n < y->u.s.n ? x->u.s.n : y->u.s.n;
                    int c = memcmp(x->u.s.p, y->u.s.p, m);
                    if (c > 0 || (c == 0 && x->u.s.n > y->u.s.n)) {
                        int t = ord[j];
                        ord[j] = ord[j - 1];
                        ord[j - 1] = t;
                    } else
                        break;
                }
        jb_puts(b, "{");
        for (int i = 0; i < n; i++) {
            const jkv *e = &v->u.d.e[ord[i]];
            if (i) jb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) indent_nl(b, indent, level + 1);
            if (e->k->t == V_STR)
                put_json_str(b, e->k->u.s.p, e->k->u.s.n);
            else {
                jbuf kb = {0};
                put_str(&kb, e->k, 0);
                put_json_str(b, kb.p ? kb.p : "", kb.n);
                free(kb.p);
            }
            jb_puts(b, ": ");
            if (put_json(C, at, b, e->v, indent, level + 1, sort_keys)) {
                free(ord);
                return 1;
            }
        }
        free(ord);
        if (indent >= 0) indent_nl(b, indent, level);
        jb_puts(b, "}");
        return 0;
    }
    default: return rerr(C, at, "tojson: a value of type %s is not JSON serializable", type_name(v));
    }
}

/* ---------- scopes ---------- */
static void push_scope(jctx *C) {
    if (C->nsc == C->capsc) {
        C->capsc = C->capsc ? C->capsc * 2 : 8;
        C->sc = ft_xrealloc(C->sc, (size_t)C->capsc * sizeof *C->sc);
    }
    memset(&C->sc[C->nsc], 0, sizeof C->sc[0]);
    C->nsc++;
}
static void pop_scope(jctx *C) {
    C->nsc--;
    free(C->sc[C->nsc].k);
    free(C->sc[C->nsc].v);
}
static void set_var(jctx *C, const char *k, jv *v) {
    jscope *s = &C->sc[C->nsc - 1];
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->k[i], k)) {
            s->v[i] = v;
            return;
        }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->k = ft_xrealloc(s->k, (size_t)s->cap * sizeof *s->k);
        s->v = ft_xrealloc(s->v, (size_t)s->cap * sizeof *s->v);
    }
    s->k[s->n] = k;
    s->v[s->n] = v;
    s->n++;
}
static jv *get_var(jctx *C, const char *k) {
    for (int j = C->nsc - 1; j >= 0; j--) {
        jscope *s = &C->sc[j];
        for (int i = 0; i < s->n; i++)
            if (!strcmp(s->k[i], k)) return s->v[i];
    }
    return NULL;
}

/* ---------- helpers on strings (code points, as Python counts them) ---------- */
static size_t u8_count(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) c++;
    return c;
}
/* byte offset of code point index ci (ci <= count) */
static size_t u8_off(const char *p, size_t n, size_t ci) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)p[i] & 0xC0) != 0x80) {
            if (c == ci) return i;
            c++;
        }
    }
    return n;
}
static int py_isspace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x1f; }
/* Python's str.isspace() for the code point at s[0..n), as str.strip() and str.split() use it (also
 * U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000): its byte length, or 0.
 * Found by fuzz_template: `|trim` left a no-break space that jinja2 (and tmpl_render) strip. */
static size_t py_space_at(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (n == 0) return 0;
    if (py_isspace(p[0])) return 1;
    if (n >= 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0)) return 2;
    if (n < 3) return 0;
    if (p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) return 3;
    if (p[0] == 0xE2 && p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
        return 3;
    if (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) return 3;
    if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) return 3;
    return 0;
}
/* The same for the code point ending at s[b) (not before s[a)). */
static size_t py_space_before(const char *s, size_t a, size_t b) {
    for (size_t k = 1; k <= 3 && k <= b - a; k++)
        if (py_space_at(s + b - k, k) == k) return k;
    return 0;
}

static jv *str_strip(jctx *C, const jv *s, const jv *chars, int l, int r) {
    const char *p = s->u.s.p;
    size_t a = 0, b = s->u.s.n;
    if (chars && chars->t == V_STR) {
        while (l && a < b && memchr(chars->u.s.p, p[a], chars->u.s.n)) a++;
        while (r && b > a && memchr(chars->u.s.p, p[b - 1], chars->u.s.n)) b--;
    } else {
        for (size_t k; l && a < b && (k = py_space_at(p + a, b - a)) > 0;) a += k;
        for (size_t k; r && b > a && (k = py_space_before(p, a, b)) > 0;) b -= k;
    }
    return mkstr(&C->ar, p + a, b - a);
}
static jv *str_replace(jctx *C, const jv *s, const jv *old, const jv *nw, long long count) {
    jbuf b = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, on = old->u.s.n, i = 0;
    long long done = 0;
    if (on == 0) { /* Python inserts between every code point */
        for (size_t k = 0; k <= n; k++) {
            if ((k == n || ((unsigned char)p[k] & 0xC0) != 0x80) && (count < 0 || done < count)) {
                jb_put(&b, nw->u.s.p, nw->u.s.n);
                done++;
            }
            if (k < n) jb_put(&b, p + k, 1);
        }
    } else {
        while (i < n) {
            if ((count < 0 || done < count) && i + on <= n && !memcmp(p + i, old->u.s.p, on)) {
                jb_put(&b, nw->u.s.p, nw->u.s.n);
                i += on;
                done++;
            } else
                jb_put(&b, p + i++, 1);
        }
    }
    jv *r = mkstr(&C->ar, b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}
static jv *str_case(jctx *C, const jv *s, int mode) { /* 0 lower 1 upper 2 capitalize 3 title */
    jv *r = mkstr(&C->ar, s->u.s.p, s->u.s.n);
    char *p = (char *)r->u.s.p;
    int prev_alpha = 0;
    for (size_t i = 0; i < r->u.s.n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (mode == 0) p[i] = (char)tolower(c);
        else if (mode == 1) p[i] = (char)toupper(c);
        else if (mode == 2) p[i] = (char)(i == 0 ? toupper(c) : tolower(c));
        else {
            p[i] = (char)(prev_alpha ? tolower(c) : toupper(c));
            prev_alpha = isalpha(c) || c >= 0x80;
        }
    }
    return r;
}
static jv *str_split(jctx *C, const jv *s, const jv *sep, long long maxsplit) {
    jv *l = mkv(&C->ar, V_LIST);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    long long done = 0;
    if (!sep || sep->t == V_NONE) {
        while (i < n) {
            for (size_t k; i < n && (k = py_space_at(p + i, n - i)) > 0;) i += k;
            if (i >= n) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                for (size_t k; e > i && (k = py_space_before(p, i, e)) > 0;) e -= k;
                list_push(C, l, mkstr(&C->ar, p + i, e - i));
                break;
            }
            size_t j = i;
            while (j < n && !py_space_at(p + j, n - j)) j++;
            list_push(C, l, mkstr(&C->ar, p + i, j - i));
            done++;
            i = j;
        }
        return l;
    }
    size_t sn = sep->u.s.n, start = 0;
    for (i = 0; sn && i + sn <= n;) {
        if ((maxsplit < 0 || done < maxsplit) && !memcmp(p + i, sep->u.s.p, sn)) {
            list_push(C, l, mkstr(&C->ar, p + start, i - start));
            done++;
            i += sn;
            start = i;
        } else
            i++;
    }
    list_push(C, l, mkstr(&C->ar, p + start, n - start));
    return l;
}

static int eval(jctx *C, const jn *n, jv **out);
static int apply_test(jctx *C, const jn *at, const char *name, jv *v, jv **args, int nargs, int *res);

static jv *mkfunc(jctx *C, const char *name, jv *self) {
    jv *f = mkv(&C->ar, V_FUNC);
    f->u.fn.name = name;
    f->u.fn.self = self;
    return f;
}

static const char *str_methods[] = {"startswith", "endswith", "strip", "lstrip", "rstrip", "split", "title",
                                    "upper", "lower", "capitalize", "replace", "find", "count", "join", NULL};
static const char *dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *find_name(const char **l, const char *n) {
    for (; *l; l++)
        if (!strcmp(*l, n)) return *l;
    return NULL;
}

static int getattr_v(jctx *C, const jn *at, jv *o, const char *name, jv **out) {
    const char *m;
    if (o->t == V_UNDEF)
        return rerr(C, at, "'%s' is undefined (reading its attribute '%s')", o->uname ? o->uname : "value", name);
    if (o->t == V_DICT) {
        if (!o->ns && (m = find_name(dict_methods, name))) {
            *out = mkfunc(C, m, o);
            return 0;
        }
        jv *x = dict_get(o, name, strlen(name));
        *out = x ? x : mkundef(C, name);
        return 0;
    }
    if (o->t == V_STR && (m = find_name(str_methods, name))) {
        *out = mkfunc(C, m, o);
        return 0;
    }
    *out = mkundef(C, name);
    return 0;
}

static int getitem_v(jctx *C, const jn *at, jv *o, jv *k, jv **out) {
    if (o->t == V_UNDEF) return rerr(C, at, "'%s' is undefined (reading an item of it)", o->uname ? o->uname : "value");
    if (o->t == V_DICT) {
        jv *x = dict_getv(o, k);
        if (x) {
            *out = x;
            return 0;
        }
        if (k->t == V_STR) return getattr_v(C, at, o, ja_strndup(&C->ar, k->u.s.p, k->u.s.n), out);
        *out = mkundef(C, NULL);
        return 0;
    }
    if ((o->t == V_LIST || o->t == V_STR) && (k->t == V_INT || k->t == V_BOOL)) {
        long long i = numi(k);
        long long len = o->t == V_LIST ? o->u.l.n : (long long)u8_count(o->u.s.p, o->u.s.n);
        if (i < 0) i += len;
        if (i < 0 || i >= len) {
            *out = mkundef(C, NULL);
            return 0;
        }
        if (o->t == V_LIST)
            *out = o->u.l.v[i];
        else {
            size_t a = u8_off(o->u.s.p, o->u.s.n, (size_t)i), b = u8_off(o->u.s.p, o->u.s.n, (size_t)i + 1);
            *out = mkstr(&C->ar, o->u.s.p + a, b - a);
        }
        return 0;
    }
    if (k->t == V_STR) return getattr_v(C, at, o, ja_strndup(&C->ar, k->u.s.p, k->u.s.n), out);
    *out = mkundef(C, NULL);
    return 0;
}

static int do_slice(jctx *C, const jn *at, jv *o, jv *lo, jv *hi, jv *st, jv **out) {
    if (o->t != V_LIST && o->t != V_STR) return rerr(C, at, "cannot slice a value of type %s", type_name(o));
    long long len = o->t == V_LIST ? o->u.l.n : (long long)u8_count(o->u.s.p, o->u.s.n);
    long long step = st && st->t != V_NONE ? numi(st) : 1;
    if (step == 0) return rerr(C, at, "slice step cannot be zero");
    long long a, b;
    if (step > 0) {
        a = lo && lo->t != V_NONE ? numi(lo) : 0;
        b = hi && hi->t != V_NONE ? numi(hi) : len;
        if (a < 0) a += len;
        if (b < 0) b += len;
        if (a < 0) a = 0;
        if (b > len) b = len;
        if (a > len) a = len;
        if (b < 0) b = 0;
    } else {
        a = lo && lo->t != V_NONE ? numi(lo) : len - 1;
        b = hi && hi->t != V_NONE ? numi(hi) : -len - 1;
        if (a < 0) a += len;
        if (b < 0) b += len;
        if (a >= len) a = len - 1;
        if (b < -1) b = -1;
    }
    if (o->t == V_LIST) {
        jv *l = mkv(&C->ar, V_LIST);
        for (long long i = a; step > 0 ? i < b : i > b; i += step) list_push(C, l, o->u.l.v[i]);
        *out = l;
        return 0;
    }
    jbuf bf = {0};
    if (step == 1 && a <= b) {
        size_t x = u8_off(o->u.s.p, o->u.s.n, (size_t)a), y = u8_off(o->u.s.p, o->u.s.n, (size_t)b);
        jb_put(&bf, o->u.s.p + x, y - x);
    } else {
        for (long long i = a; step > 0 ? i < b : i > b; i += step) {
            size_t x = u8_off(o->u.s.p, o->u.s.n, (size_t)i), y = u8_off(o->u.s.p, o->u.s.n, (size_t)i + 1);
            jb_put(&bf, o->u.s.p + x, y - x);
        }
    }
    *out = mkstr(&C->ar, bf.p ? bf.p : "", bf.n);
    free(bf.p);
    return 0;
}

static long long vlen(const jv *v) {
    switch (v->t) {
    case V_STR: return (long long)u8_count(v->u.s.p, v->u.s.n);
    case V_LIST: return v->u.l.n;
    case V_DICT: return v->u.d.n;
    default: return 0;
    }
}

/* The items a for loop / filter iterates: lists as they are, dicts by key, strings by code point. */
static int iter_list(jctx *C, const jn *at, jv *v, jv **out) {
    if (v->t == V_LIST) {
        *out = v;
        return 0;
    }
    jv *l = mkv(&C->ar, V_LIST);
    if (v->t == V_UNDEF || v->t == V_NONE) {
        if (v->t == V_NONE) return rerr(C, at, "'NoneType' object is not iterable");
    } else if (v->t == V_DICT) {
        for (int i = 0; i < v->u.d.n; i++) list_push(C, l, v->u.d.e[i].k);
    } else if (v->t == V_STR) {
        size_t n = u8_count(v->u.s.p, v->u.s.n);
        for (size_t i = 0; i < n; i++) {
            size_t a = u8_off(v->u.s.p, v->u.s.n, i), b = u8_off(v->u.s.p, v->u.s.n, i + 1);
            list_push(C, l, mkstr(&C->ar, v->u.s.p + a, b - a));
        }
    } else
        return rerr(C, at, "a value of type %s is not iterable", type_name(v));
    *out = l;
    return 0;
}

static jv *dict_items(jctx *C, jv *d) {
    jv *l = mkv(&C->ar, V_LIST);
    for (int i = 0; i < d->u.d.n; i++) {
        jv *p = mkv(&C->ar, V_LIST);
        p->tup = 1;
        list_push(C, p, d->u.d.e[i].k);
        list_push(C, p, d->u.d.e[i].v);
        list_push(C, l, p);
    }
    return l;
}

static int need_str(jctx *C, const jn *at, const char *what, jv *v) {
    if (v->t != V_STR) return rerr(C, at, "%s expects a string, got %s", what, type_name(v));
    return 0;
}

static int call_method(jctx *C, const jn *at, const char *m, jv *self, jv **a, int na, jv **out) {
    if (self->t == V_DICT) {
        if (!strcmp(m, "items")) *out = dict_items(C, self);
        else if (!strcmp(m, "keys") || !strcmp(m, "values")) {
            jv *l = mkv(&C->ar, V_LIST);
            for (int i = 0; i < self->u.d.n; i++) list_push(C, l, m[0] == 'k' ? self->u.d.e[i].k : self->u.d.e[i].v);
            *out = l;
        } else { /* get */
            if (na < 1) return rerr(C, at, "dict.get needs a key");
            jv *x = dict_getv(self, a[0]);
            *out = x ? x : na > 1 ? a[1] : &V_NONE_C;
        }
        return 0;
    }
    /* str */
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        if (na < 1) return rerr(C, at, "str.%s needs an argument", m);
        int ok = 0;
        jv *cand = a[0];
        int nc = cand->t == V_LIST ? cand->u.l.n : 1;
        for (int i = 0; i < nc && !ok; i++) {
            jv *x = cand->t == V_LIST ? cand->u.l.v[i] : cand;
            if (need_str(C, at, m, x)) return 1;
            size_t n = self->u.s.n, k = x->u.s.n;
            ok = k <= n && !memcmp(m[0] == 's' ? self->u.s.p : self->u.s.p + n - k, x->u.s.p, k);
        }
        *out = mkbool(ok);
    } else if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        *out = str_strip(C, self, na ? a[0] : NULL, m[0] != 'r', m[0] != 'l');
    } else if (!strcmp(m, "split")) {
        jv *sep = na > 0 ? a[0] : NULL;
        if (sep && sep->t != V_NONE && need_str(C, at, "str.split", sep)) return 1;
        if (sep && sep->t == V_STR && sep->u.s.n == 0) return rerr(C, at, "str.split: empty separator");
        *out = str_split(C, self, sep, na > 1 ? numi(a[1]) : -1);
    } else if (!strcmp(m, "title")) *out = str_case(C, self, 3);
    else if (!strcmp(m, "upper")) *out = str_case(C, self, 1);
    else if (!strcmp(m, "lower")) *out = str_case(C, self, 0);
    else if (!strcmp(m, "capitalize")) *out = str_case(C, self, 2);
    else if (!strcmp(m, "replace")) {
        if (na < 2 || need_str(C, at, "str.replace", a[0]) || need_str(C, at, "str.replace", a[1]))
            return na < 2 ? rerr(C, at, "str.replace needs two arguments") : 1;
        *out = str_replace(C, self, a[0], a[1], na > 2 ? numi(a[2]) : -1);
    } else if (!strcmp(m, "find") || !strcmp(m, "count")) {
        if (na < 1 || need_str(C, at, m, a[0])) return na < 1 ? rerr(C, at, "str.%s needs an argument", m) : 1;
        long long found = -1, cnt = 0;
        size_t n = self->u.s.n, k = a[0]->u.s.n;
        for (size_t i = 0; i + k <= n;) {
            if (!memcmp(self->u.s.p + i, a[0]->u.s.p, k)) {
                if (found < 0) found = (long long)u8_count(self->u.s.p, i);
                cnt++;
                i += k ? k : 1;
            } else
                i++;
        }
        *out = mkint(C, m[0] == 'f' ? found : cnt);
    } else { /* join */
        if (na < 1) return rerr(C, at, "str.join needs an argument");
        jv *l;
        if (iter_list(C, at, a[0], &l)) return 1;
        jbuf b = {0};
        for (int i = 0; i < l->u.l.n; i++) {
            if (l->u.l.v[i]->t != V_STR) {
                free(b.p);
                return rerr(C, at, "str.join: item %d is %s, not a string", i, type_name(l->u.l.v[i]));
            }
            if (i) jb_put(&b, self->u.s.p, self->u.s.n);
            jb_put(&b, l->u.l.v[i]->u.s.p, l->u.l.v[i]->u.s.n);
        }
        *out = mkstr(&C->ar, b.p ? b.p : "", b.n);
        free(b.p);
    }
    return 0;
}

/* ---------- arguments ---------- */
typedef struct {
    jv *v[16];
    const char *kw[16];
    int n;
} jargs;
static int eval_args(jctx *C, const jn *n, jargs *A) {
    A->n = 0;
    if (n->nargs > 16) return rerr(C, n, "too many arguments");
    for (int i = 0; i < n->nargs; i++) {
        if (eval(C, n->args[i], &A->v[i])) return 1;
        A->kw[i] = n->kw[i];
        A->n++;
    }
    return 0;
}
/* positional argument pos or keyword name, else NULL */
static jv *arg(const jargs *A, int pos, const char *name) {
    int p = 0;
    for (int i = 0; i < A->n; i++) {
        if (A->kw[i]) {
            if (name && !strcmp(A->kw[i], name)) return A->v[i];
        } else if (p++ == pos)
            return A->v[i];
    }
    return NULL;
}
static int npos(const jargs *A) {
    int p = 0;
    for (int i = 0; i < A->n; i++)
        if (!A->kw[i]) p++;
    return p;
}

static int call_global(jctx *C, const jn *at, const char *name, const jargs *A, jv **out) {
    if (!strcmp(name, "raise_exception")) {
        jv *m = arg(A, 0, NULL);
        jv *s = m ? tostr(C, m) : mkstr(&C->ar, "", 0);
        return rerr(C, at, "template raised an error: %.*s", (int)s->u.s.n, s->u.s.p);
    }
    if (!strcmp(name, "namespace")) {
        jv *d = mkv(&C->ar, V_DICT);
        d->ns = 1;
        for (int i = 0; i < A->n; i++) {
            if (A->kw[i])
                dict_sets(C, d, A->kw[i], A->v[i]);
            else if (A->v[i]->t == V_DICT)
                for (int j = 0; j < A->v[i]->u.d.n; j++) dict_set(C, d, A->v[i]->u.d.e[j].k, A->v[i]->u.d.e[j].v);
        }
        *out = d;
        return 0;
    }
    if (!strcmp(name, "range")) {
        int np = npos(A);
        if (np < 1 || np > 3) return rerr(C, at, "range() takes 1 to 3 arguments");
        for (int i = 0; i < np; i++)
            if (arg(A, i, NULL)->t != V_INT) return rerr(C, at, "range() arguments must be integers");
        long long a = 0, b, s = 1;
        if (np == 1)
            b = arg(A, 0, NULL)->u.i;
        else {
            a = arg(A, 0, NULL)->u.i;
            b = arg(A, 1, NULL)->u.i;
            if (np == 3) s = arg(A, 2, NULL)->u.i;
        }
        if (s == 0) return rerr(C, at, "range() step must not be zero");
        jv *l = mkv(&C->ar, V_LIST);
        for (long long i = a; s > 0 ? i < b : i > b; i += s) {
            if (l->u.l.n >= 1000000) return rerr(C, at, "range() too large");
            list_push(C, l, mkint(C, i));
        }
        *out = l;
        return 0;
    }
    if (!strcmp(name, "strftime_now")) {
        jv *f = arg(A, 0, NULL);
        if (!f || f->t != V_STR) return rerr(C, at, "strftime_now() needs a format string");
        char fmt[256], buf[256];
        snprintf(fmt, sizeof fmt, "%.*s", (int)f->u.s.n, f->u.s.p);
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t n = strftime(buf, sizeof buf, fmt, &tmv);
        *out = mkstr(&C->ar, buf, n);
        return 0;
    }
    return rerr(C, at, "unsupported function: %s()", name);
}
static const char *global_funcs[] = {"raise_exception", "namespace", "range", "strftime_now", NULL};

static int attr_path(jctx *C, const jn *at, jv *o, jv *path, jv **out) {
    /* "a.b" attribute paths, as selectattr/map/join take them */
    if (path->t != V_STR) return getitem_v(C, at, o, path, out);
    const char *p = path->u.s.p, *end = p + path->u.s.n;
    jv *cur = o;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot) dot = end;
        jv *k = mkstr(&C->ar, p, (size_t)(dot - p));
        if (cur->t == V_UNDEF) {
            *out = cur;
            return 0;
        }
        if (getitem_v(C, at, cur, k, &cur)) return 1;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

static int apply_filter(jctx *C, const jn *at, const char *f, jv *v, const jargs *A, jv **out) {
    jarena *ar = &C->ar;
    if (!strcmp(f, "trim")) {
        if (v->t == V_UNDEF) v = mkstr(ar, "", 0);
        jv *s = tostr(C, v);
        *out = str_strip(C, s, arg(A, 0, "chars"), 1, 1);
    } else if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (v->t != V_STR && v->t != V_LIST && v->t != V_DICT && v->t != V_UNDEF)
            return rerr(C, at, "filter %s: a value of type %s has no length", f, type_name(v));
        *out = mkint(C, vlen(v));
    } else if (!strcmp(f, "tojson")) {
        jv *ind = arg(A, 0, "indent");
        jv *sk = arg(A, 99, "sort_keys");
        jbuf b = {0};
        if (put_json(C, at, &b, v->t == V_UNDEF ? &V_NONE_C : v, ind && ind->t == V_INT ? (int)ind->u.i : -1, 0,
                     sk && truthy(sk))) {
            free(b.p);
            return 1;
        }
        *out = mkstr(ar, b.p ? b.p : "", b.n);
        free(b.p);
    } else if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") || !strcmp(f, "title")) {
        jv *s = tostr(C, v);
        *out = str_case(C, s, f[0] == 'l' ? 0 : f[0] == 'u' ? 1 : f[0] == 'c' ? 2 : 3);
    } else if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv *dv = arg(A, 0, "default_value");
        jv *bo = arg(A, 1, "boolean");
        int use = v->t == V_UNDEF || (bo && truthy(bo) && !truthy(v));
        *out = use ? (dv ? dv : mkstr(ar, "", 0)) : v;
    } else if (!strcmp(f, "first") || !strcmp(f, "last")) {
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        *out = l->u.l.n ? l->u.l.v[f[0] == 'f' ? 0 : l->u.l.n - 1] : mkundef(C, f);
    } else if (!strcmp(f, "join")) {
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        jv *sep = arg(A, 0, "d");
        jv *attr = arg(A, 1, "attribute");
        jbuf b = {0};
        for (int i = 0; i < l->u.l.n; i++) {
            jv *x = l->u.l.v[i];
            if (attr && attr_path(C, at, x, attr, &x)) {
                free(b.p);
                return 1;
            }
            if (i && sep) {
                jv *s = tostr(C, sep);
                jb_put(&b, s->u.s.p, s->u.s.n);
            }
            put_str(&b, x, 0);
        }
        *out = mkstr(ar, b.p ? b.p : "", b.n);
        free(b.p);
    } else if (!strcmp(f, "replace")) {
        jv *o = arg(A, 0, "old"), *nw = arg(A, 1, "new"), *cnt = arg(A, 2, "count");
        if (!o || !nw) return rerr(C, at, "filter replace needs two arguments");
        *out = str_replace(C, tostr(C, v), tostr(C, o), tostr(C, nw), cnt && cnt->t == V_INT ? cnt->u.i : -1);
    } else if (!strcmp(f, "string")) {
        *out = tostr(C, v);
    } else if (!strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape")) {
        if (f[0] != 's') return rerr(C, at, "unsupported filter: %s (autoescape is off in chat templates)", f);
        *out = v;
    } else if (!strcmp(f, "list")) {
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        jv *c = mkv(ar, V_LIST);
        for (int i = 0; i < l->u.l.n; i++) list_push(C, c, l->u.l.v[i]);
        *out = c;
    } else if (!strcmp(f, "items")) {
        if (v->t == V_UNDEF) *out = mkv(ar, V_LIST);
        else if (v->t != V_DICT) return rerr(C, at, "filter items expects a mapping, got %s", type_name(v));
        else *out = dict_items(C, v);
    } else if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr") || !strcmp(f, "select") || !strcmp(f, "reject")) {
        int attr = strstr(f, "attr") != NULL, rej = f[0] == 'r';
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        int np = npos(A), first = attr ? 1 : 0;
        if (attr && np < 1) return rerr(C, at, "filter %s needs an attribute name", f);
        jv *tname = np > first ? arg(A, first, NULL) : NULL;
        if (tname && tname->t != V_STR) return rerr(C, at, "filter %s: the test name must be a string", f);
        jv *targs[8];
        int nt = 0;
        for (int i = first + 1; i < np && nt < 8; i++) targs[nt++] = arg(A, i, NULL);
        jv *r = mkv(ar, V_LIST);
        for (int i = 0; i < l->u.l.n; i++) {
            jv *x = l->u.l.v[i];
            if (attr && attr_path(C, at, x, arg(A, 0, NULL), &x)) return 1;
            int ok = 0;
            if (tname) {
                char tn[64];
                snprintf(tn, sizeof tn, "%.*s", (int)tname->u.s.n, tname->u.s.p);
                if (apply_test(C, at, ja_strndup(ar, tn, strlen(tn)), x, targs, nt, &ok)) return 1;
            } else
                ok = truthy(x);
            if (ok != rej) list_push(C, r, l->u.l.v[i]);
        }
        *out = r;
    } else if (!strcmp(f, "map")) {
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        jv *attr = arg(A, 99, "attribute"), *dflt = arg(A, 99, "default");
        jv *r = mkv(ar, V_LIST);
        jv *fname = attr ? NULL : arg(A, 0, NULL);
        if (!attr && (!fname || fname->t != V_STR)) return rerr(C, at, "filter map needs attribute= or a filter name");
        for (int i = 0; i < l->u.l.n; i++) {
            jv *x = l->u.l.v[i];
            if (attr) {
                if (attr_path(C, at, x, attr, &x)) return 1;
                if (x->t == V_UNDEF && dflt) x = dflt;
            } else {
                jargs none = {.n = 0};
                char fn[64];
                snprintf(fn, sizeof fn, "%.*s", (int)fname->u.s.n, fname->u.s.p);
                if (apply_filter(C, at, ja_strndup(ar, fn, strlen(fn)), x, &none, &x)) return 1;
            }
            list_push(C, r, x);
        }
        *out = r;
    } else if (!strcmp(f, "reverse")) {
        if (v->t == V_STR) {
            jv *neg = mkint(C, -1);
            return do_slice(C, at, v, NULL, NULL, neg, out);
        }
        jv *l;
        if (iter_list(C, at, v, &l)) return 1;
        jv *r = mkv(ar, V_LIST);
        for (int i = l->u.l.n - 1; i >= 0; i--) list_push(C, r, l->u.l.v[i]);
        *out = r;
    } else if (!strcmp(f, "int")) {
        jv *dv = arg(A, 0, "default");
        if (v->t == V_INT) *out = v;
        else if (v->t == V_FLOAT) *out = mkint(C, (long long)v->u.f);
        else if (v->t == V_BOOL) *out = mkint(C, v->u.b);
        else if (v->t == V_STR) {
            char tmp[64], *end;
            snprintf(tmp, sizeof tmp, "%.*s", (int)v->u.s.n, v->u.s.p);
            long long x = strtoll(tmp, &end, 10);
            *out = (end != tmp && !*end) ? mkint(C, x) : dv ? dv : mkint(C, 0);
        } else
            *out = dv ? dv : mkint(C, 0);
    } else if (!strcmp(f, "float")) {
        if (isnum(v)) *out = mkflt(C, numf(v));
        else if (v->t == V_STR) {
            char tmp[64], *end;
            snprintf(tmp, sizeof tmp, "%.*s", (int)v->u.s.n, v->u.s.p);
            double x = strtod(tmp, &end);
            *out = mkflt(C, (end != tmp && !*end) ? x : 0.0);
        } else
            *out = mkflt(C, 0.0);
    } else if (!strcmp(f, "abs")) {
        if (!isnum(v)) return rerr(C, at, "filter abs expects a number, got %s", type_name(v));
        *out = v->t == V_FLOAT ? mkflt(C, fabs(v->u.f)) : mkint(C, llabs(numi(v)));
    } else {
        return rerr(C, at, "unsupported filter: %s", f);
    }
    return 0;
}

static int bytes_find(const char *h, size_t hn, const char *nd, size_t nn) {
    for (size_t i = 0; i + nn <= hn; i++)
        if (!memcmp(h + i, nd, nn)) return 1;
    return 0;
}
static int apply_test(jctx *C, const jn *at, const char *t, jv *v, jv **a, int na, int *res) {
    int r = 0;
    if (!strcmp(t, "defined")) r = v->t != V_UNDEF;
    else if (!strcmp(t, "undefined")) r = v->t == V_UNDEF;
    else if (!strcmp(t, "none")) r = v->t == V_NONE;
    else if (!strcmp(t, "string")) r = v->t == V_STR;
    else if (!strcmp(t, "number")) r = v->t == V_INT || v->t == V_FLOAT;
    else if (!strcmp(t, "integer")) r = v->t == V_INT;
    else if (!strcmp(t, "float")) r = v->t == V_FLOAT;
    else if (!strcmp(t, "boolean")) r = v->t == V_BOOL;
    else if (!strcmp(t, "true")) r = v->t == V_BOOL && v->u.b;
    else if (!strcmp(t, "false")) r = v->t == V_BOOL && !v->u.b;
    else if (!strcmp(t, "mapping")) r = v->t == V_DICT;
    else if (!strcmp(t, "iterable")) r = v->t == V_STR || v->t == V_LIST || v->t == V_DICT;
    else if (!strcmp(t, "sequence")) r = v->t == V_STR || v->t == V_LIST || v->t == V_DICT;
    else if (!strcmp(t, "callable")) r = v->t == V_FUNC;
    else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        r = v->t == V_STR;
        for (size_t i = 0; r && i < v->u.s.n; i++)
            if (t[0] == 'l' ? isupper((unsigned char)v->u.s.p[i]) : islower((unsigned char)v->u.s.p[i])) r = 0;
    } else if (!strcmp(t, "even") || !strcmp(t, "odd")) {
        if (v->t != V_INT) return rerr(C, at, "test %s expects an integer, got %s", t, type_name(v));
        r = (v->u.i % 2 == 0) == (t[0] == 'e');
    } else if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==") || !strcmp(t, "ne") ||
               !strcmp(t, "!=") || !strcmp(t, "sameas") || !strcmp(t, "in") || !strcmp(t, "divisibleby")) {
        if (na < 1) return rerr(C, at, "test %s needs an argument", t);
        if (!strcmp(t, "in")) {
            jv *c = a[0];
            if (c->t == V_STR) r = v->t == V_STR && (v->u.s.n == 0 || bytes_find(c->u.s.p, c->u.s.n, v->u.s.p, v->u.s.n));
            else if (c->t == V_DICT) r = dict_getv(c, v) != NULL;
            else if (c->t == V_LIST) {
                r = 0;
                for (int i = 0; i < c->u.l.n && !r; i++) r = veq(c->u.l.v[i], v);
            } else
                return rerr(C, at, "test in: a value of type %s is not a container", type_name(c));
        } else if (!strcmp(t, "divisibleby")) {
            if (!isnum(v) || !isnum(a[0]) || numi(a[0]) == 0) return rerr(C, at, "test divisibleby needs nonzero numbers");
            r = numi(v) % numi(a[0]) == 0;
        } else if (!strcmp(t, "sameas"))
            r = v == a[0] || ((v->t == V_NONE || v->t == V_BOOL) && v->t == a[0]->t && veq(v, a[0]));
        else {
            r = veq(v, a[0]);
            if (t[0] == 'n' || t[0] == '!') r = !r;
        }
    } else
        return rerr(C, at, "unsupported test: is %s", t);
    *res = r;
    return 0;
}

/* ---------- operators ---------- */
static int cmp_order(jctx *C, const jn *at, const char *op, jv *a, jv *b, int *res) {
    int c;
    if (isnum(a) && isnum(b)) {
        double x = numf(a), y = numf(b);
        c = x < y ? -1 : x > y ? 1 : 0;
    } else if (a->t == V_STR && b->t == V_STR) {
        size_t m = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        c = memcmp(a->u.s.p, b->u.s.p, m);
        if (!c) c = a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n ? 1 : 0;
    } else
        return rerr(C, at, "'%s' not supported between %s and %s", op, type_name(a), type_name(b));
    *res = !strcmp(op, "<") ? c < 0 : !strcmp(op, ">") ? c > 0 : !strcmp(op, "<=") ? c <= 0 : c >= 0;
    return 0;
}

static int binop(jctx *C, const jn *at, const char *op, jv *a, jv *b, jv **out) {
    if (!strcmp(op, "==") || !strcmp(op, "!=")) {
        int r = veq(a, b);
        *out = mkbool(op[0] == '=' ? r : !r);
        return 0;
    }
    if (!strcmp(op, "<") || !strcmp(op, ">") || !strcmp(op, "<=") || !strcmp(op, ">=")) {
        int r = 0;
        if (cmp_order(C, at, op, a, b, &r)) return 1;
        *out = mkbool(r);
        return 0;
    }
    if (!strcmp(op, "in") || !strcmp(op, "not in")) {
        int r = 0;
        if (b->t == V_UNDEF) return rerr(C, at, "'%s' is undefined (right of 'in')", b->uname ? b->uname : "value");
        if (b->t == V_STR && a->t != V_STR) return rerr(C, at, "'in <string>' requires a string on the left, got %s", type_name(a));
        if (apply_test(C, at, "in", a, &b, 1, &r)) return 1;
        *out = mkbool(op[0] == 'i' ? r : !r);
        return 0;
    }
    if (!strcmp(op, "~")) {
        jbuf s = {0};
        put_str(&s, a, 0);
        put_str(&s, b, 0);
        *out = mkstr(&C->ar, s.p ? s.p : "", s.n);
        free(s.p);
        return 0;
    }
    if (a->t == V_UNDEF || b->t == V_UNDEF) {
        jv *u = a->t == V_UNDEF ? a : b;
        return rerr(C, at, "'%s' is undefined (operand of '%s')", u->uname ? u->uname : "value", op);
    }
    if (!strcmp(op, "+")) {
        if (a->t == V_STR && b->t == V_STR) {
            jv *r = mkv(&C->ar, V_STR);
            char *p = ja_alloc(&C->ar, a->u.s.n + b->u.s.n + 1);
            memcpy(p, a->u.s.p, a->u.s.n);
            memcpy(p + a->u.s.n, b->u.s.p, b->u.s.n);
            r->u.s.p = p;
            r->u.s.n = a->u.s.n + b->u.s.n;
            *out = r;
            return 0;
        }
        if (a->t == V_LIST && b->t == V_LIST) {
            jv *r = mkv(&C->ar, V_LIST);
            for (int i = 0; i < a->u.l.n; i++) list_push(C, r, a->u.l.v[i]);
            for (int i = 0; i < b->u.l.n; i++) list_push(C, r, b->u.l.v[i]);
            *out = r;
            return 0;
        }
    }
    if (!strcmp(op, "*") && ((a->t == V_STR && b->t == V_INT) || (a->t == V_INT && b->t == V_STR))) {
        jv *s = a->t == V_STR ? a : b;
        long long k = a->t == V_INT ? a->u.i : b->u.i;
        jbuf r = {0};
        for (long long i = 0; i < k && r.n < (1u << 24); i++) jb_put(&r, s->u.s.p, s->u.s.n);
        *out = mkstr(&C->ar, r.p ? r.p : "", r.n);
        free(r.p);
        return 0;
    }
    if (!isnum(a) || !isnum(b))
        return rerr(C, at, "unsupported operand types for %s: %s and %s", op, type_name(a), type_name(b));
    int fl = a->t == V_FLOAT || b->t == V_FLOAT;
    if (!strcmp(op, "/")) {
        if (numf(b) == 0) return rerr(C, at, "division by zero");
        *out = mkflt(C, numf(a) / numf(b));
        return 0;
    }
    if (!strcmp(op, "**")) {
        double r = pow(numf(a), numf(b));
        *out = (!fl && numi(b) >= 0) ? mkint(C, (long long)r) : mkflt(C, r);
        return 0;
    }
    if (fl) {
        double x = numf(a), y = numf(b), r;
        if ((op[0] == '%' || !strcmp(op, "//")) && y == 0) return rerr(C, at, "division by zero");
        if (op[0] == '+') r = x + y;
        else if (op[0] == '-') r = x - y;
        else if (op[0] == '*') r = x * y;
        else if (op[0] == '%') {
            r = fmod(x, y);
            if (r != 0 && ((r < 0) != (y < 0))) r += y;
        } else
            r = floor(x / y);
        *out = mkflt(C, r);
        return 0;
    }
    long long x = numi(a), y = numi(b), r;
    if ((op[0] == '%' || !strcmp(op, "//")) && y == 0) return rerr(C, at, "division by zero");
    if (op[0] == '+') r = x + y;
    else if (op[0] == '-') r = x - y;
    else if (op[0] == '*') r = x * y;
    else if (op[0] == '%') {
        r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
    } else {
        r = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) r--;
    }
    *out = mkint(C, r);
    return 0;
}

static int eval(jctx *C, const jn *n, jv **out) {
    switch (n->k) {
    case E_LIT: *out = n->lit; return 0;
    case E_NAME: {
        jv *v = get_var(C, n->s);
        if (v) {
            *out = v;
            return 0;
        }
        const char *g = find_name(global_funcs, n->s);
        *out = g ? mkfunc(C, g, NULL) : mkundef(C, n->s);
        return 0;
    }
    case E_ATTR: {
        jv *o;
        if (eval(C, n->a, &o)) return 1;
        return getattr_v(C, n, o, n->s, out);
    }
    case E_ITEM: {
        jv *o, *k;
        if (eval(C, n->a, &o) || eval(C, n->b, &k)) return 1;
        return getitem_v(C, n, o, k, out);
    }
    case E_SLICE: {
        jv *o, *lo = NULL, *hi = NULL, *st = NULL;
        if (eval(C, n->a, &o) || (n->b && eval(C, n->b, &lo)) || (n->c && eval(C, n->c, &hi)) ||
            (n->d && eval(C, n->d, &st)))
            return 1;
        if (o->t == V_UNDEF) return rerr(C, n, "'%s' is undefined (slicing it)", o->uname ? o->uname : "value");
        return do_slice(C, n, o, lo, hi, st, out);
    }
    case E_CALL: {
        jv *f;
        if (eval(C, n->a, &f)) return 1;
        jargs A;
        if (eval_args(C, n, &A)) return 1;
        if (f->t != V_FUNC) {
            if (n->a->k == E_ATTR) {
                jv *o;
                if (eval(C, n->a->a, &o)) return 1;
                return rerr(C, n, "unsupported method: %s.%s()", type_name(o), n->a->s);
            }
            if (n->a->k == E_NAME && f->t == V_UNDEF) return rerr(C, n, "unsupported function: %s()", n->a->s);
            return rerr(C, n, "a value of type %s is not callable", type_name(f));
        }
        if (f->u.fn.self) {
            jv *pa[16];
            int np = 0;
            for (int i = 0; i < A.n; i++)
                if (!A.kw[i]) pa[np++] = A.v[i];
            return call_method(C, n, f->u.fn.name, f->u.fn.self, pa, np, out);
        }
        return call_global(C, n, f->u.fn.name, &A, out);
    }
    case E_FILTER: {
        jv *v;
        if (eval(C, n->a, &v)) return 1;
        jargs A;
        if (eval_args(C, n, &A)) return 1;
        return apply_filter(C, n, n->s, v, &A, out);
    }
    case E_TEST: {
        jv *v;
        if (eval(C, n->a, &v)) return 1;
        jargs A;
        if (eval_args(C, n, &A)) return 1;
        int r = 0;
        if (apply_test(C, n, n->s, v, A.v, A.n, &r)) return 1;
        *out = mkbool(n->negate ? !r : r);
        return 0;
    }
    case E_BIN: {
        jv *a, *b;
        if (eval(C, n->a, &a) || eval(C, n->b, &b)) return 1;
        return binop(C, n, n->s, a, b, out);
    }
    case E_NEG:
    case E_POS: {
        jv *a;
        if (eval(C, n->a, &a)) return 1;
        if (!isnum(a)) return rerr(C, n, "bad operand type for unary %c: %s", n->k == E_NEG ? '-' : '+', type_name(a));
        if (n->k == E_POS) *out = a;
        else *out = a->t == V_FLOAT ? mkflt(C, -a->u.f) : mkint(C, -numi(a));
        return 0;
    }
    case E_NOT: {
        jv *a;
        if (eval(C, n->a, &a)) return 1;
        *out = mkbool(!truthy(a));
        return 0;
    }
    case E_AND:
    case E_OR: {
        jv *a;
        if (eval(C, n->a, &a)) return 1;
        if ((n->k == E_AND) != truthy(a)) {
            *out = a;
            return 0;
        }
        return eval(C, n->b, out);
    }
    case E_COND: {
        jv *c;
        if (eval(C, n->b, &c)) return 1;
        if (truthy(c)) return eval(C, n->a, out);
        if (n->c) return eval(C, n->c, out);
        *out = mkundef(C, NULL);
        return 0;
    }
    case E_LIST: {
        jv *l = mkv(&C->ar, V_LIST);
        l->tup = n->negate;
        for (int i = 0; i < n->nargs; i++) {
            jv *x;
            if (eval(C, n->args[i], &x)) return 1;
            list_push(C, l, x);
        }
        *out = l;
        return 0;
    }
    case E_DICT: {
        jv *d = mkv(&C->ar, V_DICT);
        for (int i = 0; i + 1 < n->nargs; i += 2) {
            jv *k, *x;
            if (eval(C, n->args[i], &k) || eval(C, n->args[i + 1], &x)) return 1;
            dict_set(C, d, k, x);
        }
        *out = d;
        return 0;
    }
    default: return rerr(C, n, "internal: not an expression");
    }
}

static int exec_body(jctx *C, jn **body, int nb, jbuf *o);

static int assign(jctx *C, const jn *n, const char **tg, int ntg, jv *v) {
    if (ntg == 1) {
        set_var(C, tg[0], v);
        return 0;
    }
    jv *l;
    if (iter_list(C, n, v, &l)) return 1;
    if (l->u.l.n != ntg) return rerr(C, n, "cannot unpack %d values into %d variables", l->u.l.n, ntg);
    for (int i = 0; i < ntg; i++) set_var(C, tg[i], l->u.l.v[i]);
    return 0;
}

static int exec_stmt(jctx *C, const jn *n, jbuf *o) {
    switch (n->k) {
    case S_TEXT: jb_put(o, n->s, n->n); return 0;
    case S_OUT: {
        jv *v;
        if (eval(C, n->a, &v)) return 1;
        put_str(o, v, 0);
        return 0;
    }
    case S_IF: {
        jv *c;
        if (eval(C, n->a, &c)) return 1;
        return truthy(c) ? exec_body(C, n->body, n->nbody, o) : exec_body(C, n->ebody, n->nebody, o);
    }
    case S_BLOCK: return exec_body(C, n->body, n->nbody, o);
    case S_SET: {
        jv *v;
        if (eval(C, n->a, &v)) return 1;
        if (n->s) { /* ns.attr = v */
            jv *ns = get_var(C, n->tg[0]);
            if (!ns || !ns->ns)
                return rerr(C, n, "cannot set attribute '%s' of '%s': only a namespace() takes attributes", n->s, n->tg[0]);
            dict_sets(C, ns, n->s, v);
            return 0;
        }
        return assign(C, n, n->tg, n->ntg, v);
    }
    case S_SETBLOCK: {
        jbuf b = {0};
        int rc = exec_body(C, n->body, n->nbody, &b);
        if (!rc) set_var(C, n->tg[0], mkstr(&C->ar, b.p ? b.p : "", b.n));
        free(b.p);
        return rc;
    }
    case S_FOR: {
        jv *seq, *l;
        if (eval(C, n->a, &seq)) return 1;
        if (iter_list(C, n->a, seq, &l)) return 1;
        if (n->b) { /* for x in xs if cond: filter first, loop.* counts what is left */
            jv *f = mkv(&C->ar, V_LIST);
            push_scope(C);
            for (int i = 0; i < l->u.l.n; i++) {
                jv *c;
                if (assign(C, n, n->tg, n->ntg, l->u.l.v[i]) || eval(C, n->b, &c)) {
                    pop_scope(C);
                    return 1;
                }
                if (truthy(c)) list_push(C, f, l->u.l.v[i]);
            }
            pop_scope(C);
            l = f;
        }
        if (l->u.l.n == 0) return exec_body(C, n->ebody, n->nebody, o);
        int len = l->u.l.n, rc = 0;
        push_scope(C);
        for (int i = 0; i < len && !rc; i++) {
            jv *loop = mkv(&C->ar, V_DICT);
            dict_sets(C, loop, "index", mkint(C, i + 1));
            dict_sets(C, loop, "index0", mkint(C, i));
            dict_sets(C, loop, "revindex", mkint(C, len - i));
            dict_sets(C, loop, "revindex0", mkint(C, len - i - 1));
            dict_sets(C, loop, "first", mkbool(i == 0));
            dict_sets(C, loop, "last", mkbool(i == len - 1));
            dict_sets(C, loop, "length", mkint(C, len));
            dict_sets(C, loop, "depth", mkint(C, 1));
            dict_sets(C, loop, "depth0", mkint(C, 0));
            if (i > 0) dict_sets(C, loop, "previtem", l->u.l.v[i - 1]);
            if (i + 1 < len) dict_sets(C, loop, "nextitem", l->u.l.v[i + 1]);
            /* a fresh scope per iteration: sets inside the body do not outlive it */
            C->sc[C->nsc - 1].n = 0;
            set_var(C, "loop", loop);
            rc = assign(C, n, n->tg, n->ntg, l->u.l.v[i]);
            if (!rc) rc = exec_body(C, n->body, n->nbody, o);
        }
        pop_scope(C);
        return rc;
    }
    default: return rerr(C, n, "internal: not a statement");
    }
}

static int exec_body(jctx *C, jn **body, int nb, jbuf *o) {
    if (++C->depth > 200) {
        C->depth--;
        return nb ? rerr(C, body[0], "template nesting too deep") : 0;
    }
    for (int i = 0; i < nb; i++)
        if (exec_stmt(C, body[i], o)) {
            C->depth--;
            return 1;
        }
    C->depth--;
    return 0;
}

int jinja_render(const jinja_tmpl *t, const cJSON *vars, char **out, size_t *out_len, ft_error *e) {
    *out = NULL;
    if (out_len) *out_len = 0;
    jctx C = {.t = t, .e = e};
    push_scope(&C);
    if (vars)
        for (const cJSON *x = vars->child; x; x = x->next)
            if (x->string) set_var(&C, x->string, from_json(&C, x));
    push_scope(&C); /* the template's own top-level sets */
    jbuf o = {0};
    int rc = exec_body(&C, t->body, t->nbody, &o);
    while (C.nsc) pop_scope(&C);
    free(C.sc);
    ja_free(&C.ar);
    if (rc) {
        free(o.p);
        return e && e->code ? e->code : FT_EINPUT;
    }
    if (!o.p) o.p = ft_xstrdup("");
    *out = o.p;
    if (out_len) *out_len = o.n;
    return 0;
}
