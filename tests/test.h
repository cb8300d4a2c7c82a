/* test.h: the tiny assertion harness every C test uses.
 * A test binary exits 0 when all checks passed, 1 on any failure, and 77 when
 * it must be skipped (ctest reports that as skipped, never as passed). */
#ifndef FT_TEST_H
#define FT_TEST_H

#include <math.h>
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

/* Path of a shared asset (../shared/assets/...), or skip (77) when the assets are absent. */
static inline const char *t_asset(const char *rel, char *buf, size_t n) {
    const char *root = getenv("FT_ASSETS");
    if (!root) root = "../shared/assets";
    snprintf(buf, n, "%s/%s", root, rel);
    return buf;
}

static inline const char *t_src(const char *rel, char *buf, size_t n) {
    const char *root = getenv("FT_SOURCE_DIR");
    if (!root) root = ".";
    snprintf(buf, n, "%s/%s", root, rel);
    return buf;
}

/* The checkpoint dir of fixture model NAME: tests/fixtures/models/NAME, except tiny-random-llama, whose
 * weights are the shared assets' (its fixtures dir holds only expected.json); NULL when those are absent. */
static inline const char *t_fixture_model(const char *name, char *buf, size_t n) {
    char rel[256];
    if (strcmp(name, "tiny-random-llama") == 0) {
        t_asset("models/tiny-random-llama", buf, n);
        return access(buf, F_OK) == 0 ? buf : NULL;
    }
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
