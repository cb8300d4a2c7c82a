/* example: a conversation (or preference pair) -> token ids + loss mask,
 * truncated to max_length, with every decision counted.
 *
 * Contract (SFT): ids = tmpl_encode of the conversation; trained[i] = 1 for
 * tokens of assistant turns (all turns, or only the last with loss_last_only).
 * When the sample is longer than max_length and overlong == DS_LONG_DROP it is
 * dropped; with DS_LONG_TRUNCATE: prompt = the tokens before the last
 * assistant turn's first trained token, completion = the rest. First the
 * prompt is cut from the LEFT (its earliest tokens; a leading BOS is kept)
 * but never below min(prompt, max_length/4) tokens; then, if still too long,
 * the completion is cut: keep_start drops its end, keep_end its beginning.
 * A sample left without trained tokens is dropped. Preference pairs follow
 * TRL (keep_start): prompt ids, chosen ids, rejected ids; a pair whose prompt
 * alone fills max_length is dropped; else each completion keeps its first
 * max_length - len(prompt) tokens. */
#ifndef DS_EXAMPLE_H
#define DS_EXAMPLE_H

#include <stdint.h>

#include "datasets/format.h"
#include "datasets/template.h"

typedef enum { DS_TRUNC_KEEP_START = 0, DS_TRUNC_KEEP_END = 1 } ds_trunc;
typedef enum { DS_LONG_TRUNCATE = 0, DS_LONG_DROP = 1 } ds_overlong;

typedef struct ds_example_opts {
    int max_length;     /* <= 0: no limit */
    int loss_last_only; /* 0: loss on every assistant turn */
    ds_trunc trunc;
    ds_overlong overlong;
} ds_example_opts;

typedef struct ds_example {
    int32_t *ids;
    uint8_t *trained; /* 1 = in the loss */
    int n;
    char where[256];
} ds_example;

typedef struct ds_pref_example {
    int32_t *prompt, *chosen, *rejected;
    int n_prompt, n_chosen, n_rejected;
    char where[256];
} ds_pref_example;

typedef struct ds_example_stats {
    long examples;        /* kept */
    long tokens;          /* in kept examples */
    long trained_tokens;
    long truncated;
    long dropped_too_long;   /* overlong == drop, or a pair's prompt fills max_length */
    long dropped_no_trained; /* nothing left to learn after truncation */
    long dropped_mismatch;   /* pair: prompt tokens differ between chosen and rejected renderings */
} ds_example_stats;

int ds_trunc_parse(const char *s, ds_trunc *out, ft_error *e);
int ds_overlong_parse(const char *s, ds_overlong *out, ft_error *e);

/* *kept = 0 when the example was dropped (counted in st; out untouched). */
int ds_build_example(const tmpl *t, const ds_conv *c, const ft_tokenizer *tok, const ds_example_opts *o,
                     ds_example *out, int *kept, ds_example_stats *st, ft_error *e);
void ds_example_free(ds_example *x);

int ds_build_pref_example(const tmpl *t, const ds_pref *p, const ft_tokenizer *tok, const ds_example_opts *o,
                          ds_pref_example *out, int *kept, ds_example_stats *st, ft_error *e);
void ds_pref_example_free(ds_pref_example *x);

#endif
