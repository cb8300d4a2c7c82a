/* finetune render: show dataset examples as the model sees them (chat
 * template applied, tokenized, trained tokens marked), then statistics over
 * the whole file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "finetune/cli/cli.h"
#include "datasets/dataset.h"
#include "datasets/example.h"
#include "datasets/template.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/model/modelpath.h"

static void help(void) {
    printf("usage: finetune render --data FILE --template T --tokenizer DIR [options]\n\n"
           "Shows the first N examples as the model sees them: the chat template applied,\n"
           "decoded token by token, trained tokens marked (colour on a terminal, else [[...]]),\n"
           "then statistics over the whole file.\n\n"
           "  --data FILE             .jsonl, .json (array) or either .gz\n"
           "  --format F              dataset format (default: detected from the first record)\n"
           "  --template T            chat template: auto (default: the tokenizer dir's own chat_template) or %s\n"
           "  --tokenizer DIR         directory with tokenizer.json\n"
           "  -n N                    examples to show (default 3)\n"
           "  --max-length L          truncate / drop beyond L tokens (default: no limit)\n"
           "  --truncation M          keep_start (default) or keep_end\n"
           "  --overlong P            truncate (default) or drop\n"
           "  --loss W                all (every assistant turn, default) or last\n"
           "  --on-bad-record P       fail (default) or skip\n"
           "  --jinja                 print the template's HF chat_template (Jinja) and exit\n",
           tmpl_builtin_names());
}

static void show_tokens(const ft_tokenizer *tok, const int32_t *ids, const uint8_t *trained, int n, int color) {
    /* each token's text = decode(ids[0..i]) minus decode(ids[0..i-1]), so spaces
     * and multi-byte characters come out as in a whole decode */
    char *prev = ft_xstrdup("");
    int in = 0;
    for (int i = 0; i < n; i++) {
        char *cur = NULL;
        ft_error e;
        if (tok_decode(tok, ids, (size_t)i + 1, 0, &cur, &e)) cur = ft_xstrdup(prev);
        size_t pl = strlen(prev);
        const char *piece = strncmp(cur, prev, pl) == 0 ? cur + pl : "";
        int t = trained ? trained[i] : 0;
        if (t && !in) fputs(color ? "\033[1;32m" : "[[", stdout);
        if (!t && in) fputs(color ? "\033[0m" : "]]", stdout);
        in = t;
        fputs(piece, stdout);
        free(prev);
        prev = cur;
    }
    if (in) fputs(color ? "\033[0m" : "]]", stdout);
    fputc('\n', stdout);
    free(prev);
}

int cmd_render(int argc, char **argv) {
    const char *data = NULL, *format = NULL, *tname = NULL, *tokdir = NULL;
    long nshow = 3, maxlen = 0;
    int jinja = 0;
    ds_example_opts o = {0};
    ds_on_bad pol = DS_BAD_FAIL;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            help();
            return 0;
        }
        if (strcmp(a, "--jinja") == 0) {
            jinja = 1;
            continue;
        }
        static const char *const VALUED[] = {"--data", "--format", "--template", "--tokenizer", "-n", "--max-length",
                                             "--truncation", "--overlong", "--on-bad-record", "--loss", NULL};
        if (a[0] != '-') return cli_usage_error("render", "unexpected argument '%s'", a);
        if (!cli_is_one_of(a, VALUED)) return cli_usage_error("render", "unknown option '%s'", a);
        if (i + 1 >= argc) return cli_usage_error("render", "option %s needs a value", a);
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--data") == 0) data = v;
        else if (strcmp(a, "--format") == 0) format = v;
        else if (strcmp(a, "--template") == 0) tname = v;
        else if (strcmp(a, "--tokenizer") == 0) tokdir = v;
        else if (strcmp(a, "-n") == 0) rc = cli_parse_int(a, v, 0, 1000000, &nshow, &e);
        else if (strcmp(a, "--max-length") == 0) rc = cli_parse_int(a, v, 1, 1 << 30, &maxlen, &e);
        else if (strcmp(a, "--truncation") == 0) rc = ds_trunc_parse(v, &o.trunc, &e);
        else if (strcmp(a, "--overlong") == 0) rc = ds_overlong_parse(v, &o.overlong, &e);
        else if (strcmp(a, "--on-bad-record") == 0) rc = ds_parse_on_bad(v, &pol, &e);
        else if (strcmp(a, "--loss") == 0) {
            if (strcmp(v, "all") == 0) o.loss_last_only = 0;
            else if (strcmp(v, "last") == 0) o.loss_last_only = 1;
            else rc = ft_fail(&e, FT_EINPUT, "--loss %s: expected all or last", v);
        } else return cli_usage_error("render", "unknown option '%s'", a);
        if (rc) return cli_report("render", &e);
    }
    o.max_length = (int)maxlen;
    tmpl *t;
    const char *dirs[1] = {tokdir};
    if (modelpath_template(tname, dirs, tokdir ? 1 : 0, NULL, &t, &e)) return cli_report("render", &e);
    if (!t)
        return cli_usage_error("render", "--template is required: %s has no chat template of its own (auto); name one of %s",
                               tokdir ? tokdir : "no --tokenizer given, so there", tmpl_builtin_names());
    if (jinja) {
        char *j = tmpl_jinja(t);
        puts(j);
        free(j);
        tmpl_free(t);
        return 0;
    }
    if (!data || !tokdir) {
        tmpl_free(t);
        return cli_usage_error("render", "--data and --tokenizer are required");
    }
    ft_tokenizer *tok = NULL;
    ds_dataset *d = NULL;
    int rc = modelpath_tokenizer(tokdir, &tok, &e);
    if (!rc) rc = ds_open(data, format, pol, &d, &e);
    if (rc) goto out;
    int color = isatty(STDOUT_FILENO);
    int pref = ds_dataset_is_preference(d);
    ds_example_stats st = {0};
    printf("%s: format %s, template %s\n", data, ds_format_name(ds_dataset_format(d)), tmpl_name(t));
    for (long shown = 0;;) {
        int done, kept;
        if (pref) {
            ds_pref p;
            ds_pref_example x;
            if ((rc = ds_next_pref(d, &p, &done, &e)) || done) break;
            rc = ds_build_pref_example(t, &p, tok, &o, &x, &kept, &st, &e);
            ds_pref_free(&p);
            if (rc) break;
            if (kept && shown < nshow) {
                printf("\n--- example %ld (%s): prompt %d, chosen %d, rejected %d tokens\n", shown, x.where, x.n_prompt,
                       x.n_chosen, x.n_rejected);
                printf("prompt:   ");
                show_tokens(tok, x.prompt, NULL, x.n_prompt, color);
                uint8_t *ones = ft_xmalloc((size_t)(x.n_chosen > x.n_rejected ? x.n_chosen : x.n_rejected) + 1);
                memset(ones, 1, (size_t)(x.n_chosen > x.n_rejected ? x.n_chosen : x.n_rejected) + 1);
                printf("chosen:   ");
                show_tokens(tok, x.chosen, ones, x.n_chosen, color);
                printf("rejected: ");
                show_tokens(tok, x.rejected, ones, x.n_rejected, color);
                free(ones);
                shown++;
            }
            if (kept) ds_pref_example_free(&x);
        } else {
            ds_conv c;
            ds_example x;
            if ((rc = ds_next_conv(d, &c, &done, &e)) || done) break;
            rc = ds_build_example(t, &c, tok, &o, &x, &kept, &st, &e);
            ds_conv_free(&c);
            if (rc) break;
            if (kept && shown < nshow) {
                int ntr = 0;
                for (int i = 0; i < x.n; i++) ntr += x.trained[i];
                printf("\n--- example %ld (%s): %d tokens, %d trained\n", shown, x.where, x.n, ntr);
                show_tokens(tok, x.ids, x.trained, x.n, color);
                shown++;
            }
            if (kept) ds_example_free(&x);
        }
    }
    if (rc) goto out;
    const ds_read_stats *rs = ds_dataset_stats(d);
    printf("\nstatistics over the whole file:\n");
    printf("  records read:        %ld\n", rs->records);
    printf("  examples:            %ld\n", st.examples);
    printf("  tokens:              %ld\n", st.tokens);
    printf("  trained tokens:      %ld\n", st.trained_tokens);
    printf("  truncated:           %ld\n", st.truncated);
    printf("  dropped (too long):  %ld\n", st.dropped_too_long);
    printf("  dropped (no trained tokens left): %ld\n", st.dropped_no_trained);
    if (pref) printf("  dropped (prompt tokens differ between chosen/rejected): %ld\n", st.dropped_mismatch);
    printf("  skipped records:     %ld\n", rs->skipped_total);
    for (int i = 0; i < DS_SKIP_COUNT; i++)
        if (rs->skipped[i]) printf("    %-24s %ld\n", ds_skip_reason_name(i), rs->skipped[i]);
    if (rs->first_skip[0]) printf("  first skipped: %s\n", rs->first_skip);
out:
    ds_close(d);
    tok_free(tok);
    tmpl_free(t);
    return rc ? cli_report("render", &e) : 0;
}
