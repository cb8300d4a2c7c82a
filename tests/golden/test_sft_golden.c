/* End-to-end SFT golden test: `finetune sft tests/fixtures/sft/recipe.json` (llama-gqa, a tiny BPE
 * tokenizer, OpenOrca rows, danube template, prompt masked, grad accumulation, AdamW + cosine +
 * clipping) reproduces the PyTorch loop of tests/reference/make_sft_fixtures.py: every step's loss
 * and grad norm within 1e-5 relative, and the final weights. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "../test.h"
#include "finetune/io/safetensors.h"
#include "finetune/base/util.h"

static char *slurp(const char *path) {
    char *text = NULL;
    size_t len = 0;
    ft_error e = {0};
    if (ft_read_file(path, &text, &len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return NULL;
    }
    return text;
}

int main(void) {
    const char *bin = getenv("FT_BIN");
    if (!bin) t_skip("FT_BIN is not set (the finetune binary; ctest sets it, or run FT_BIN=build/finetune ./test_sft_golden)");
    char recipe[1024], expected[1024], weights[1024], dir[] = "sft_golden.XXXXXX", cmd[4096], path[2048];
    t_src("tests/fixtures/sft/recipe.json", recipe, sizeof recipe);
    t_src("tests/fixtures/sft/expected.json", expected, sizeof expected);
    t_src("tests/fixtures/sft/expected_weights.safetensors", weights, sizeof weights);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cmd, sizeof cmd, "\"%s\" sft \"%s\" output_dir=%s/run > %s/log 2>&1", bin, recipe, dir, dir);
    int st = system(cmd);
    CHECK_MSG(st == 0, "finetune sft failed (status %d), see %s/log", st, dir);

    /* losses and grad norms per step */
    char *exp_text = slurp(expected);
    cJSON *exp = exp_text ? cJSON_Parse(exp_text) : NULL;
    CHECK(exp != NULL);
    snprintf(path, sizeof path, "%s/run/metrics.jsonl", dir);
    char *mx = slurp(path);
    CHECK(mx != NULL);
    if (exp && mx) {
        const cJSON *loss = cJSON_GetObjectItem(exp, "loss"), *gn = cJSON_GetObjectItem(exp, "grad_norm");
        int steps = cJSON_GetObjectItem(exp, "steps")->valueint, seen = 0;
        for (char *line = strtok(mx, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *r = cJSON_Parse(line);
            const cJSON *l = cJSON_GetObjectItem(r, "loss"), *g = cJSON_GetObjectItem(r, "grad_norm"),
                        *s = cJSON_GetObjectItem(r, "step");
            if (cJSON_IsNumber(l) && cJSON_IsNumber(s) && s->valueint >= 1 && s->valueint <= steps) {
                int i = s->valueint - 1;
                fprintf(stderr, "step %d: loss %.9g (torch %.9g), grad norm %.9g (torch %.9g)\n", i + 1, l->valuedouble,
                        cJSON_GetArrayItem(loss, i)->valuedouble, g->valuedouble, cJSON_GetArrayItem(gn, i)->valuedouble);
                CHECK_CLOSE(l->valuedouble, cJSON_GetArrayItem(loss, i)->valuedouble, 1e-5);
                CHECK_CLOSE(g->valuedouble, cJSON_GetArrayItem(gn, i)->valuedouble, 1e-5);
                seen++;
            }
            cJSON_Delete(r);
        }
        CHECK_MSG(seen == steps, "%d loss records, expected %d", seen, steps);
    }

    /* final weights */
    st_file *want = NULL;
    st_model *got = NULL;
    ft_error e = {0};
    snprintf(path, sizeof path, "%s/run", dir);
    CHECK_MSG(st_open(weights, &want, &e) == 0, "%s", e.msg);
    CHECK_MSG(st_model_open(path, &got, &e) == 0, "%s", e.msg);
    if (want && got) {
        CHECK(st_model_count(got) == st_count(want));
        double worst = 0;
        const char *worst_name = "";
        for (size_t i = 0; i < st_count(want); i++) {
            const st_tensor_info *t = st_at(want, i);
            size_t n = 1;
            for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
            float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
            int ok = st_read_f32(t, a, n, &e) == 0;
            CHECK_MSG(ok, "%s", e.msg);
            ok = ok && st_model_read_f32(got, t->name, b, n, &e) == 0;
            CHECK_MSG(ok, "%s: %s", t->name, e.msg);
            for (size_t k = 0; ok && k < n; k++) {
                double d = fabs((double)a[k] - b[k]) / fmax(1.0, fabs(a[k]));
                if (d > worst) worst = d, worst_name = t->name;
            }
            free(a);
            free(b);
        }
        fprintf(stderr, "final weights: largest difference %.3g (%s)\n", worst, worst_name);
        CHECK_MSG(worst <= 1e-5, "final weights differ from PyTorch's by %g in %s", worst, worst_name);
    }
    st_close(want);
    st_model_close(got);
    cJSON_Delete(exp);
    free(exp_text);
    free(mx);
    if (t_failures == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    TEST_DONE();
}
