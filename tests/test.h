/* test.h: the tiny assertion harness every C test uses.
 * A test binary exits 0 when all checks passed, 1 on any failure, and 77 when
 * it must be skipped (ctest reports that as skipped, never as passed). */
#ifndef FT_TEST_H
#define FT_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_failures = 0, t_checks = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        t_checks++;                                                                  \
        if (!(cond)) {                                                               \
            t_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                               \
    do {                                                                   \
        t_checks++;                                                        \
        if (!(cond)) {                                                     \
            t_failures++;                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* |a - b| <= tol * max(1, |b|) : relative, with an absolute floor near zero */
#define CHECK_CLOSE(a, b, tol)                                                              \
    do {                                                                                    \
        double _a = (a), _b = (b);                                                          \
        t_checks++;                                                                         \
        if (!(fabs(_a - _b) <= (tol) * fmax(1.0, fabs(_b))) || isnan(_a) != isnan(_b)) {   \
            t_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g (tol %g)\n", __FILE__, __LINE__, \
                    #a, _a, _b, (double)(tol));                                             \
        }                                                                                   \
    } while (0)

/* Skip this test: print one line "skipped: <reason>" (the test runner lists these lines) and exit 77,
 * which ctest reports as skipped, never as passed. REASON says what is missing and, where the user can
 * supply it, how. */
static inline void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void t_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("skipped: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(77);
}

static inline const char *t_src(const char *rel, char *buf, size_t n) {
    const char *root = getenv("FT_SOURCE_DIR");
    if (!root) root = ".";
    snprintf(buf, n, "%s/%s", root, rel);
    return buf;
}

/* Path of a small committed asset: tests/fixtures/assets/REL (real public tokenizers, dataset rows and
 * tiny-random-llama; sources, licenses and sha256 in tests/fixtures/assets/PROVENANCE.md). They are part of
 * the checkout, so a missing one is a failure of the test that opens it, never a skip. */
static inline const char *t_asset(const char *rel, char *buf, size_t n) {
    char r[1024];
    snprintf(r, sizeof r, "tests/fixtures/assets/%s", rel);
    return t_src(r, buf, n);
}

/* Path of an asset too large to commit (models/smollm2-135m-instruct/...): $FT_ASSETS/REL, FT_ASSETS
 * defaulting to ../shared/assets (ctest sets it from the CMake cache variable FT_SHARED_ASSETS). When
 * the file is absent the test is skipped (exit 77) with one line naming WHAT and the path tried. */
static inline const char *t_large_asset(const char *rel, const char *what, char *buf, size_t n) {
    const char *root = getenv("FT_ASSETS");
    if (!root || !*root) root = "../shared/assets";
    snprintf(buf, n, "%s/%s", root, rel);
    if (access(buf, R_OK) != 0)
        t_skip("%s (%s); set FT_ASSETS=/path/to/shared/assets (it needs %s) to run it", what, buf, rel);
    return buf;
}

/* The checkpoint dir of fixture model NAME: tests/fixtures/models/NAME, except tiny-random-llama, whose
 * weights are a real Hub checkpoint under tests/fixtures/assets (its tests/fixtures/models dir holds only
 * expected.json). Never NULL. */
static inline const char *t_fixture_model(const char *name, char *buf, size_t n) {
    char rel[256];
    if (strcmp(name, "tiny-random-llama") == 0) return t_asset("models/tiny-random-llama", buf, n);
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s", name);
    return t_src(rel, buf, n);
}

#define TEST_DONE()                                                                        \
    do {                                                                                   \
        if (t_checks == 0) {                                                               \
            fprintf(stderr, "no checks ran\n");                                            \
            return 1;                                                                      \
        }                                                                                  \
        fprintf(stderr, "%d checks, %d failed\n", t_checks, t_failures);                   \
        return t_failures ? 1 : 0;                                                         \
    } while (0)

#endif
