/* The model commands: info, score, generate (token ids or text), chat (multi-turn, templated), init. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "finetune/base/paths.h"
#include "finetune/cli/cli.h"
#include "datasets/format.h"
#include "datasets/template.h"
#include "finetune/model/memplan.h"
#include "finetune/model/model.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/model/modelpath.h"

/* Next option value or a usage error. */
#define NEED_VALUE(cmd, i, argc, argv) \
    do {                               \
        if ((i) + 1 >= (argc)) return cli_usage_error(cmd, "option %s needs a value", (argv)[i]); \
    } while (0)

/* ---------- info ---------- */

static const char INFO_HELP[] =
    "usage: finetune info MODEL_DIR [--seq-len N] [--batch N] [--lora-r R]\n"
    "\n"
    "Describe an HF checkpoint (config.json + safetensors, or a .gguf model file): architecture, sizes,\n"
    "parameter count, dtype, and the accelerator memory that full, LoRA and QLoRA\n"
    "training would need at the given sequence length and batch (defaults 2048, 1, r=16).\n"
    "The safetensors headers (model.safetensors, or every shard of\n"
    "model.safetensors.index.json) are checked against config.json as loading checks\n"
    "them: a truncated file, a missing tensor or one of the wrong shape or dtype is an\n"
    "error naming the file and tensor. A directory with config.json only is described\n"
    "with its weights marked as not checked.\n";

static void print_gib(const char *what, double bytes) { printf("  %-13s %8.2f GiB\n", what, bytes / (1u << 30)); }

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    long seq = 2048, batch = 1, r = 16;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (cli_is_help(argv[i])) {
            fputs(INFO_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--seq-len") == 0) {
            NEED_VALUE("info", i, argc, argv);
            rc = cli_parse_int("--seq-len", argv[++i], 1, 1 << 24, &seq, &e);
        } else if (strcmp(argv[i], "--batch") == 0) {
            NEED_VALUE("info", i, argc, argv);
            rc = cli_parse_int("--batch", argv[++i], 1, 1 << 16, &batch, &e);
        } else if (strcmp(argv[i], "--lora-r") == 0) {
            NEED_VALUE("info", i, argc, argv);
            rc = cli_parse_int("--lora-r", argv[++i], 1, 4096, &r, &e);
        } else if (argv[i][0] == '-') {
            return cli_usage_error("info", "unknown option %s", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cli_usage_error("info", "unexpected argument %s", argv[i]);
        }
        if (rc) return cli_report("info", &e);
    }
    if (!dir) return cli_usage_error("info", "missing MODEL_DIR");
    ft_config c;
    char *single = ft_path_join(dir, "model.safetensors"), *index = ft_path_join(dir, "model.safetensors.index.json");
    int gguf = modelpath_is_gguf(dir);
    int has_weights = gguf || ft_file_exists(single) || ft_file_exists(index), n_checked = 0, n_unused = 0;
    free(single);
    free(index);
    if (has_weights ? model_check_checkpoint(dir, &c, &n_checked, &n_unused, &e) : cfg_load(dir, &c, &e))
        return cli_report("info", &e);
    int64_t P = cfg_param_count(&c);
    printf("%s\n", dir);
    printf("  architecture  %s (%s)\n", c.architecture, c.model_type);
    printf("  layers        %d\n  hidden        %d\n  intermediate  %d\n", c.num_layers, c.hidden_size,
           c.intermediate_size);
    printf("  heads         %d (kv %d, head_dim %d)\n", c.num_heads, c.num_kv_heads, c.head_dim);
    printf("  vocab         %d\n  tied lm_head  %s\n", c.vocab_size, c.tie_word_embeddings ? "yes" : "no");
    static const char *ROPE[] = {"default", "linear", "dynamic", "llama3"};
    printf("  rope          theta %g, %s", c.rope_theta, ROPE[c.rope_type]);
    if (c.rope_type != FT_ROPE_NONE) printf(" (factor %g)", c.rope_factor);
    if (c.sliding_window)
        printf("\n  sliding window %d\n", c.sliding_window);
    else
        printf("\n  sliding window none\n");
    printf("  dtype         %s\n", c.torch_dtype[0] ? c.torch_dtype : "unspecified");
    printf("  parameters    %lld (%.3f B)\n", (long long)P, (double)P / 1e9);
    if (has_weights)
        printf("  checkpoint    weights checked: %d tensors with the shapes %s implies%s", n_checked,
               gguf ? "its GGUF metadata" : "config.json", n_unused ? "" : "\n");
    else
        printf("  checkpoint    weights not checked (no model.safetensors or model.safetensors.index.json)\n");
    if (has_weights && n_unused) printf("; %d more in the checkpoint, not read\n", n_unused);
    printf("\ntraining memory estimate at seq_len %ld, batch %ld (16-bit compute, recomputed activations):\n",
           seq, batch);
    static const char *MODES[] = {"full", "LoRA", "QLoRA"};
    for (int mode = 0; mode < 3; mode++) {
        ft_memplan p;
        memplan_estimate(&c, (ft_train_mode)mode, seq, batch, (int)r, &p);
        if (mode)
            printf("%s (r=%ld, all linear layers): %.2f GiB, %lld trainable parameters\n", MODES[mode], r,
                   p.total / (1u << 30), (long long)p.trainable_params);
        else
            printf("%s: %.2f GiB, %lld trainable parameters\n", MODES[mode], p.total / (1u << 30),
                   (long long)p.trainable_params);
        print_gib("weights", p.weights);
        print_gib("trainable", p.trainable);
        print_gib("activations", p.activations);
        print_gib("overhead", p.overhead);
    }
    return 0;
}

/* ---------- score ---------- */

static const char SCORE_HELP[] =
    "usage: finetune score MODEL_DIR --ids 1,2,3,... [--device auto|cpu|cuda]\n"
    "                      [--precision auto|fp32|bf16|fp16]\n"
    "\n"
    "Print, as one JSON array, the log-probability of each token after the first\n"
    "given the tokens before it. --precision: the compute dtype, as the recipe key\n"
    "(auto: fp32 on the CPU, bf16 on sm_80+, fp16 on sm_75).\n";

static void print_floats(const float *v, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ", %.9g" : "%.9g", v[i]);
    printf("]\n");
}

int cmd_score(int argc, char **argv) {
    const char *dir = NULL, *ids_s = NULL, *device = "auto", *precision = "auto";
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            fputs(SCORE_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--ids") == 0) {
            NEED_VALUE("score", i, argc, argv);
            ids_s = argv[++i];
        } else if (strcmp(argv[i], "--device") == 0) {
            NEED_VALUE("score", i, argc, argv);
            device = argv[++i];
        } else if (strcmp(argv[i], "--precision") == 0) {
            NEED_VALUE("score", i, argc, argv);
            precision = argv[++i];
        } else if (argv[i][0] == '-') {
            return cli_usage_error("score", "unknown option %s", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cli_usage_error("score", "unexpected argument %s", argv[i]);
        }
    }
    if (!dir) return cli_usage_error("score", "missing MODEL_DIR");
    if (!ids_s) return cli_usage_error("score", "missing --ids");
    ft_error e = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    ft_backend *b = NULL;
    ft_model *m = NULL;
    int rc = cli_parse_ids(ids_s, &ids, &n, &e);
    if (!rc) rc = ft_backend_create(device, &b, &e);
    if (!rc) rc = cli_load_model(dir, b, precision, &m, &e);
    float *lp = ft_xcalloc(n, sizeof(float));
    if (!rc) rc = model_score(m, ids, (int)n, lp, &e);
    if (!rc) print_floats(lp, n > 0 ? (int)n - 1 : 0);
    free(lp);
    free(ids);
    model_free(m);
    if (b) b->destroy(b);
    return rc ? cli_report("score", &e) : 0;
}

/* ---------- text in, text out (generate --prompt, chat) ---------- */

/* Prints generated text as it comes: each token's text is the whole decode minus what was already
 * printed, so multi-byte characters and leading spaces come out as in one decode. A decode ending in
 * U+FFFD (a character still incomplete) waits for the next token. */
typedef struct text_stream {
    const ft_tokenizer *tok;
    int32_t *ids;
    int n, cap;
    size_t printed;
    FILE *out;
} text_stream;

/* A chat template's end-of-turn marker that is one token but not EOS (chatml's <|im_end|>, llama3's
 * <|eot_id|>) stops generation too, as transformers' generation_config lists it beside EOS. */
static void stop_at_end_of_turn(const tmpl *t, const ft_tokenizer *tok, ft_sample_opts *o) {
    char marker[64];
    if (!t || !tok || !tmpl_end_of_turn(t, marker, sizeof marker)) return;
    int32_t id = tok_token_id(tok, marker);
    if (id >= 0) o->has_stop_id = 1, o->stop_id = id;
}

static void stream_token(int32_t id, void *ctx) {
    text_stream *s = ctx;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->ids = ft_xrealloc(s->ids, (size_t)s->cap * sizeof *s->ids);
    }
    s->ids[s->n++] = id;
    char *text = NULL;
    ft_error e;
    if (tok_decode(s->tok, s->ids, (size_t)s->n, 1, &text, &e)) return;
    size_t len = strlen(text);
    int partial = len >= 3 && memcmp(text + len - 3, "\xEF\xBF\xBD", 3) == 0;
    if (!partial && len > s->printed) {
        fwrite(text + s->printed, 1, len - s->printed, s->out);
        fflush(s->out);
        s->printed = len;
    }
    free(text);
}

/* After the last token: print what is still held back (an incomplete character stays U+FFFD). */
static void stream_flush(text_stream *s) {
    char *text = NULL;
    ft_error e;
    if (s->n == 0 || tok_decode(s->tok, s->ids, (size_t)s->n, 1, &text, &e)) return;
    size_t len = strlen(text);
    if (len > s->printed) fwrite(text + s->printed, 1, len - s->printed, s->out);
    s->printed = len;
    free(text);
}

/* The reply as text (special tokens dropped); malloc'd. */
static char *stream_text(const text_stream *s) {
    char *text = NULL;
    ft_error e;
    if (tok_decode(s->tok, s->ids, (size_t)s->n, 1, &text, &e)) return ft_xstrdup("");
    return text;
}

/* Token ids of a prompt: with a template, the conversation rendered with the generation prompt (as
 * apply_chat_template(add_generation_prompt=True) does); without, the raw text with the tokenizer's
 * special tokens (BOS) added, as tokenizer(text) does. */
static int encode_prompt(const tmpl *t, const ds_conv *c, const char *raw, const ft_tokenizer *tok, int32_t **ids,
                         size_t *n, ft_error *e) {
    if (!t) return tok_encode(tok, raw, strlen(raw), 1, ids, n, e);
    tmpl_tokens tt;
    int rc = tmpl_encode(t, c, tok, 1, &tt, e);
    if (rc) return rc;
    *ids = tt.ids;
    *n = tt.n;
    tt.ids = NULL;
    tmpl_tokens_free(&tt);
    return FT_OK;
}

/* Shared options of generate and chat. */
typedef struct gen_args {
    const char *dir, *device, *precision, *tokenizer, *template_name;
    long max_new, seed;
    double temp, top_p;
    int greedy, ignore_eos;
} gen_args;

/* Parse one sampling/model option at argv[*i]; 1 = consumed, 0 = not ours, < 0 = error (already reported). */
static int parse_gen_option(const char *cmd, gen_args *a, int argc, char **argv, int *i, ft_error *e) {
    const char *o = argv[*i];
    int rc = 0;
    static const char *VALUED[] = {"--max-new", "--seed", "--temperature", "--top-p", "--device", "--precision",
                                   "--tokenizer", "--template"};
    for (size_t k = 0; k < sizeof VALUED / sizeof *VALUED; k++)
        if (strcmp(o, VALUED[k]) == 0 && *i + 1 >= argc) return -cli_usage_error(cmd, "option %s needs a value", o);
    if (strcmp(o, "--max-new") == 0) {
        rc = cli_parse_int(o, argv[++*i], 0, 1 << 20, &a->max_new, e);
    } else if (strcmp(o, "--seed") == 0) {
        rc = cli_parse_int(o, argv[++*i], 0, 0x7fffffffL, &a->seed, e);
    } else if (strcmp(o, "--temperature") == 0) {
        rc = cli_parse_float(o, argv[++*i], &a->temp, e);
        if (!rc && !(a->temp > 0)) rc = ft_fail(e, FT_EINPUT, "--temperature must be > 0");
    } else if (strcmp(o, "--top-p") == 0) {
        rc = cli_parse_float(o, argv[++*i], &a->top_p, e);
        if (!rc && !(a->top_p > 0 && a->top_p <= 1)) rc = ft_fail(e, FT_EINPUT, "--top-p must be in (0, 1]");
    } else if (strcmp(o, "--device") == 0) {
        a->device = argv[++*i];
    } else if (strcmp(o, "--precision") == 0) {
        a->precision = argv[++*i];
    } else if (strcmp(o, "--tokenizer") == 0) {
        a->tokenizer = argv[++*i];
    } else if (strcmp(o, "--template") == 0) {
        a->template_name = argv[++*i];
    } else if (strcmp(o, "--greedy") == 0) {
        a->greedy = 1;
    } else if (strcmp(o, "--ignore-eos") == 0) {
        a->ignore_eos = 1;
    } else {
        return 0;
    }
    return rc ? -cli_report(cmd, e) : 1;
}

/* ---------- generate ---------- */

static const char GENERATE_HELP[] =
    "usage: finetune generate MODEL_DIR (--prompt-ids 1,2,3 | --prompt TEXT [--template auto|none|T]\n"
    "                         [--tokenizer DIR]) [--max-new N] [--greedy] [--temperature T]\n"
    "                         [--top-p P] [--seed S] [--ignore-eos] [--device auto|cpu|cuda]\n"
    "                         [--precision auto|fp32|bf16|fp16]\n"
    "\n"
    "Generate up to N new tokens (default 32) after the prompt with a KV cache, computing\n"
    "in --precision (as the recipe key; auto: fp32 on the CPU, bf16 on sm_80+, fp16 on sm_75).\n"
    "With --prompt-ids, print them as one JSON array of ids. With --prompt, the text\n"
    "is encoded with the tokenizer (default: MODEL_DIR's tokenizer.json, or a .gguf's own); with\n"
    "a chat template it is sent as one user turn followed by the template's generation\n"
    "prompt: --template auto (the default) takes the tokenizer directory's own\n"
    "chat_template (tokenizer_config.json or chat_template.jinja; a .gguf file's\n"
    "tokenizer.chat_template), a name (e.g. danube)\n"
    "a built-in; with none found, or --template none, it is raw text with BOS; the\n"
    "answer is printed as text while it is generated. Sampling uses temperature\n"
    "(default 1.0) and top-p (default 1.0) unless --greedy. Generation stops after\n"
    "the EOS token of config.json (included in the ids), or after the template's own\n"
    "end-of-turn token when it has one (chatml <|im_end|>, llama3 <|eot_id|>), unless\n"
    "--ignore-eos.\n";

int cmd_generate(int argc, char **argv) {
    gen_args a = {.device = "auto", .precision = "auto", .max_new = 32, .temp = 1.0, .top_p = 1.0};
    const char *ids_s = NULL, *prompt = NULL;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        int k;
        if (cli_is_help(argv[i])) {
            fputs(GENERATE_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--prompt-ids") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            ids_s = argv[++i];
        } else if (strcmp(argv[i], "--prompt") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            prompt = argv[++i];
        } else if ((k = parse_gen_option("generate", &a, argc, argv, &i, &e)) != 0) {
            if (k < 0) return -k;
        } else if (argv[i][0] == '-') {
            return cli_usage_error("generate", "unknown option %s", argv[i]);
        } else if (!a.dir) {
            a.dir = argv[i];
        } else {
            return cli_usage_error("generate", "unexpected argument %s", argv[i]);
        }
    }
    if (!a.dir) return cli_usage_error("generate", "missing MODEL_DIR");
    if (!ids_s && !prompt) return cli_usage_error("generate", "missing --prompt-ids or --prompt");
    if (ids_s && prompt) return cli_usage_error("generate", "give either --prompt-ids or --prompt, not both");
    if (ids_s && (a.template_name || a.tokenizer))
        return cli_usage_error("generate", "--template and --tokenizer go with --prompt, not --prompt-ids");
    int32_t *ids = NULL;
    size_t n = 0;
    ft_backend *b = NULL;
    ft_model *m = NULL;
    ft_tokenizer *tok = NULL;
    tmpl *t = NULL;
    int rc = 0;
    if (ids_s) {
        rc = cli_parse_ids(ids_s, &ids, &n, &e);
    } else {
        /* auto (the default): the tokenizer dir's own chat_template, else the raw text */
        const char *dirs[1] = {a.tokenizer ? a.tokenizer : a.dir};
        rc = modelpath_template(a.template_name, dirs, 1, NULL, &t, &e);
        if (!rc) rc = modelpath_tokenizer(a.tokenizer ? a.tokenizer : a.dir, &tok, &e);
        ds_conv c = {0};
        if (t) ds_conv_add(&c, DS_USER, prompt);
        if (!rc && !prompt[0] && !t) rc = ft_fail(&e, FT_EINPUT, "--prompt is empty");
        if (!rc) rc = encode_prompt(t, &c, prompt, tok, &ids, &n, &e);
        ds_conv_free(&c);
    }
    if (!rc) rc = ft_backend_create(a.device, &b, &e);
    if (!rc) rc = cli_load_model(a.dir, b, a.precision, &m, &e);
    if (!rc && tok && tok_vocab_size(tok) > m->cfg.vocab_size)
        rc = ft_fail(&e, FT_EINPUT, "the tokenizer has %d tokens but %s/config.json says vocab_size %d: wrong --tokenizer?",
                     tok_vocab_size(tok), a.dir, m->cfg.vocab_size);
    int32_t *out = ft_xmalloc((size_t)(a.max_new > 0 ? a.max_new : 1) * sizeof(int32_t));
    int n_out = 0;
    ft_sample_opts o = {a.greedy, (float)a.temp, (float)a.top_p, (uint64_t)a.seed, !a.ignore_eos, 0, -1};
    stop_at_end_of_turn(t, tok, &o);
    text_stream s = {.tok = tok, .out = stdout};
    if (!rc) rc = model_generate(m, ids, (int)n, (int)a.max_new, &o, out, &n_out, tok ? stream_token : NULL, &s, &e);
    if (!rc && !tok) {
        putchar('[');
        for (int i = 0; i < n_out; i++) printf(i ? ", %d" : "%d", out[i]);
        printf("]\n");
    } else if (!rc) {
        stream_flush(&s);
        putchar('\n');
    }
    free(s.ids);
    free(out);
    free(ids);
    model_free(m);
    tok_free(tok);
    tmpl_free(t);
    if (b) b->destroy(b);
    return rc ? cli_report("generate", &e) : 0;
}

/* ---------- chat ---------- */

static const char CHAT_HELP[] =
    "usage: finetune chat MODEL_DIR [--template auto|T] [--tokenizer DIR] [--system TEXT]\n"
    "                     [--max-new N] [--temperature T] [--top-p P] [--greedy]\n"
    "                     [--seed S] [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16]\n"
    "\n"
    "Talk to a model in the terminal. Each line read from standard input is a user\n"
    "turn; the whole conversation so far is rendered with the chat template (auto, the\n"
    "default: the tokenizer directory's own chat_template; or a built-in name such as\n"
    "danube: the one the model was trained with) and the answer is printed as it is\n"
    "generated (up to N tokens, default 256; it ends at the EOS token, or at the\n"
    "template's own end-of-turn token: chatml <|im_end|>, llama3 <|eot_id|>, ...). Type /exit or\n"
    "end the input (Ctrl-D) to leave, /reset to forget the conversation. When the input\n"
    "is not a terminal it works line by line the same way, without the prompt.\n"
    "Defaults: temperature 0.7, top-p 0.9; the tokenizer is MODEL_DIR's.\n";

/* One line from stdin without its newline (malloc'd), NULL at EOF. */
static char *read_line(FILE *in) {
    size_t cap = 256, n = 0;
    char *s = ft_xmalloc(cap);
    int ch;
    while ((ch = fgetc(in)) != EOF && ch != '\n') {
        if (n + 1 == cap) s = ft_xrealloc(s, cap *= 2);
        s[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) {
        free(s);
        return NULL;
    }
    if (n && s[n - 1] == '\r') n--;
    s[n] = 0;
    return s;
}

int cmd_chat(int argc, char **argv) {
    gen_args a = {.device = "auto", .precision = "auto", .max_new = 256, .temp = 0.7, .top_p = 0.9};
    const char *system = NULL;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        int k;
        if (cli_is_help(argv[i])) {
            fputs(CHAT_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--system") == 0) {
            NEED_VALUE("chat", i, argc, argv);
            system = argv[++i];
        } else if ((k = parse_gen_option("chat", &a, argc, argv, &i, &e)) != 0) {
            if (k < 0) return -k;
        } else if (argv[i][0] == '-') {
            return cli_usage_error("chat", "unknown option %s", argv[i]);
        } else if (!a.dir) {
            a.dir = argv[i];
        } else {
            return cli_usage_error("chat", "unexpected argument %s", argv[i]);
        }
    }
    if (!a.dir) return cli_usage_error("chat", "missing MODEL_DIR");
    ft_backend *b = NULL;
    ft_model *m = NULL;
    ft_tokenizer *tok = NULL;
    tmpl *t = NULL;
    const char *dirs[1] = {a.tokenizer ? a.tokenizer : a.dir};
    int rc = modelpath_template(a.template_name, dirs, 1, NULL, &t, &e);
    if (rc) return cli_report("chat", &e);
    if (!t)
        return cli_usage_error("chat",
                               "missing --template: %s has no chat template of its own (tokenizer_config.json "
                               "chat_template or chat_template.jinja); name the one the model was trained with: %s",
                               dirs[0], tmpl_builtin_names());
    if (!rc) rc = modelpath_tokenizer(a.tokenizer ? a.tokenizer : a.dir, &tok, &e);
    if (!rc) rc = ft_backend_create(a.device, &b, &e);
    if (!rc) rc = cli_load_model(a.dir, b, a.precision, &m, &e);
    if (!rc && tok_vocab_size(tok) > m->cfg.vocab_size)
        rc = ft_fail(&e, FT_EINPUT, "the tokenizer has %d tokens but %s/config.json says vocab_size %d: wrong --tokenizer?",
                     tok_vocab_size(tok), a.dir, m->cfg.vocab_size);
    if (rc) goto out;
    int tty = isatty(STDIN_FILENO);
    if (tty)
        fprintf(stderr, "finetune chat: %s, template %s. /exit or Ctrl-D to leave, /reset to start over.\n", a.dir,
                tmpl_name(t));
    ds_conv c = {0};
    if (system && system[0]) ds_conv_add(&c, DS_SYSTEM, system);
    int base = c.n; /* messages kept by /reset */
    int32_t *out = ft_xmalloc((size_t)(a.max_new > 0 ? a.max_new : 1) * sizeof(int32_t));
    for (int turn = 0; !rc; turn++) {
        if (tty) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        char *line = read_line(stdin);
        if (!line) break;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) {
            free(line);
            break;
        }
        if (strcmp(line, "/reset") == 0) {
            while (c.n > base) free(c.msgs[--c.n].content);
            free(line);
            continue;
        }
        if (!line[0]) { /* an empty turn is not a message */
            free(line);
            continue;
        }
        ds_conv_add(&c, DS_USER, line);
        free(line);
        int32_t *ids = NULL;
        size_t n = 0;
        rc = encode_prompt(t, &c, NULL, tok, &ids, &n, &e);
        if (!rc && (int64_t)n + a.max_new > m->cfg.max_position_embeddings)
            fprintf(stderr, "finetune chat: warning: the conversation (%zu tokens) is near the model's context (%d)\n",
                    n, m->cfg.max_position_embeddings);
        text_stream s = {.tok = tok, .out = stdout};
        int n_out = 0;
        /* a different seed per turn, still reproducible with --seed */
        ft_sample_opts o = {a.greedy, (float)a.temp, (float)a.top_p, (uint64_t)a.seed + (uint64_t)turn, !a.ignore_eos,
                            0, -1};
        stop_at_end_of_turn(t, tok, &o);
        if (!rc) rc = model_generate(m, ids, (int)n, (int)a.max_new, &o, out, &n_out, stream_token, &s, &e);
        free(ids);
        if (!rc) {
            char *reply = stream_text(&s);
            stream_flush(&s);
            fputc('\n', stdout);
            fflush(stdout);
            /* the history keeps the reply as text: the next turn re-renders it with the template */
            ds_conv_add(&c, DS_ASSISTANT, reply[0] ? reply : " ");
            free(reply);
        }
        free(s.ids);
    }
    free(out);
    ds_conv_free(&c);
out:
    model_free(m);
    tok_free(tok);
    tmpl_free(t);
    if (b) b->destroy(b);
    return rc ? cli_report("chat", &e) : 0;
}

/* ---------- init ---------- */

static const char INIT_HELP[] =
    "usage: finetune init --config FILE --out DIR [--seed S] [--std X] [--dtype f32|bf16|f16]\n"
    "\n"
    "Write a randomly initialised HF checkpoint (config.json + model.safetensors)\n"
    "for the given config.json: linear and embedding weights ~ N(0, std) (default\n"
    "0.02, transformers' initializer_range), norm weights 1, biases 0.\n";

int cmd_init(int argc, char **argv) {
    const char *cfg_path = NULL, *out = NULL, *dtype_s = "f32";
    long seed = 0;
    double std = 0.02;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (cli_is_help(argv[i])) {
            fputs(INIT_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0) {
            NEED_VALUE("init", i, argc, argv);
            cfg_path = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0) {
            NEED_VALUE("init", i, argc, argv);
            out = argv[++i];
        } else if (strcmp(argv[i], "--seed") == 0) {
            NEED_VALUE("init", i, argc, argv);
            rc = cli_parse_int("--seed", argv[++i], 0, 0x7fffffffL, &seed, &e);
        } else if (strcmp(argv[i], "--std") == 0) {
            NEED_VALUE("init", i, argc, argv);
            rc = cli_parse_float("--std", argv[++i], &std, &e);
            if (!rc && !(std > 0)) rc = ft_fail(&e, FT_EINPUT, "--std must be > 0");
        } else if (strcmp(argv[i], "--dtype") == 0) {
            NEED_VALUE("init", i, argc, argv);
            dtype_s = argv[++i];
        } else {
            return cli_usage_error("init", "unknown option %s", argv[i]);
        }
        if (rc) return cli_report("init", &e);
    }
    if (!cfg_path) return cli_usage_error("init", "missing --config");
    if (!out) return cli_usage_error("init", "missing --out");
    const ft_path_input in = {cfg_path, "--config file"};
    if (ft_path_guard_output(out, "--out", &in, 1, &e)) return cli_report("init", &e);
    ft_dtype dt;
    if (strcmp(dtype_s, "f32") == 0)
        dt = FT_F32;
    else if (strcmp(dtype_s, "bf16") == 0)
        dt = FT_BF16;
    else if (strcmp(dtype_s, "f16") == 0)
        dt = FT_F16;
    else
        return cli_usage_error("init", "--dtype %s: expected f32, bf16 or f16", dtype_s);
    char *text = NULL;
    size_t len = 0;
    ft_config c;
    int rc = ft_read_file(cfg_path, &text, &len, &e);
    if (!rc) rc = cfg_parse(text, len, cfg_path, &c, &e);
    free(text);
    ft_backend *b = ft_backend_cpu_create();
    ft_model *m = NULL;
    if (!rc) rc = model_init_random(&c, b, (uint64_t)seed, (float)std, &m, &e);
    if (!rc) rc = model_save(m, out, dt, &e);
    model_free(m);
    b->destroy(b);
    if (rc) return cli_report("init", &e);
    fprintf(stderr, "finetune init: wrote %s (%lld parameters)\n", out, (long long)cfg_param_count(&c));
    return 0;
}
