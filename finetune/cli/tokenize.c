/* finetune tokenize: JSONL in, JSONL out, one output line per input line.
 *   encode: {"text": ...} -> {"ids": [...]}      decode (--decode): {"ids": [...]} -> {"text": ...} */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/cli/cli.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/model/modelpath.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: finetune tokenize --tokenizer DIR [--special] [--decode [--skip-special]]\n\n"
            "Reads JSONL on stdin and writes one JSONL line on stdout per input line.\n"
            "  --tokenizer DIR   directory with a Hugging Face tokenizer.json\n"
            "  --special         add the post-processor's special tokens (BOS/EOS) when encoding\n"
            "  --decode          read {\"ids\": [...]} lines and write {\"text\": ...} lines\n"
            "  --skip-special    when decoding, drop special tokens\n"
            "Encoding reads {\"text\": ...} lines and writes {\"ids\": [...]} lines.\n");
}

static int line_error(const char *msg, long lineno, const char *detail) {
    fprintf(stderr, "finetune tokenize: stdin:%ld: %s%s%s\n", lineno, msg, detail ? ": " : "", detail ? detail : "");
    return FT_EINPUT;
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL;
    int special = 0, decode = 0, skip = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--tokenizer") == 0) {
            if (i + 1 >= argc) return cli_usage_error("tokenize", "--tokenizer needs a directory");
            dir = argv[++i];
        } else if (strcmp(argv[i], "--special") == 0) {
            special = 1;
        } else if (strcmp(argv[i], "--decode") == 0) {
            decode = 1;
        } else if (strcmp(argv[i], "--skip-special") == 0) {
            skip = 1;
        } else {
            return cli_usage_error("tokenize", "unknown option '%s'", argv[i]);
        }
    }
    if (!dir) return cli_usage_error("tokenize", "--tokenizer DIR is required");
    ft_error e = {0};
    ft_tokenizer *t = NULL;
    if (modelpath_tokenizer(dir, &t, &e)) return cli_report("tokenize", &e);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)got);
        if (!cJSON_IsObject(j)) {
            rc = line_error("not a JSON object (invalid JSON or another type)", lineno, NULL);
        } else if (!decode) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
            int32_t *ids = NULL;
            size_t n = 0;
            if (!cJSON_IsString(text)) {
                rc = line_error("field \"text\"", lineno, "expected a string");
            } else if (tok_encode(t, text->valuestring, strlen(text->valuestring), special, &ids, &n, &e)) {
                rc = line_error("field \"text\"", lineno, e.msg);
            } else {
                fputs("{\"ids\": [", stdout);
                for (size_t k = 0; k < n; k++) printf(k ? ", %d" : "%d", ids[k]);
                fputs("]}\n", stdout);
            }
            free(ids);
        } else {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "ids"), *x;
            if (!cJSON_IsArray(arr)) {
                rc = line_error("field \"ids\"", lineno, "expected an array of token ids");
            } else {
                size_t n = 0, m = (size_t)cJSON_GetArraySize(arr);
                int32_t *ids = malloc((m + 1) * sizeof *ids);
                cJSON_ArrayForEach(x, arr) {
                    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= tok_vocab_size(t) ||
                        x->valuedouble != (int32_t)x->valuedouble) {
                        char msg[96];
                        snprintf(msg, sizeof msg, "item %zu is not a token id in [0, %d)", n, tok_vocab_size(t));
                        rc = line_error("field \"ids\"", lineno, msg);
                        break;
                    }
                    ids[n++] = (int32_t)x->valuedouble;
                }
                char *s = NULL;
                if (rc == 0 && tok_decode(t, ids, n, skip, &s, &e)) rc = line_error("field \"ids\"", lineno, e.msg);
                if (rc == 0) {
                    cJSON *o = cJSON_CreateObject();
                    cJSON_AddStringToObject(o, "text", s);
                    char *txt = cJSON_PrintUnformatted(o);
                    puts(txt);
                    free(txt);
                    cJSON_Delete(o);
                }
                free(s);
                free(ids);
            }
        }
        cJSON_Delete(j);
    }
    free(line);
    tok_free(t);
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "finetune tokenize: writing stdout failed\n");
        rc = FT_EIO;
    }
    return rc;
}
