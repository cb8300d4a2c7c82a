/* The model commands: info, score, generate (token ids), init. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "memplan.h"
#include "model.h"

/* Next option value or a usage error. */
#define NEED_VALUE(cmd, i, argc, argv) \
    do {                               \
        if ((i) + 1 >= (argc)) return cli_usage_error(cmd, "option %s needs a value", (argv)[i]); \
    } while (0)

/* ---------- info ---------- */

static const char INFO_HELP[] =
    "usage: finetune info MODEL_DIR [--seq-len N] [--batch N] [--lora-r R]\n"
    "\n"
    "Describe an HF checkpoint (config.json + safetensors): architecture, sizes,\n"
    "parameter count, dtype, and the accelerator memory that full, LoRA and QLoRA\n"
    "training would need at the given sequence length and batch (defaults 2048, 1, r=16).\n";

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
    if (cfg_load(dir, &c, &e)) return cli_report("info", &e);
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
    "\n"
    "Print, as one JSON array, the log-probability of each token after the first\n"
    "given the tokens before it.\n";

static void print_floats(const float *v, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ", %.9g" : "%.9g", v[i]);
    printf("]\n");
}

int cmd_score(int argc, char **argv) {
    const char *dir = NULL, *ids_s = NULL, *device = "auto";
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
    if (!rc) rc = model_load(dir, b, &m, &e);
    float *lp = ft_xcalloc(n, sizeof(float));
    if (!rc) rc = model_score(m, ids, (int)n, lp, &e);
    if (!rc) print_floats(lp, n > 0 ? (int)n - 1 : 0);
    free(lp);
    free(ids);
    model_free(m);
    if (b) b->destroy(b);
    return rc ? cli_report("score", &e) : 0;
}

/* ---------- generate ---------- */

static const char GENERATE_HELP[] =
    "usage: finetune generate MODEL_DIR --prompt-ids 1,2,3 [--max-new N] [--greedy]\n"
    "                         [--temperature T] [--top-p P] [--seed S] [--ignore-eos]\n"
    "                         [--device auto|cpu|cuda]\n"
    "\n"
    "Generate up to N new tokens (default 32) after the prompt with a KV cache and\n"
    "print them as one JSON array. Sampling uses temperature (default 1.0) and\n"
    "top-p (default 1.0) unless --greedy. Generation stops after the EOS token of\n"
    "config.json (included in the output) unless --ignore-eos.\n";

int cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *ids_s = NULL, *device = "auto";
    long max_new = 32, seed = 0;
    double temp = 1.0, top_p = 1.0;
    int greedy = 0, ignore_eos = 0;
    ft_error e = {0};
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (cli_is_help(argv[i])) {
            fputs(GENERATE_HELP, stdout);
            return 0;
        } else if (strcmp(argv[i], "--prompt-ids") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            ids_s = argv[++i];
        } else if (strcmp(argv[i], "--max-new") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            rc = cli_parse_int("--max-new", argv[++i], 0, 1 << 20, &max_new, &e);
        } else if (strcmp(argv[i], "--seed") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            rc = cli_parse_int("--seed", argv[++i], 0, 0x7fffffffL, &seed, &e);
        } else if (strcmp(argv[i], "--temperature") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            rc = cli_parse_float("--temperature", argv[++i], &temp, &e);
            if (!rc && !(temp > 0)) rc = ft_fail(&e, FT_EINPUT, "--temperature must be > 0");
        } else if (strcmp(argv[i], "--top-p") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            rc = cli_parse_float("--top-p", argv[++i], &top_p, &e);
            if (!rc && !(top_p > 0 && top_p <= 1)) rc = ft_fail(&e, FT_EINPUT, "--top-p must be in (0, 1]");
        } else if (strcmp(argv[i], "--greedy") == 0) {
            greedy = 1;
        } else if (strcmp(argv[i], "--ignore-eos") == 0) {
            ignore_eos = 1;
        } else if (strcmp(argv[i], "--device") == 0) {
            NEED_VALUE("generate", i, argc, argv);
            device = argv[++i];
        } else if (argv[i][0] == '-') {
            return cli_usage_error("generate", "unknown option %s", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cli_usage_error("generate", "unexpected argument %s", argv[i]);
        }
        if (rc) return cli_report("generate", &e);
    }
    if (!dir) return cli_usage_error("generate", "missing MODEL_DIR");
    if (!ids_s) return cli_usage_error("generate", "missing --prompt-ids");
    int32_t *ids = NULL;
    size_t n = 0;
    ft_backend *b = NULL;
    ft_model *m = NULL;
    int rc = cli_parse_ids(ids_s, &ids, &n, &e);
    if (!rc) rc = ft_backend_create(device, &b, &e);
    if (!rc) rc = model_load(dir, b, &m, &e);
    int32_t *out = ft_xmalloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int32_t));
    int n_out = 0;
    ft_sample_opts o = {greedy, (float)temp, (float)top_p, (uint64_t)seed, !ignore_eos};
    if (!rc) rc = model_generate(m, ids, (int)n, (int)max_new, &o, out, &n_out, NULL, NULL, &e);
    if (!rc) {
        putchar('[');
        for (int i = 0; i < n_out; i++) printf(i ? ", %d" : "%d", out[i]);
        printf("]\n");
    }
    free(out);
    free(ids);
    model_free(m);
    if (b) b->destroy(b);
    return rc ? cli_report("generate", &e) : 0;
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
