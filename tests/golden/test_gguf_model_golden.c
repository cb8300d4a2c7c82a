/* A GGUF model file loaded as a model, against transformers' GGUF loader (fixture
 * tests/fixtures/gguf_model/smollm2.json from tests/reference/make_gguf_model_fixtures.py, on the real
 * SmolLM2-135M-Instruct.Q4_1.gguf read from $FT_ASSETS; skipped without it):
 * - every tensor through st_model_open(.gguf) (dequantized, q/k un-permuted): shape, sum and a
 *   row/column-weighted checksum, and the first values of chosen rows (across the q/k head halves), to 1e-6;
 * - model_load(.gguf): per-token log-probs of the chat prompt + answer within 1e-4, greedy decoding equal;
 * - the tokenizer built from the metadata: ids exactly as transformers' GGUF tokenizer and the model's own
 *   tokenizer.json; the chat template from tokenizer.chat_template renders the prompt's exact ids. */
#include <cjson/cJSON.h>

#include "datasets/template.h"
#include "finetune/io/safetensors.h"
#include "finetune/model/model.h"
#include "finetune/model/modelpath.h"
#include "test.h"

static int32_t *int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = ft_xmalloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static void check_tensors(const char *gguf, const cJSON *tensors) {
    st_model *st = NULL;
    ft_error e = {0};
    CHECK_MSG(st_model_open(gguf, &st, &e) == 0, "%s", e.msg);
    if (!st) return;
    CHECK_MSG((int)st_model_count(st) == cJSON_GetArraySize(tensors), "%zu tensors, transformers has %d",
              st_model_count(st), cJSON_GetArraySize(tensors));
    const cJSON *x;
    float *buf = NULL;
    int rows_checked = 0;
    cJSON_ArrayForEach(x, tensors) {
        const st_tensor_info *t = st_model_find(st, x->string);
        CHECK_MSG(t != NULL, "tensor %s missing", x->string);
        if (!t) continue;
        const cJSON *shape = cJSON_GetObjectItem(x, "shape");
        int same = t->ndim == cJSON_GetArraySize(shape);
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
        CHECK_MSG(same, "%s: shape differs", x->string);
        if (!same) continue;
        int64_t rows = t->shape[0], cols = t->ndim > 1 ? t->shape[1] : 1, n = rows * cols;
        buf = ft_xrealloc(buf, (size_t)n * sizeof(float));
        CHECK_MSG(st_read_f32(t, buf, (size_t)n, &e) == 0, "%s", e.msg);
        double sum = 0, ck = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                double v = buf[r * cols + c];
                sum += v;
                ck += v * (double)(r % 97 + 1) * (double)(c % 89 + 1);
            }
        double rs = cJSON_GetObjectItem(x, "sum")->valuedouble, rc = cJSON_GetObjectItem(x, "checksum")->valuedouble;
        CHECK_MSG(fabs(sum - rs) <= 1e-6 * fmax(1.0, fabs(rs)), "%s: sum %.9g, transformers %.9g", x->string, sum, rs);
        CHECK_MSG(fabs(ck - rc) <= 1e-6 * fmax(1.0, fabs(rc)), "%s: checksum %.12g, transformers %.12g", x->string, ck,
                  rc);
        const cJSON *rowsj = cJSON_GetObjectItem(x, "rows"), *r;
        cJSON_ArrayForEach(r, rowsj) {
            int64_t row = atoll(r->string);
            for (int k = 0; k < cJSON_GetArraySize(r); k++)
                CHECK_CLOSE(buf[row * cols + k], cJSON_GetArrayItem(r, k)->valuedouble, 1e-6);
            rows_checked++;
        }
    }
    CHECK(rows_checked >= 30);
    free(buf);
    st_model_close(st);
}

static void check_model(const char *gguf, const cJSON *fx) {
    ft_backend *b = ft_backend_cpu_create();
    ft_model *m = NULL;
    ft_error e = {0};
    CHECK_MSG(model_load(gguf, b, &m, &e) == 0, "%s", e.msg);
    if (!m) return;
    CHECK(m->cfg.num_layers == 30 && m->cfg.hidden_size == 576 && m->cfg.num_kv_heads == 3 && m->cfg.tie_word_embeddings);
    const cJSON *lp = cJSON_GetObjectItem(fx, "logprobs");
    int n = 0;
    int32_t *ids = int_array(cJSON_GetObjectItem(lp, "ids"), &n);
    float *ours = ft_xcalloc((size_t)n, sizeof(float));
    CHECK_MSG(model_score(m, ids, n, ours, &e) == 0, "%s", e.msg);
    const cJSON *ref = cJSON_GetObjectItem(lp, "logprobs");
    CHECK(cJSON_GetArraySize(ref) == n - 1);
    double worst = 0;
    for (int i = 0; i < n - 1 && i < cJSON_GetArraySize(ref); i++) {
        double r = cJSON_GetArrayItem(ref, i)->valuedouble, err = fabs(ours[i] - r) / fmax(1.0, fabs(r));
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst <= 1e-4, "log-probs: worst relative error %.3g", worst);
    fprintf(stderr, "log-probs of %d tokens: worst relative error %.3g\n", n - 1, worst);
    free(ids);
    free(ours);

    const cJSON *g = cJSON_GetObjectItem(fx, "greedy");
    int np = 0, ng = 0, nout = 0;
    int32_t *prompt = int_array(cJSON_GetObjectItem(g, "prompt_ids"), &np), *want = int_array(cJSON_GetObjectItem(g, "ids"), &ng);
    int32_t *got = ft_xcalloc((size_t)ng, sizeof *got);
    ft_sample_opts o = {.greedy = 1, .temperature = 1, .top_p = 1};
    CHECK_MSG(model_generate(m, prompt, np, ng, &o, got, &nout, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(nout == ng);
    for (int i = 0; i < ng && i < nout; i++) CHECK_MSG(got[i] == want[i], "greedy token %d: %d, transformers %d", i, got[i], want[i]);
    free(prompt);
    free(want);
    free(got);
    model_free(m);
    b->destroy(b);
}

static void check_ids(const char *what, const char *text, const int32_t *got, size_t n, const cJSON *want) {
    int same = (int)n == cJSON_GetArraySize(want);
    for (size_t i = 0; same && i < n; i++) same = got[i] == (int32_t)cJSON_GetArrayItem(want, (int)i)->valuedouble;
    CHECK_MSG(same, "%s ids differ for %.40s...", what, text);
}

static void check_tokenizer(const char *gguf, const cJSON *fx) {
    ft_tokenizer *tok = NULL;
    ft_error e = {0};
    CHECK_MSG(modelpath_tokenizer(gguf, &tok, &e) == 0, "%s", e.msg);
    if (!tok) return;
    CHECK(tok_vocab_size(tok) == 49152);
    CHECK(tok_eos_id(tok) == 2); /* tokenizer.ggml.eos_token_id: <|im_end|> */
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(fx, "tokenize")) {
        const char *text = cJSON_GetObjectItem(x, "text")->valuestring;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_MSG(tok_encode(tok, text, strlen(text), 1, &ids, &n, &e) == 0, "%s", e.msg);
        check_ids("transformers' GGUF tokenizer", text, ids, n, cJSON_GetObjectItem(x, "gguf_tf"));
        check_ids("the original tokenizer.json", text, ids, n, cJSON_GetObjectItem(x, "original"));
        char *back = NULL;
        CHECK(tok_decode(tok, ids, n, 0, &back, &e) == 0 && back && strcmp(back, text) == 0);
        free(back);
        free(ids);
    }
    /* the chat template from tokenizer.chat_template: the France prompt with the default system turn */
    tmpl *t = NULL;
    const char *paths[1] = {gguf};
    CHECK_MSG(modelpath_template("auto", paths, 1, NULL, &t, &e) == 0 && t, "%s", e.msg);
    if (t) {
        CHECK(tmpl_is_jinja(t));
        ds_conv c = {0};
        ds_msg msg = {DS_USER, (char *)"What is the capital of France?"};
        c.msgs = &msg;
        c.n = 1;
        tmpl_tokens out = {0};
        CHECK_MSG(tmpl_encode(t, &c, tok, 1, &out, &e) == 0, "%s", e.msg);
        int np = 0;
        int32_t *want = int_array(cJSON_GetObjectItem(cJSON_GetObjectItem(fx, "greedy"), "prompt_ids"), &np);
        CHECK((int)out.n == np);
        for (int i = 0; i < np && i < (int)out.n; i++) CHECK_MSG(out.ids[i] == want[i], "prompt id %d", i);
        free(want);
        tmpl_tokens_free(&out);
        tmpl_free(t);
    }
    tok_free(tok);
}

int main(void) {
    char gguf[1024], path[1024];
    t_large_asset("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf", "the real SmolLM2 GGUF is absent",
                  gguf, sizeof gguf);
    char *text = NULL;
    ft_error e = {0};
    if (ft_read_file(t_src("tests/fixtures/gguf_model/smollm2.json", path, sizeof path), &text, NULL, &e))
        return fprintf(stderr, "%s\n", e.msg), 1;
    cJSON *fx = cJSON_Parse(text);
    free(text);
    CHECK(fx != NULL);
    if (!fx) TEST_DONE();
    check_tensors(gguf, cJSON_GetObjectItem(fx, "tensors"));
    check_tokenizer(gguf, fx);
    check_model(gguf, fx);
    cJSON_Delete(fx);
    TEST_DONE();
}
