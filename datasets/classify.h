/* classify: rows of a classification dataset -> token ids + target, for `finetune classify` / `predict`.
 *
 * Contract: ds_cls_read reads a whole file (.jsonl / .json / .jsonl.gz / .csv; CSV is RFC 4180 with quoted
 * multi-line fields, read with libcsv) in one of two layouts:
 *   - DS_CLS_TEXT: one text column/field and one label column/field (a label name mapped through
 *     o->labels, or an index < num_labels; a soft label is a JSON array of num_labels probabilities summing
 *     to 1 within 1e-3; with num_labels == 1 the label is a number: regression);
 *   - DS_CLS_LMSYS (Kaggle's LMSYS Chatbot Arena layout): columns id, prompt, response_a, response_b,
 *     winner_model_a, winner_model_b, winner_tie (names remappable), prompt/response_* holding JSON-encoded
 *     lists of turns that may hold null (read as the empty string, counted); the three winner columns must
 *     be one-hot 0/1 (labels 0 = a, 1 = b, 2 = tie). The input is rendered through o->pair_template, whose
 *     placeholders {prompt}, {response_a}, {response_b} take the turns joined by "\n"; each part is
 *     truncated to its share of max_length (prompt_share, response_share of the token budget left after the
 *     template's own tokens and EOS; a part's unused share goes to the others; each part keeps its start),
 *     every truncated part counted.
 * Each example starts with what the tokenizer's post-processor puts before a text (BOS for Llama/Mistral,
 * as tokenizer(text) in transformers; its own suffix, if any, follows the text) and ends with the
 * tokenizer's EOS when add_eos (the pooled token is then always EOS, as in the Kaggle solutions);
 * max_length counts them. The template's text and each part are tokenized separately (tok_encode for
 * the first piece, tok_encode_cont for the rest, the boundaries moved to where pre-tokenizers split),
 * so the ids equal those of the whole rendered text, without truncation, for the tokenizers we test (docs/datasets.md, "Classification data"); special tokens written in the data are
 * matched as transformers matches them. Shares are relative weights (only their ratio matters). Rows without labels are accepted only when !o->require_labels (predict on test.csv):
 * then has_label = 0. A bad row (unparsable JSON list, missing column, label not one-hot or unknown) is
 * FT_EINPUT naming file:line[:column] and the field with DS_BAD_FAIL, or counted in stats.skipped with
 * DS_BAD_SKIP. Swapping (o->swap): DS_CLS_SWAP_HALF swaps response_a/response_b and labels 0<->1 on a
 * seeded random half of the rows (training augmentation), DS_CLS_SWAP_ALL on every row (test-time
 * augmentation; the caller maps the predicted probabilities back with ds_cls_unswap_probs). Order of the
 * returned examples = order of the rows in the file. Nothing is dropped silently: rows == n + skipped. */
#ifndef DS_CLASSIFY_H
#define DS_CLASSIFY_H

#include <stdint.h>

#include "datasets/dataset.h"
#include "datasets/tokenizer/tokenizer.h"

typedef enum { DS_CLS_TEXT = 0, DS_CLS_LMSYS = 1 } ds_cls_layout;
typedef enum { DS_CLS_SWAP_NONE = 0, DS_CLS_SWAP_HALF = 1, DS_CLS_SWAP_ALL = 2 } ds_cls_swap;

typedef struct ds_cls_opts {
    ds_cls_layout layout;
    int num_labels;           /* 1 = regression */
    const char *const *labels;/* [num_labels] label names (id2label order); NULL: labels must be indices */
    /* DS_CLS_TEXT field/column names (NULL: "text", "label", "id") */
    const char *text_field, *label_field, *id_field;
    /* DS_CLS_LMSYS column names (NULL: the Kaggle names) */
    const char *prompt_col, *response_a_col, *response_b_col, *id_col;
    const char *winner_cols[3];
    const char *pair_template; /* NULL: DS_CLS_DEFAULT_PAIR_TEMPLATE */
    float prompt_share, response_share; /* 0: 0.2 and 0.4 */
    int max_length;            /* token budget per example (<= 0: no limit) */
    int add_eos;
    ds_cls_swap swap;
    uint64_t seed;             /* for DS_CLS_SWAP_HALF */
    int require_labels;
    ds_on_bad on_bad;
} ds_cls_opts;

#define DS_CLS_DEFAULT_PAIR_TEMPLATE "<prompt>: {prompt}\n\n<response_a>: {response_a}\n\n<response_b>: {response_b}"

typedef struct ds_cls_example {
    int32_t *ids;
    int n;
    int has_label;
    float *probs;   /* [num_labels] target distribution (one-hot or soft); NULL for regression */
    float value;    /* regression target (num_labels == 1) */
    int swapped;    /* a/b swapped (LMSYS) */
    char id[128];   /* the row's id column, else its 0-based row number */
    char where[256];/* file:line */
} ds_cls_example;

typedef struct ds_cls_stats {
    long rows, examples, skipped;
    long truncated_parts; /* prompt/response parts (or texts) cut to their budget */
    long nulls;           /* null turns read as "" */
    long surrogates;      /* lone UTF-16 surrogate escapes in the JSON lists, read as U+FFFD */
    long swapped;
    char first_skip[512];
} ds_cls_stats;

int ds_cls_layout_parse(const char *s, ds_cls_layout *out, ft_error *e);
int ds_cls_read(const char *path, const ds_cls_opts *o, const ft_tokenizer *tok, ds_cls_example **out, int *n,
                ds_cls_stats *st, ft_error *e);
void ds_cls_free(ds_cls_example *x, int n);
/* Probabilities predicted on a DS_CLS_SWAP_ALL input, mapped back to the unswapped label order. */
void ds_cls_unswap_probs(float *probs, int num_labels);

#endif
