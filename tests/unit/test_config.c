/* config.json: parse configs against what transformers made of them
 * (tests/fixtures/ckpt/configs/expected.txt from tests/reference/make_ckpt_fixtures.py),
 * error cases, and write -> parse round trips. */
#include "finetune/model/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static int parse_str(const char *json, ft_config *c, ft_error *e) {
    return cfg_parse(json, strlen(json), "t.json", c, e);
}

/* One expected.txt row against our parse of configs/<name>.json. */
static void check_expected_line(const char *line) {
    char name[128];
    long long nparams;
    int head_dim, kv, maxpos, sw, rt, orig, tie, bias, bos, eos, pad;
    double theta, factor, lo, hi;
    int got = sscanf(line, "%127s %lld %d %d %d %d %lf %d %lf %lf %lf %d %d %d %d %d %d", name, &nparams, &head_dim,
                     &kv, &maxpos, &sw, &theta, &rt, &factor, &lo, &hi, &orig, &tie, &bias, &bos, &eos, &pad);
    CHECK_MSG(got == 17, "bad expected.txt line: %s", line);
    if (got != 17) return;
    char rel[256], path[512];
    snprintf(rel, sizeof rel, "tests/fixtures/ckpt/configs/%s.json", name);
    t_src(rel, path, sizeof path);
    char *text = NULL;
    size_t len = 0;
    ft_error e = {0};
    CHECK_MSG(ft_read_file(path, &text, &len, &e) == 0, "%s", e.msg);
    if (!text) return;
    ft_config c;
    int rc = cfg_parse(text, len, path, &c, &e);
    free(text);
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    if (rc) return;
    CHECK_MSG(cfg_param_count(&c) == nparams, "%s: params %lld vs transformers %lld", name,
              (long long)cfg_param_count(&c), nparams);
    CHECK_MSG(c.head_dim == head_dim, "%s: head_dim %d vs %d", name, c.head_dim, head_dim);
    CHECK_MSG(c.num_kv_heads == kv, "%s: kv heads %d vs %d", name, c.num_kv_heads, kv);
    CHECK_MSG(c.max_position_embeddings == maxpos, "%s", name);
    CHECK_MSG(c.sliding_window == sw, "%s: sliding_window %d vs %d", name, c.sliding_window, sw);
    CHECK_CLOSE(c.rope_theta, theta, 1e-7);
    CHECK_MSG((int)c.rope_type == rt, "%s: rope type %d vs %d", name, (int)c.rope_type, rt);
    CHECK_CLOSE(c.rope_factor, factor, 1e-7);
    CHECK_CLOSE(c.rope_low_freq_factor, lo, 1e-7);
    CHECK_CLOSE(c.rope_high_freq_factor, hi, 1e-7);
    CHECK_MSG(c.rope_original_max_position == orig, "%s: orig max %d vs %d", name, c.rope_original_max_position, orig);
    CHECK_MSG(c.tie_word_embeddings == tie, "%s", name);
    CHECK_MSG(c.attention_bias == bias, "%s", name);
    CHECK_MSG(c.bos_token_id == bos && c.eos_token_id == eos && c.pad_token_id == pad, "%s: tokens %d %d %d", name,
              c.bos_token_id, c.eos_token_id, c.pad_token_id);

    /* write -> parse gives the same config */
    char dir[] = "/tmp/ft_cfg_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_MSG(cfg_write(dir, &c, &e) == 0, "%s", e.msg);
    ft_config c2;
    CHECK_MSG(cfg_load(dir, &c2, &e) == 0, "%s: reparse: %s", name, e.msg);
    CHECK_MSG(memcmp(&c, &c2, sizeof c) == 0, "%s: write -> parse round trip differs", name);
    char cp[600];
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    unlink(cp);
    rmdir(dir);
}

static void test_reference_configs(void) {
    char path[512];
    t_src("tests/fixtures/ckpt/configs/expected.txt", path, sizeof path);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (!f) return;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        check_expected_line(line);
        n++;
    }
    fclose(f);
    CHECK(n >= 10);
}

static void test_specific_fields(void) {
    char path[512];
    ft_config c;
    ft_error e = {0};
    /* Danube3-4B: head_dim 120 != 3840/32 */
    t_src("tests/fixtures/ckpt/configs", path, sizeof path);
    char *p = ft_path_join(path, "danube3_4b.json");
    char *text;
    size_t len;
    CHECK(ft_read_file(p, &text, &len, &e) == 0);
    CHECK(cfg_parse(text, len, p, &c, &e) == 0);
    free(text);
    free(p);
    CHECK(c.arch == FT_ARCH_LLAMA && strcmp(c.architecture, "LlamaForCausalLM") == 0 && strcmp(c.model_type, "llama") == 0);
    CHECK(c.hidden_size == 3840 && c.head_dim == 120 && c.num_heads == 32 && c.num_layers == 24);
    CHECK(strcmp(c.torch_dtype, "bfloat16") == 0);
    CHECK_CLOSE(c.rms_norm_eps, 1e-5, 1e-7);

    /* transformers 5 spelling: rope_parameters + dtype */
    p = ft_path_join(path, "llama_tf5_rope_parameters.json");
    CHECK(ft_read_file(p, &text, &len, &e) == 0);
    CHECK_MSG(cfg_parse(text, len, p, &c, &e) == 0, "%s", e.msg);
    free(text);
    free(p);
    CHECK(strcmp(c.torch_dtype, "bfloat16") == 0);
    CHECK(c.rope_type == FT_ROPE_LLAMA3);

    /* Qwen2 with every layer sliding (max_window_layers 0) */
    CHECK(parse_str("{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                    "\"intermediate_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
                    "\"num_key_value_heads\":1,\"use_sliding_window\":true,\"sliding_window\":64,"
                    "\"max_window_layers\":0}",
                    &c, &e) == 0);
    CHECK(c.sliding_window == 64 && c.arch == FT_ARCH_QWEN2 && c.attention_bias == 1);

    /* the real tiny-random-llama (tests/fixtures/assets) */
    char a[512];
    t_asset("models/tiny-random-llama", a, sizeof a);
    char *cj = ft_path_join(a, "config.json");
    if (ft_file_exists(cj)) {
        CHECK_MSG(cfg_load(a, &c, &e) == 0, "%s", e.msg);
        CHECK(c.hidden_size == 16 && c.num_layers == 2 && c.num_heads == 4 && c.num_kv_heads == 4);
        CHECK(c.intermediate_size == 64 && c.vocab_size == 32000 && c.head_dim == 4);
        CHECK(c.bos_token_id == 0 && c.eos_token_id == 1 && c.pad_token_id == -1);
        CHECK(c.tie_word_embeddings == 0 && c.rope_type == FT_ROPE_NONE);
        CHECK_CLOSE(c.rms_norm_eps, 1e-6, 1e-7);
        CHECK(strcmp(c.torch_dtype, "float32") == 0);
        /* embed + lm_head 2*32000*16, 2 layers of (4*16*16 attn + 3*16*64 mlp + 2*16 norms), final norm */
        CHECK(cfg_param_count(&c) == 2LL * 32000 * 16 + 2 * (4 * 256 + 3 * 1024 + 32) + 16);
    } else {
        CHECK_MSG(0, "%s absent (a committed fixture)", cj);
    }
    free(cj);
}

#define BASE "\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":8,\"num_hidden_layers\":2"

/* json must fail with FT_EINPUT and a message containing `want`. */
static void expect_error(const char *json, const char *want) {
    ft_config c;
    ft_error e = {0};
    int rc = parse_str(json, &c, &e);
    CHECK_MSG(rc == FT_EINPUT, "accepted (rc %d): %s", rc, json);
    CHECK_MSG(strstr(e.msg, want) != NULL, "error \"%s\" does not mention \"%s\"", e.msg, want);
    CHECK_MSG(strstr(e.msg, "t.json") != NULL, "error \"%s\" does not name the file", e.msg);
}

static void test_errors(void) {
    expect_error("{\"architectures\":[\"GPT2LMHeadModel\"]," BASE ",\"num_attention_heads\":2}", "GPT2LMHeadModel");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":2}",
                 "intermediate_size");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":\"2\"}",
                 "num_attention_heads");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2.5}",
                 "num_attention_heads");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":3,"
                 "\"num_key_value_heads\":2}",
                 "divisible");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":0}", "num_attention_heads");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":-1,\"hidden_size\":8,"
                 "\"intermediate_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2}",
                 "vocab_size");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,"
                 "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":2}}",
                 "yarn");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,"
                 "\"rope_scaling\":{\"type\":\"linear\"}}",
                 "factor");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,"
                 "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                 "low_freq_factor");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,\"rope_theta\":\"x\"}",
                 "rope_theta");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,\"hidden_act\":\"gelu\"}",
                 "gelu");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,\"mlp_bias\":true}",
                 "mlp_bias");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_attention_heads\":2,"
                 "\"tie_word_embeddings\":\"yes\"}",
                 "tie_word_embeddings");
    expect_error("{\"architectures\":\"LlamaForCausalLM\"," BASE ",\"num_attention_heads\":2}", "architectures");
    expect_error("{" BASE ",\"num_attention_heads\":2}", "architectures");
    expect_error("{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE ",\"num_attention_heads\":2,"
                 "\"use_sliding_window\":true,\"max_window_layers\":1}",
                 "max_window_layers");
    expect_error("[1,2]", "object");
    expect_error("{\"architectures\":[\"LlamaForCausalLM\"", "JSON");
    expect_error("", "JSON");

    ft_config c;
    ft_error e = {0};
    CHECK(cfg_load("/nonexistent/dir", &c, &e) != 0);
    CHECK(strstr(e.msg, "/nonexistent/dir/config.json") != NULL);
}

int main(void) {
    test_reference_configs();
    test_specific_fields();
    test_errors();
    TEST_DONE();
}
