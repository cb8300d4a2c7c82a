/* metrics: the run's metrics file and the live progress line.
 *
 * metrics.jsonl: one JSON object per line and per event, always with "step"
 * first, then the numbers the trainer adds in order ("epoch", "loss", "lr",
 * "grad_norm", "tokens_per_s", "mem_gib", "eval_loss", "eval_ppl", or any
 * other key such as DPO's "rewards/chosen"). Each line is flushed as written;
 * a non-finite value is written as null (JSON has no NaN). On resume from step
 * S the file is first cut to the records with step <= S (torn or unparsable
 * lines dropped, rewritten atomically), so a resumed run's file equals an
 * uninterrupted run's, provided the trainer writes step S's records before
 * saving the checkpoint of step S.
 *
 *   mx_log *m; mx_open(run_dir, resume_step_or_-1, &m, &e);
 *   mx_begin(m, step); mx_add(m, "loss", 2.3); mx_add(m, "lr", 1e-5); mx_write(m, &e);
 *
 * Progress (mx_term): on a terminal, ONE line rewritten in place (\r + clear to
 * end of line), cut to the terminal width:
 *   step 12/100 | loss 2.3456 | lr 1.00e-05 | gnorm 1.23 | 1234 tok/s | ETA 1m23s | mem 1.2 GiB
 * plus caller fields (e.g. "acc 0.75"). Not on a terminal: that same text as a
 * plain line every `every` steps (and on the first and last step). mx_print
 * writes a plain line (eval results, summary) without garbling the live line. */
#ifndef FT_METRICS_H
#define FT_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "finetune/base/util.h"

/* ---- metrics.jsonl ---- */
typedef struct mx_log mx_log;
/* resume_step < 0: start a new (empty) file; >= 0: keep records with step <= resume_step. Either way the
 * old file is replaced by temp file + rename, never truncated in place; records are then appended. */
int mx_open(const char *run_dir, int64_t resume_step, mx_log **out, ft_error *e);
void mx_close(mx_log *m);
/* m may be NULL (a data-parallel rank other than 0 keeps no log): mx_begin, mx_add and mx_write do nothing. */
void mx_begin(mx_log *m, int64_t step);
/* Add a named number to the current record (a key added twice keeps the last value). */
void mx_add(mx_log *m, const char *key, double v);
int mx_write(mx_log *m, ft_error *e);
/* Rewrite a metrics file with only the records with step <= max_step (temp file + rename; used by mx_open). */
int mx_truncate_file(const char *path, int64_t max_step, ft_error *e);

/* ---- progress ---- */
typedef struct mx_field {
    const char *label; /* "acc" */
    double value;
    const char *fmt; /* printf format for value, NULL = "%.4g" */
} mx_field;

typedef struct mx_progress_info {
    int64_t step, total_steps; /* total <= 0: unknown (no ETA) */
    double loss, lr, grad_norm, tokens_per_s, mem_gib; /* NAN = not shown */
    const mx_field *extra;
    int n_extra;
} mx_progress_info;

typedef struct mx_term {
    FILE *out;
    int tty;   /* rewrite one live line */
    int every; /* plain-line period when not a terminal */
    int live;  /* a live line is on screen */
    int width; /* terminal columns */
    double t0;
    int64_t step0;
    int started;
} mx_term;

/* out: usually stderr; tty: -1 = detect with isatty; every: plain-line period (>= 1). */
void mx_term_init(mx_term *t, FILE *out, int tty, int every);
void mx_progress(mx_term *t, const mx_progress_info *p);
/* A plain line (newline added); clears the live line first. */
void mx_print(mx_term *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* End the live line (newline) so later output starts clean. */
void mx_term_finish(mx_term *t);

/* The progress text (no \r, no newline); eta_s < 0 = unknown. Returns buf. */
char *mx_format_progress(char *buf, size_t n, const mx_progress_info *p, double eta_s);
/* "45s", "1m23s", "2h05m", "3d04h". */
char *mx_format_duration(char *buf, size_t n, double seconds);

#endif
