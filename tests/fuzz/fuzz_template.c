/* libFuzzer: chat templates. Byte 0 picks a built-in template (danube, chatml, llama2, llama3, mistral,
 * zephyr, alpaca) or a custom one; byte 1 holds flags (bit 0: add the generation prompt; bit 1: the first
 * message is a system turn; bit 2: the custom template starts with {bos}). The rest is split at 0x1E bytes:
 * for a custom template the first seven pieces are its system prefix/suffix, user prefix/suffix, assistant
 * prefix/suffix and generation prompt (where "{bos}" / "{eos}" may appear), then come the messages'
 * contents, roles alternating user, assistant, ... Every conversation is rendered (segments must tile the
 * text, trained segments belong to assistant turns) and the template's HF chat_template (Jinja) export
 * (its string literals all closed) is rendered by datasets/jinja, which must give the same text, or fail
 * where tmpl_render fails; a conversation the format layer could have produced (checked, valid
 * UTF-8) is also tokenized with a SentencePiece (llama-2) and a byte-level (smollm) tokenizer, where the
 * token/byte alignment that derives the loss mask must never fail. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "datasets/jinja.h"
#include "datasets/template.h"

static const char *NAMES[] = {"danube", "chatml", "llama2", "llama3", "mistral", "zephyr", "alpaca"};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

static ft_tokenizer *toks[2];
static int ntoks = -1;

static void load_tokenizers(void) {
    ntoks = 0;
    /* this file is tests/fuzz/fuzz_template.c in the source tree: the committed assets are beside it */
    char root[1024];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *cut = strstr(root, "tests/fuzz/");
    if (!cut) return;
    *cut = 0;
    const char *names[] = {"llama-2", "smollm-135m"};
    for (int i = 0; i < 2; i++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%stests/fixtures/assets/tokenizers/%s", root, names[i]);
        ft_error e;
        if (tok_load(dir, &toks[ntoks], &e) == 0) ntoks++;
        else fprintf(stderr, "fuzz_template: %s\n", e.msg);
    }
}

/* Jinja from tmpl_jinja: every '...' literal closed, no raw newline inside one. */
static void check_jinja(const char *j) {
    if (!j) abort();
    int in = 0;
    for (const char *p = j; *p; p++) {
        if (!in) {
            if (*p == '\'') in = 1;
        } else if (*p == '\\') {
            if (!p[1]) abort();
            p++;
        } else if (*p == '\'') {
            in = 0;
        } else if (*p == '\n' || *p == '\r') {
            abort();
        }
    }
    if (in) abort();
}

/* The exported chat_template rendered by datasets/jinja, as transformers' apply_chat_template would: it must
 * fail where tmpl_render fails and otherwise give exactly the text we train on. */
static void check_jinja_render(const tmpl *t, const ds_conv *c, int gen, int render_rc, const tmpl_text *r) {
    char *src = tmpl_jinja(t);
    ft_error e;
    jinja_tmpl *jt = NULL;
    if (jinja_parse(src, strlen(src), "exported chat_template", &jt, &e) != 0) {
        fprintf(stderr, "fuzz_template: %s\n%s\n", e.msg, src);
        abort(); /* our own export does not parse */
    }
    cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
    for (int i = 0; i < c->n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", ds_role_name(c->msgs[i].role));
        cJSON_AddStringToObject(m, "content", c->msgs[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON_AddBoolToObject(vars, "add_generation_prompt", gen);
    cJSON_AddStringToObject(vars, "bos_token", "<s>");
    cJSON_AddStringToObject(vars, "eos_token", "</s>");
    char *out = NULL;
    size_t len = 0;
    int rc = jinja_render(jt, vars, &out, &len, &e);
    if ((rc == 0) != (render_rc == 0) || (rc == 0 && (len != r->len || memcmp(out, r->text, len) != 0))) {
        fprintf(stderr, "fuzz_template: the exported Jinja %s\n---- jinja:\n%s\n---- ours:\n%s\n",
                rc ? e.msg : "renders other text", rc ? "" : out, render_rc ? "(error)" : r->text);
        abort();
    }
    free(out);
    cJSON_Delete(vars);
    jinja_free(jt);
    free(src);
}

static void check_text(const tmpl_text *r) {
    size_t at = 0;
    for (int s = 0; s < r->n_segs; s++) {
        if (r->segs[s].start != at || r->segs[s].len == 0) abort();
        if (r->segs[s].turn < -1 || r->segs[s].turn >= r->n_turns) abort();
        at += r->segs[s].len;
    }
    if (at != r->len || strlen(r->text) != r->len) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (ntoks < 0) load_tokenizers();
    if (size < 2) return 0;
    int which = data[0] % (N_NAMES + 1), flags = data[1];
    /* pieces: NUL-terminated copies of the runs between 0x1E bytes */
    char *buf = ft_xmalloc(size);
    memcpy(buf, data + 2, size - 2);
    buf[size - 2] = 0;
    char *piece[64];
    int np = 0;
    for (char *p = buf, *end = buf + size - 2; np < 64;) {
        char *q = memchr(p, 0x1E, (size_t)(end - p));
        if (!q) q = end;
        *q = 0;
        piece[np++] = p;
        if (q == end) break;
        p = q + 1;
    }
    ft_error e;
    tmpl *t = NULL;
    int first = 0;
    if (which < (int)N_NAMES) {
        if (tmpl_builtin(NAMES[which], &t, &e)) abort();
    } else {
        const char *f[7];
        for (int i = 0; i < 7; i++) f[i] = i < np ? piece[i] : "";
        if (tmpl_custom_simple(f[0], f[1], f[2], f[3], f[4], f[5], f[6], flags & 4, &t, &e)) abort();
        first = np < 7 ? np : 7;
    }
    char eot[64];
    (void)tmpl_end_of_turn(t, eot, sizeof eot);
    char *jinja = tmpl_jinja(t);
    check_jinja(jinja);
    free(jinja);

    ds_conv c = {0};
    snprintf(c.where, sizeof c.where, "fuzz:1");
    int valid_utf8 = 1;
    for (int i = 0; i < first; i++) valid_utf8 &= ds_utf8_valid(piece[i], strlen(piece[i]), NULL);
    for (int i = first, k = 0; i < np; i++, k++) {
        ds_role role = (flags & 2) ? (k == 0 ? DS_SYSTEM : (k % 2 ? DS_USER : DS_ASSISTANT))
                                   : (k % 2 ? DS_ASSISTANT : DS_USER);
        if (!ds_utf8_valid(piece[i], strlen(piece[i]), NULL)) valid_utf8 = 0;
        ds_conv_add(&c, role, piece[i]);
    }
    int gen = flags & 1, reason;
    tmpl_text r;
    int render_rc = tmpl_render(t, &c, "<s>", "</s>", gen, &r, &e);
    if (render_rc == 0) check_text(&r);
    if (valid_utf8) check_jinja_render(t, &c, gen, render_rc, &r); /* as the format layer guarantees */
    if (render_rc == 0) tmpl_text_free(&r);
    int checked = c.n > 0 && ds_conv_check(&c, gen ? DS_USER : DS_ASSISTANT, &reason, &e) == 0;
    if (checked && valid_utf8) {
        for (int k = 0; k < ntoks; k++) {
            tmpl_tokens tk;
            int rc = tmpl_encode(t, &c, toks[k], gen, &tk, &e);
            if (rc == FT_EINTERNAL) {
                fprintf(stderr, "fuzz_template: %s\n", e.msg);
                abort(); /* the mask could not be derived: such a record would stop a training run */
            }
            if (rc == 0) {
                int n_turns = 0;
                for (int m = 0; m < c.n; m++) n_turns += c.msgs[m].role == DS_ASSISTANT;
                for (size_t i = 0; i < tk.n; i++)
                    if (tk.turn[i] < -1 || tk.turn[i] >= n_turns) abort();
                tmpl_tokens_free(&tk);
            }
        }
    }
    ds_conv_free(&c);
    tmpl_free(t);
    free(buf);
    return 0;
}
