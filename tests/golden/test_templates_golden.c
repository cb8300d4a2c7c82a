/* Chat templates against transformers: rendered text, token ids (HF
 * tokenizer(text, add_special_tokens=False)) and the loss mask recorded by
 * tests/reference/make_template_fixtures.py, and our Jinja string equal to
 * the one that script checked in transformers. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets/template.h"
#include "test.h"

int main(void) {
    char p[512], tp[512];
    char *txt;
    size_t len;
    ft_error e = {0};
    if (ft_read_file(t_src("tests/fixtures/templates/templates.json", p, sizeof p), &txt, &len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cJSON *fx = cJSON_Parse(txt);
    free(txt);
    /* end-of-turn markers generation stops at besides EOS: only where the turn does not end with {eos} */
    const char *eot[][2] = {{"danube", ""},  {"chatml", "<|im_end|>"}, {"llama2", ""}, {"llama3", "<|eot_id|>"},
                            {"mistral", ""}, {"zephyr", ""},           {"alpaca", ""}};
    for (size_t i = 0; i < sizeof eot / sizeof eot[0]; i++) {
        tmpl *t = NULL;
        char m[64] = "";
        CHECK_MSG(tmpl_builtin(eot[i][0], &t, &e) == 0, "%s", e.msg);
        int has = t && tmpl_end_of_turn(t, m, sizeof m);
        CHECK_MSG(has == (eot[i][1][0] != 0) && strcmp(has ? m : "", eot[i][1]) == 0,
                  "%s: end of turn '%s', want '%s'", eot[i][0], has ? m : "", eot[i][1]);
        tmpl_free(t);
    }
    cJSON *entry;
    cJSON_ArrayForEach(entry, fx) {
        const char *tname = cJSON_GetObjectItem(entry, "template")->valuestring;
        char dir[256];
        snprintf(dir, sizeof dir, "tokenizers/%s", cJSON_GetObjectItem(entry, "tokenizer")->valuestring);
        ft_tokenizer *tok;
        tmpl *t;
        if (tok_load(t_asset(dir, tp, sizeof tp), &tok, &e) || tmpl_builtin(tname, &t, &e)) {
            CHECK_MSG(0, "%s: %s", entry->string, e.msg);
            continue;
        }
        char *j = tmpl_jinja(t);
        CHECK_MSG(strcmp(j, cJSON_GetObjectItem(entry, "jinja")->valuestring) == 0, "%s: Jinja differs", entry->string);
        free(j);
        int ci = 0;
        cJSON *cs;
        cJSON_ArrayForEach(cs, cJSON_GetObjectItem(entry, "cases")) {
            ds_conv c = {0};
            snprintf(c.where, sizeof c.where, "%s case %d", entry->string, ci);
            cJSON *m;
            cJSON_ArrayForEach(m, cJSON_GetObjectItem(cs, "messages")) {
                const char *r = cJSON_GetObjectItem(m, "role")->valuestring;
                ds_conv_add(&c, strcmp(r, "system") == 0 ? DS_SYSTEM : strcmp(r, "user") == 0 ? DS_USER : DS_ASSISTANT,
                            cJSON_GetObjectItem(m, "content")->valuestring);
            }
            int gen = cJSON_IsTrue(cJSON_GetObjectItem(cs, "generation_prompt"));
            tmpl_text r;
            tmpl_tokens tk;
            CHECK(tmpl_render(t, &c, tok_token_str(tok, tok_bos_id(tok)), tok_token_str(tok, tok_eos_id(tok)), gen, &r, &e) == 0);
            const char *want = cJSON_GetObjectItem(cs, "text")->valuestring;
            CHECK_MSG(strcmp(r.text, want) == 0, "%s: text\n got: %s\nwant: %s", c.where, r.text, want);
            int rc = tmpl_tokenize(&r, tok, &tk, &e);
            CHECK_MSG(rc == 0, "%s: %s", c.where, e.msg);
            cJSON *ids = cJSON_GetObjectItem(cs, "ids"), *mask = cJSON_GetObjectItem(cs, "trained");
            if (!rc) {
                CHECK_MSG((int)tk.n == cJSON_GetArraySize(ids), "%s: %zu ids, want %d", c.where, tk.n, cJSON_GetArraySize(ids));
                int bad_id = -1, bad_mask = -1;
                for (int i = 0; i < (int)tk.n && i < cJSON_GetArraySize(ids); i++) {
                    if (bad_id < 0 && tk.ids[i] != cJSON_GetArrayItem(ids, i)->valueint) bad_id = i;
                    if (bad_mask < 0 && (tk.turn[i] >= 0) != cJSON_GetArrayItem(mask, i)->valueint) bad_mask = i;
                }
                CHECK_MSG(bad_id < 0, "%s: id %d differs", c.where, bad_id);
                CHECK_MSG(bad_mask < 0, "%s: mask differs at token %d", c.where, bad_mask);
                tmpl_tokens_free(&tk);
            }
            tmpl_text_free(&r);
            ds_conv_free(&c);
            ci++;
        }
        tmpl_free(t);
        tok_free(tok);
    }
    cJSON_Delete(fx);
    TEST_DONE();
}
