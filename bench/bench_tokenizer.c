/* bench_tokenizer: tokenizer throughput on a text file, one thread.
 *   bench_tokenizer TOKENIZER_DIR TEXT_FILE [--whole] [--repeat N]
 * Encodes every line of TEXT_FILE (or, with --whole, the whole file as one text) N times
 * (default 3) and prints MB/s for the first (cold cache) and the best pass. Compare with
 * bench/tokenizer_hf.py (see bench/tokenizer.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer/tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER_DIR TEXT_FILE [--whole] [--repeat N]\n");
        return 2;
    }
    int whole = 0, repeat = 3;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--whole") == 0) whole = 1;
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) repeat = atoi(argv[++i]);
        else {
            fprintf(stderr, "bench_tokenizer: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (repeat < 1) repeat = 1;
    ft_error e = {0};
    ft_tokenizer *t = NULL;
    double t0 = ft_now();
    if (tok_load(argv[1], &t, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return e.code;
    }
    double load_s = ft_now() - t0;
    char *buf = NULL;
    size_t len = 0;
    if (ft_read_file(argv[2], &buf, &len, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        tok_free(t);
        return e.code;
    }
    double first = 0, best = 1e30;
    size_t tokens = 0, lines = 0;
    for (int r = 0; r < repeat; r++) {
        tokens = lines = 0;
        double s = ft_now();
        size_t i = 0;
        while (i < len) {
            size_t j = whole ? len : i;
            if (!whole)
                while (j < len && buf[j] != '\n') j++;
            int32_t *ids = NULL;
            size_t n = 0;
            if (tok_encode(t, buf + i, j - i, 0, &ids, &n, &e)) {
                fprintf(stderr, "bench_tokenizer: line %zu: %s\n", lines + 1, e.msg);
                return e.code;
            }
            tokens += n;
            lines++;
            free(ids);
            i = j + 1;
        }
        double el = ft_now() - s;
        if (r == 0) first = el;
        if (el < best) best = el;
    }
    double mb = (double)len / 1e6;
    printf("ours  %-40s %8.2f MB %8zu %s %9zu tokens  load %.3f s  first %.3f s (%.2f MB/s)  best %.3f s (%.2f MB/s)\n",
           argv[1], mb, lines, whole ? "text " : "lines", tokens, load_s, first, mb / first, best, mb / best);
    free(buf);
    tok_free(t);
    return 0;
}
