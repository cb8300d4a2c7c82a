/* Unit tests for the tokenizer: error paths on bad tokenizer.json and bad text, a tiny hand-made
 * BPE whose merges can be followed by hand, ids/names from the shared assets (their README), and
 * encoding from several threads at once. The HF-equality tests are in tests/golden. */
#include <pthread.h>
#include <stdint.h>

#include "test.h"
#include "datasets/tokenizer/tokenizer.h"

static int load_str(const char *json, ft_tokenizer **t, ft_error *e) {
    return tok_load_json(json, strlen(json), "x/tokenizer.json", t, e);
}

static void expect_load_error(const char *json, const char *needle) {
    ft_tokenizer *t = NULL;
    ft_error e = {0};
    int rc = load_str(json, &t, &e);
    CHECK_MSG(rc == FT_EINPUT, "rc %d for %s", rc, json);
    CHECK_MSG(t == NULL, "tokenizer returned on error");
    CHECK_MSG(strstr(e.msg, needle) != NULL, "message \"%s\" lacks \"%s\"", e.msg, needle);
    CHECK_MSG(strstr(e.msg, "x/tokenizer.json") != NULL, "message \"%s\" lacks the file name", e.msg);
    tok_free(t);
}

/* Expected ids below were also checked with HF tokenizers 0.23.3 on this JSON (merges as "a b" strings).
 * Merges: "a b" (rank 0), "ab c" (rank 1), "c c" (rank 2): "abcc" -> ab c c ->
 * rank 1 (ab c) beats rank 2 (c c), so "abc" then "c". */
static const char *TINY =
    "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    " \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"ab\": 4, \"abc\": 5, \"cc\": 6, \"<s>\": 7},"
    " \"merges\": [\"a b\", [\"ab\", \"c\"], \"c c\"]},"
    " \"added_tokens\": [{\"id\": 7, \"content\": \"<s>\", \"special\": true}],"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
    " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [7]}}}}";

static void test_tiny(void) {
    ft_tokenizer *t = NULL;
    ft_error e = {0};
    CHECK_MSG(load_str(TINY, &t, &e) == 0, "%s", e.msg);
    if (!t) return;
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(tok_encode(t, "abcc", 4, 0, &ids, &n, &e) == 0);
    CHECK(n == 2 && ids[0] == 5 && ids[1] == 3);
    free(ids);
    /* "cccc": c c c c -> cc c c (leftmost first) -> cc cc */
    CHECK(tok_encode(t, "cccc", 4, 1, &ids, &n, &e) == 0);
    CHECK(n == 3 && ids[0] == 7 && ids[1] == 6 && ids[2] == 6);
    free(ids);
    /* unknown characters fuse into one <unk>; no byte fallback here */
    CHECK(tok_encode(t, "axyzb", 5, 0, &ids, &n, &e) == 0);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 0 && ids[2] == 2);
    free(ids);
    /* a long word takes the heap path: (ab)^40 c -> abc at the end, ab elsewhere */
    char w[200];
    size_t len = 0;
    for (int i = 0; i < 40; i++) w[len++] = 'a', w[len++] = 'b';
    w[len++] = 'c';
    CHECK(tok_encode(t, w, len, 0, &ids, &n, &e) == 0);
    int ok = n == 40;
    for (size_t i = 0; ok && i < 39; i++) ok = ids[i] == 4;
    CHECK(ok && ids[39] == 5);
    free(ids);
    CHECK(tok_token_id(t, "abc") == 5);
    CHECK(tok_token_id(t, "zzz") == -1);
    CHECK(tok_token_str(t, 6) && strcmp(tok_token_str(t, 6), "cc") == 0);
    CHECK(tok_token_str(t, 99) == NULL);
    CHECK(tok_bos_id(t) == 7);
    CHECK(tok_vocab_size(t) == 8);
    /* invalid UTF-8 is an input error naming the byte */
    CHECK(tok_encode(t, "ab\xC3(", 4, 0, &ids, &n, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "invalid UTF-8 at byte 2") != NULL, "%s", e.msg);
    CHECK(tok_encode(t, "\xED\xA0\x80", 3, 0, &ids, &n, &e) == FT_EINPUT); /* surrogate */
    CHECK(tok_encode(t, "\xC0\xAF", 2, 0, &ids, &n, &e) == FT_EINPUT);     /* overlong */
    CHECK(tok_encode(t, "\xF4\x90\x80\x80", 4, 0, &ids, &n, &e) == FT_EINPUT); /* > U+10FFFF */
    /* empty text, and a NUL byte inside the text, do not crash */
    CHECK(tok_encode(t, "", 0, 0, &ids, &n, &e) == 0 && n == 0);
    free(ids);
    CHECK(tok_encode(t, "a\0b", 3, 0, &ids, &n, &e) == 0);
    free(ids);
    /* decode without a decoder joins with spaces (HF); unknown ids are dropped */
    int32_t d[] = {7, 5, 1000, 6};
    char *s = NULL;
    CHECK(tok_decode(t, d, 4, 0, &s, &e) == 0 && strcmp(s, "<s> abc cc") == 0);
    free(s);
    CHECK(tok_decode(t, d, 4, 1, &s, &e) == 0 && strcmp(s, "abc cc") == 0);
    free(s);
    tok_free(t);
}

static void test_errors(void) {
    expect_load_error("{\"model\": ", "not valid JSON");
    expect_load_error("[1, 2]", "JSON object");
    expect_load_error("{\"normalizer\": null}", "missing \"model\"");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "unsupported");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "unsupported");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"aa\": 1}, \"merges\": [\"a a a\"]}}",
                      "model.merges[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}}",
                      "\"aa\" is not in model.vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"aa\": 1}, \"merges\": [\"a b\"]}}",
                      "model.merges[0]: token \"b\"");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [42]}}", "model.merges[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}", "model.vocab[\"a\"]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<u>\"}}",
                      "unk_token");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                      " \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "pre_tokenizer: unsupported");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                      " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKD\"}]}}",
                      "normalizer.normalizers[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                      " \"added_tokens\": [{\"content\": 5}]}", "added_tokens[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                      " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<x>\"}}],"
                      " \"special_tokens\": {}}}", "<x>");
    ft_tokenizer *t = NULL;
    ft_error e = {0};
    CHECK(tok_load("/nonexistent/dir", &t, &e) == FT_EINPUT && t == NULL);
    CHECK_MSG(strstr(e.msg, "/nonexistent/dir/tokenizer.json") != NULL, "%s", e.msg);
}

typedef struct {
    const ft_tokenizer *t;
    const char *text;
    int32_t *ids;
    size_t n;
    int rc;
} job;

static void *run_job(void *p) {
    job *j = p;
    ft_error e;
    for (int k = 0; k < 50; k++) {
        free(j->ids);
        j->rc |= tok_encode(j->t, j->text, strlen(j->text), 1, &j->ids, &j->n, &e);
    }
    return NULL;
}

static void test_assets(void) {
    char dir[1024];
    ft_tokenizer *m = NULL, *s = NULL;
    ft_error e = {0};
    if (tok_load(t_asset("tokenizers/mistral-7b-v0.1", dir, sizeof dir), &m, &e) ||
        tok_load(t_asset("tokenizers/smollm-135m", dir, sizeof dir), &s, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        tok_free(m);
        return;
    }
    /* assets/README.md: <unk>=0, <s>=1, </s>=2, <0x0A>=13; smollm: <|endoftext|> is bos and eos */
    CHECK(tok_token_id(m, "<unk>") == 0 && tok_token_id(m, "<s>") == 1 && tok_token_id(m, "<0x0A>") == 13);
    CHECK(tok_bos_id(m) == 1 && tok_eos_id(m) == 2);
    CHECK(tok_vocab_size(m) == 32000 && tok_vocab_size(s) == 49152);
    CHECK(tok_bos_id(s) == 0 && tok_eos_id(s) == 0);
    CHECK(tok_token_id(s, "<|im_start|>") == 1);
    /* threads share one tokenizer (and its word cache) */
    const char *texts[4] = {"Hello world, hello again!", "<|im_start|>user\nhi 123<|im_end|>", "the the the",
                            "中文 and English"};
    pthread_t th[4];
    job jobs[4] = {{0}};
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){.t = s, .text = texts[i]};
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(jobs[i].rc == 0);
        CHECK(tok_encode(s, texts[i], strlen(texts[i]), 1, &ids, &n, &e) == 0);
        CHECK(n == jobs[i].n && memcmp(ids, jobs[i].ids, n * sizeof *ids) == 0);
        free(ids);
        free(jobs[i].ids);
    }
    tok_free(m);
    tok_free(s);
}

int main(void) {
    test_tiny();
    test_errors();
    test_assets();
    TEST_DONE();
}
