/* recipe: comments, overrides, typed getters, unused-key errors, resolved dump, paths. */
#include <cjson/cJSON.h>

#include "finetune/train/recipe.h"
#include "test.h"

#include <errno.h>

static const char *TEXT =
    "// a training recipe\n"
    "{\n"
    "  \"model\": \"https://huggingface.co/h2oai/x\", // URL keeps its //\n"
    "  \"data\": [\"a.jsonl\", \"/abs/b.jsonl\"], /* block\n"
    "     comment over lines */\n"
    "  \"lora\": {\"r\": 16, \"alpha\": 32.0, \"rr\": 4},\n"
    "  \"optim\": {\"lr\": 2e-5, \"betas\": [0.9, 0.999]},\n"
    "  \"msg\": \"quote \\\" // not a comment\",\n"
    "  \"packing\": true,\n"
    "  \"window\": null\n"
    "}\n";

static void test_comments_and_getters(void) {
    ft_error e = {0};
    rcp *r = NULL;
    CHECK(rcp_parse(TEXT, "recipes/x.json", "recipes", &r, &e) == FT_OK);
    if (!r) {
        fprintf(stderr, "%s\n", e.msg);
        return;
    }
    const char *s;
    CHECK(rcp_get_string(r, "model", NULL, &s, &e) == FT_OK);
    CHECK(s && strcmp(s, "https://huggingface.co/h2oai/x") == 0);
    CHECK(rcp_get_string(r, "msg", NULL, &s, &e) == FT_OK);
    CHECK(s && strcmp(s, "quote \" // not a comment") == 0);
    int i;
    CHECK(rcp_get_int(r, "lora.r", 8, &i, &e) == FT_OK && i == 16);
    CHECK(rcp_get_int(r, "lora.dropout_seed", 7, &i, &e) == FT_OK && i == 7);
    double d;
    CHECK(rcp_get_float(r, "optim.lr", 1e-3, &d, &e) == FT_OK && d == 2e-5);
    CHECK(rcp_get_float(r, "lora.alpha", 1, &d, &e) == FT_OK && d == 32.0);
    /* an integer getter refuses a non-integral number; a float getter takes an integer */
    CHECK(rcp_get_int(r, "optim.lr", 1, &i, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "key 'optim.lr': expected an integer, got number") != NULL, "%s", e.msg);
    CHECK(rcp_get_float(r, "lora.r", 0, &d, &e) == FT_OK && d == 16);
    int b;
    CHECK(rcp_get_bool(r, "packing", 0, &b, &e) == FT_OK && b == 1);
    CHECK(rcp_get_bool(r, "lora.r", 0, &b, &e) == FT_EINPUT);
    CHECK_MSG(strcmp(e.msg, "recipes/x.json: key 'lora.r': expected true or false, got number 16") == 0, "%s",
              e.msg);
    CHECK(rcp_get_int(r, "model", 0, &i, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "recipes/x.json: key 'model': expected an integer, got string") == e.msg, "%s", e.msg);
    /* null means absent */
    CHECK(rcp_get_int(r, "window", 4096, &i, &e) == FT_OK && i == 4096);
    CHECK(!rcp_has(r, "window"));
    CHECK(rcp_has(r, "lora.r"));
    CHECK(!rcp_has(r, "lora.x"));
    CHECK(!rcp_has(r, "model.x"));
    /* a path through a non-object is an error */
    CHECK(rcp_get_int(r, "model.x", 0, &i, &e) == FT_EINPUT);
    /* lists: an array, or one string */
    const char **v;
    size_t n;
    CHECK(rcp_get_string_list(r, "data", NULL, 0, &v, &n, &e) == FT_OK && n == 2);
    if (n == 2) CHECK(strcmp(v[0], "a.jsonl") == 0 && strcmp(v[1], "/abs/b.jsonl") == 0);
    free(v);
    CHECK(rcp_get_string_list(r, "model", NULL, 0, &v, &n, &e) == FT_OK && n == 1);
    free(v);
    CHECK(rcp_get_string_list(r, "optim.betas", NULL, 0, &v, &n, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "optim.betas[0]") != NULL, "%s", e.msg);
    const char *defs[] = {"x", "y", "z"};
    CHECK(rcp_get_string_list(r, "eval.data", defs, 3, &v, &n, &e) == FT_OK && n == 3);
    free(v);
    /* paths: relative to the recipe's directory unless absolute */
    char **pl;
    CHECK(rcp_get_path_list(r, "data", &pl, &n, &e) == FT_OK && n == 2);
    if (n == 2) {
        CHECK(strcmp(pl[0], "recipes/a.jsonl") == 0);
        CHECK(strcmp(pl[1], "/abs/b.jsonl") == 0);
    }
    rcp_free_list(pl, n);
    char *p;
    CHECK(rcp_get_path(r, "output_dir", "runs/x", &p, &e) == FT_OK && p && strcmp(p, "runs/x") == 0);
    free(p);
    CHECK(rcp_get_path(r, "tokenizer", NULL, &p, &e) == FT_OK && p == NULL);

    /* lora.rr was never read: unknown key with a suggestion; optim.betas was read (failed list) */
    CHECK(rcp_check_unused(r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "unknown key 'lora.rr' (did you mean 'lora.r'?)") != NULL, "%s", e.msg);
    CHECK_MSG(strstr(e.msg, "optim.betas") == NULL, "%s", e.msg);
    int rr;
    CHECK(rcp_get_int(r, "lora.rr", 0, &rr, &e) == FT_OK && rr == 4);
    CHECK(rcp_check_unused(r, &e) == FT_OK);

    /* resolved: recipe values + defaults that were read */
    char *js = rcp_dump_resolved(r);
    cJSON *o = cJSON_Parse(js);
    CHECK(o != NULL);
    cJSON *lora = cJSON_GetObjectItem(o, "lora");
    CHECK(cJSON_GetObjectItem(lora, "r")->valuedouble == 16);
    CHECK(cJSON_GetObjectItem(lora, "dropout_seed") && cJSON_GetObjectItem(lora, "dropout_seed")->valuedouble == 7);
    CHECK(cJSON_GetObjectItem(o, "window")->valuedouble == 4096);
    /* paths are dumped absolute (the resolved recipe lives in the run dir) */
    cJSON *od = cJSON_GetObjectItem(o, "output_dir");
    CHECK(cJSON_IsString(od) && od->valuestring[0] == '/' && strstr(od->valuestring, "/runs/x") != NULL);
    cJSON *dd = cJSON_GetObjectItem(o, "data");
    CHECK(cJSON_GetArraySize(dd) == 2);
    if (cJSON_GetArraySize(dd) == 2) {
        const char *d0 = cJSON_GetArrayItem(dd, 0)->valuestring;
        size_t l0 = strlen(d0);
        CHECK(d0[0] == '/' && l0 > 16 && strcmp(d0 + l0 - 16, "/recipes/a.jsonl") == 0);
        CHECK(strcmp(cJSON_GetArrayItem(dd, 1)->valuestring, "/abs/b.jsonl") == 0);
    }
    CHECK(strcmp(cJSON_GetObjectItem(o, "model")->valuestring, "https://huggingface.co/h2oai/x") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "eval"), "data")) == 3);
    CHECK(cJSON_GetObjectItem(o, "tokenizer") == NULL);
    cJSON_Delete(o);
    free(js);
    rcp_free(r);
}

static void test_overrides(void) {
    ft_error e = {0};
    rcp *r = NULL;
    CHECK(rcp_parse("{\"lora\": {\"r\": 16}, \"name\": \"a\", \"data\": \"d.jsonl\"}", "r.json", "dir", &r, &e) == FT_OK);
    if (!r) return;
    CHECK(rcp_override(r, "lora.r=8", &e) == FT_OK);
    CHECK(rcp_override(r, "optim.lr=2e-5", &e) == FT_OK);
    CHECK(rcp_override(r, "packing=true", &e) == FT_OK);
    CHECK(rcp_override(r, "data=[\"a.jsonl\",\"b.jsonl\"]", &e) == FT_OK);
    CHECK(rcp_override(r, "name=hello world", &e) == FT_OK);
    CHECK(rcp_override(r, "version=1.2.3", &e) == FT_OK);
    CHECK(rcp_override(r, "noeq", &e) == FT_EINPUT);
    CHECK(rcp_override(r, "=3", &e) == FT_EINPUT);
    CHECK(rcp_override(r, "a..b=3", &e) == FT_EINPUT);
    CHECK(rcp_override(r, "name.x=3", &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "'name' is a string") != NULL, "%s", e.msg);
    int i, b;
    double d;
    const char *s;
    CHECK(rcp_get_int(r, "lora.r", 4, &i, &e) == FT_OK && i == 8);
    CHECK(rcp_get_float(r, "optim.lr", 1, &d, &e) == FT_OK && d == 2e-5);
    CHECK(rcp_get_bool(r, "packing", 0, &b, &e) == FT_OK && b == 1);
    CHECK(rcp_get_string(r, "name", NULL, &s, &e) == FT_OK && strcmp(s, "hello world") == 0);
    CHECK(rcp_get_string(r, "version", NULL, &s, &e) == FT_OK && strcmp(s, "1.2.3") == 0);
    /* override-set paths are relative to the current directory */
    char **pl;
    size_t n;
    CHECK(rcp_get_path_list(r, "data", &pl, &n, &e) == FT_OK && n == 2);
    if (n == 2) CHECK(strcmp(pl[0], "a.jsonl") == 0 && strcmp(pl[1], "b.jsonl") == 0);
    rcp_free_list(pl, n);
    /* type errors on override-set keys say so */
    CHECK(rcp_override(r, "lora.alpha=abc", &e) == FT_OK);
    CHECK(rcp_get_float(r, "lora.alpha", 16, &d, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "(set on the command line)") != NULL, "%s", e.msg);
    CHECK(rcp_check_unused(r, &e) == FT_OK);
    rcp_free(r);

    r = rcp_new();
    CHECK(rcp_override(r, "epochs=3", &e) == FT_OK);
    CHECK(rcp_override(r, "epochs=4", &e) == FT_OK);
    CHECK(rcp_get_int(r, "epochs", 1, &i, &e) == FT_OK && i == 4);
    CHECK(rcp_override(r, "lr_typo=1", &e) == FT_OK);
    CHECK(rcp_get_float(r, "lr", 1e-5, &d, &e) == FT_OK);
    CHECK(rcp_check_unused(r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "unknown key 'lr_typo'") != NULL, "%s", e.msg);
    rcp_free(r);

    /* a null value is absent: `lora=null` switches a section off instead of being an unknown key */
    r = rcp_new();
    CHECK(rcp_override(r, "lora=null", &e) == FT_OK);
    CHECK(!rcp_has(r, "lora"));
    CHECK(rcp_check_unused(r, &e) == FT_OK);
    rcp_free(r);
}

static void test_errors(void) {
    ft_error e = {0};
    rcp *r = NULL;
    CHECK(rcp_parse("{\n  \"a\": 1,\n  \"b\": ]\n}", "bad.json", NULL, &r, &e) == FT_EINPUT && !r);
    CHECK_MSG(strstr(e.msg, "bad.json:3:") == e.msg, "%s", e.msg);
    CHECK(rcp_parse("{\"a\": 1} /* open", "c.json", NULL, &r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "c.json:1: unterminated") == e.msg, "%s", e.msg);
    CHECK(rcp_parse("[1, 2]", "arr.json", NULL, &r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "must be a JSON object") != NULL, "%s", e.msg);
    CHECK(rcp_parse("{\"a\": 1, \"a\": 2}", "dup.json", NULL, &r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "duplicate key 'a'") != NULL, "%s", e.msg);
    CHECK(rcp_parse("{\"x\": {\"a\": 1, \"a\": 2}}", "dup.json", NULL, &r, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "duplicate key 'x.a'") != NULL, "%s", e.msg);
    CHECK(rcp_parse("{\"a\": 1} trailing", "t.json", NULL, &r, &e) == FT_EINPUT);
    CHECK(rcp_parse("", "empty.json", NULL, &r, &e) == FT_EINPUT);
    CHECK(rcp_load("/nonexistent/recipe.json", &r, &e) != FT_OK);
    CHECK_MSG(strstr(e.msg, "/nonexistent/recipe.json") != NULL, "%s", e.msg);
    /* a comment-only-changes file still parses; a string with escaped backslash before quote */
    CHECK(rcp_parse("{\"p\": \"C:\\\\dir\\\\\" // c\n}", "w.json", NULL, &r, &e) == FT_OK);
    if (r) {
        const char *s;
        CHECK(rcp_get_string(r, "p", NULL, &s, &e) == FT_OK && strcmp(s, "C:\\dir\\") == 0);
        rcp_free(r);
    }
}

static void test_load_file(void) {
    ft_error e = {0};
    const char *dir = "test_recipe_tmp";
    ft_mkdir_p(dir, &e);
    FILE *f = fopen("test_recipe_tmp/r.json", "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("{ // c\n \"train\": \"data/t.jsonl\" }\n", f);
    fclose(f);
    rcp *r = NULL;
    CHECK(rcp_load("test_recipe_tmp/r.json", &r, &e) == FT_OK);
    if (!r) return;
    char *p;
    CHECK(rcp_get_path(r, "train", NULL, &p, &e) == FT_OK && p && strcmp(p, "test_recipe_tmp/data/t.jsonl") == 0);
    free(p);
    CHECK(rcp_check_unused(r, &e) == FT_OK);
    rcp_free(r);
    remove("test_recipe_tmp/r.json");
    remove("test_recipe_tmp");
}

/* Paths are printed as a user would type them: "recipes/../out" is "out"; "dir/.." stays where dir is a
 * symbolic link (removing it would name another place). */
static void test_path_spelling(void) {
    ft_error e = {0};
    ft_mkdir_p("test_recipe_norm/recipes", &e);
    CHECK(symlink("recipes", "test_recipe_norm/link") == 0 || errno == EEXIST);
    static const char *const cases[][2] = {
        {"../out/quickstart-sft", "test_recipe_norm/out/quickstart-sft"},
        {"./data//t.jsonl", "test_recipe_norm/recipes/data/t.jsonl"},
        {"../../x", "x"},
        {"../../../x", "../x"},
        {"/abs/./a/../b/", "/abs/b"},
        {"/../..", "/"},
        {".", "test_recipe_norm/recipes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"p\": \"%s\"}", cases[i][0]);
        rcp *r = NULL;
        char *p = NULL;
        CHECK(rcp_parse(text, "test_recipe_norm/recipes/r.json", "test_recipe_norm/recipes", &r, &e) == FT_OK);
        CHECK(r && rcp_get_path(r, "p", NULL, &p, &e) == FT_OK);
        CHECK_MSG(p && strcmp(p, cases[i][1]) == 0, "%s -> %s, expected %s", cases[i][0], p ? p : "NULL", cases[i][1]);
        free(p);
        rcp_free(r);
    }
    rcp *r = NULL;
    char *p = NULL;
    CHECK(rcp_parse("{\"p\": \"../out\"}", "r.json", "test_recipe_norm/link", &r, &e) == FT_OK);
    CHECK(r && rcp_get_path(r, "p", NULL, &p, &e) == FT_OK && p && strcmp(p, "test_recipe_norm/link/../out") == 0);
    free(p);
    rcp_free(r);
    remove("test_recipe_norm/link");
    remove("test_recipe_norm/recipes");
    remove("test_recipe_norm");
}

/* An empty path ("" in the recipe, `output_dir=` on the command line) is an error naming the key; found by
 * fuzz_recipe: normalizing "" in place wrote "." past its one-byte buffer. */
static void test_empty_paths(void) {
    ft_error e = {0};
    rcp *r = NULL;
    char *p = NULL, **pl = NULL;
    size_t n = 9;
    CHECK(rcp_parse("{\"model\": \"\", \"data\": [\"a.jsonl\", \"\"]}", "r.json", "base", &r, &e) == FT_OK);
    if (!r) return;
    CHECK(rcp_get_path(r, "model", "dflt", &p, &e) == FT_EINPUT && !p);
    CHECK_MSG(strstr(e.msg, "r.json: key 'model' is an empty path") != NULL, "%s", e.msg);
    CHECK(rcp_get_path_list(r, "data", &pl, &n, &e) == FT_EINPUT && !pl && n == 0);
    CHECK_MSG(strstr(e.msg, "key 'data': entry 1 is an empty path") != NULL, "%s", e.msg);
    CHECK(rcp_override(r, "output_dir=", &e) == FT_OK);
    CHECK(rcp_get_path(r, "output_dir", NULL, &p, &e) == FT_EINPUT && !p);
    CHECK_MSG(strstr(e.msg, "key 'output_dir' is an empty path") != NULL, "%s", e.msg);
    rcp_free(r);
}

/* ft_parse_bytes: the sizes gpu_memory_limit and FT_GPU_MEMORY_LIMIT take (binary units) */
static void test_parse_bytes(void) {
    struct {
        const char *s;
        int ok;
        size_t v;
    } cases[] = {{"15GiB", 1, (size_t)15 << 30}, {"15g", 1, (size_t)15 << 30}, {"15 GB", 1, (size_t)15 << 30},
                 {"512MiB", 1, (size_t)512 << 20}, {"1.5G", 1, (size_t)3 << 29}, {"16106127360", 1, 16106127360u},
                 {"0", 1, 0}, {"64k", 1, 65536}, {"2T", 1, (size_t)2 << 40}, {"100b", 1, 100},
                 {"", 0, 0}, {"lots", 0, 0}, {"15 parsecs", 0, 0}, {"-1G", 0, 0}, {"15GiBs", 0, 0}, {"1e30", 0, 0},
                 {"G", 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t v = 12345;
        int rc = ft_parse_bytes(cases[i].s, &v);
        CHECK_MSG((rc == 0) == cases[i].ok && (!cases[i].ok || v == cases[i].v), "ft_parse_bytes('%s'): rc %d, %zu",
                  cases[i].s, rc, v);
    }
}

int main(void) {
    test_empty_paths();
    test_comments_and_getters();
    test_overrides();
    test_errors();
    test_load_file();
    test_path_spelling();
    test_parse_bytes();
    TEST_DONE();
}
