/* libFuzzer target: tok_load_json on arbitrary bytes, and encode/decode of arbitrary text and ids.
 * Byte 0 picks the mode: even -> the rest is a tokenizer.json (loaded, then used on a few fixed
 * texts); odd -> the rest is text encoded (and its ids decoded) by a tiny built-in tokenizer and,
 * when the shared assets are found, by the real Mistral and SmolLM tokenizers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tokenizer.h"

static const char *TINY =
    "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"<0x41>\": 2, \"a\": 3, \"b\": 4, \"ab\": 5, \"\\u2581\": 6, \"\\u2581a\": 7},"
    " \"merges\": [\"a b\", \"\\u2581 a\"]},"
    " \"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"lstrip\": true, \"rstrip\": true},"
    "  {\"id\": 8, \"content\": \"ab\", \"single_word\": true, \"normalized\": true}],"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
    "  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true},"
    "  {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": true}]},"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"},"
    "  \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \","
    "  \"start\": 1, \"stop\": 0}]}}";

static ft_tokenizer *toks[3];
static int ntoks;

static void load_dir(const char *name) {
    const char *roots[] = {getenv("FT_ASSETS"), "../shared/assets", "../../shared/assets", "/work/shared/assets"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        if (!roots[i]) continue;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/tokenizers/%s", roots[i], name);
        ft_error e;
        if (tok_load(dir, &toks[ntoks], &e) == 0) {
            ntoks++;
            return;
        }
    }
}

static void exercise(const ft_tokenizer *t, const uint8_t *text, size_t n) {
    ft_error e;
    int32_t *ids = NULL;
    size_t m = 0;
    for (int special = 0; special < 2; special++) {
        if (tok_encode(t, (const char *)text, n, special, &ids, &m, &e) == 0) {
            char *s = NULL;
            if (tok_decode(t, ids, m, special, &s, &e) == 0) free(s);
        }
        free(ids);
        ids = NULL;
    }
    /* the text's bytes as ids too (in and out of range) */
    int32_t raw[64];
    size_t k = 0;
    for (; k < n && k < 64; k++) raw[k] = (int32_t)text[k] * 131 - 7;
    char *s = NULL;
    if (tok_decode(t, raw, k, 0, &s, &e) == 0) free(s);
    if (k) tok_token_str(t, raw[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ntoks) {
        ft_error e;
        if (tok_load_json(TINY, strlen(TINY), "tiny", &toks[0], &e)) abort(); /* our own fixed JSON */
        ntoks = 1;
        load_dir("mistral-7b-v0.1");
        load_dir("smollm-135m");
    }
    if (size == 0) return 0;
    if (data[0] % 2 == 0) {
        ft_tokenizer *t = NULL;
        ft_error e;
        if (tok_load_json((const char *)data + 1, size - 1, "fuzz", &t, &e) == 0) {
            static const char *texts[] = {"", "hello world", "  a\n\tb 123 <s> </s>", "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80"};
            for (size_t i = 0; i < 4; i++) exercise(t, (const uint8_t *)texts[i], strlen(texts[i]));
            tok_free(t);
        }
    } else {
        for (int i = 0; i < ntoks; i++) exercise(toks[i], data + 1, size - 1);
    }
    return 0;
}
