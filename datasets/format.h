/* format: dataset formats -> conversations (SFT) or preference pairs.
 *
 * Contract: a record (one cJSON object) of a named format converts to a
 * ds_conv (SFT: [system] user assistant (user assistant)*, ending with an
 * assistant turn) or a ds_pref (prompt conversation ending with a user turn,
 * plus chosen and rejected assistant texts). A bad record returns FT_EINPUT
 * with a message naming `where` (file:line) and the field, and sets *reason
 * (a ds_skip_reason) so callers can count skips by reason. Formats are
 * detected from the fields of a record (ds_format_detect). Role mapping and
 * the exact rules per format are in docs/datasets.md. oasst rows are not
 * converted here one by one (they form trees): see dataset.h. */
#ifndef DS_FORMAT_H
#define DS_FORMAT_H

#include <cjson/cJSON.h>

#include "finetune/base/util.h"

typedef enum { DS_SYSTEM = 0, DS_USER = 1, DS_ASSISTANT = 2 } ds_role;

typedef struct ds_msg {
    ds_role role;
    char *content; /* owned, valid UTF-8, non-empty */
} ds_msg;

typedef struct ds_conv {
    ds_msg *msgs;
    int n, cap;
    char where[256]; /* "file:line" of the record */
} ds_conv;

typedef struct ds_pref {
    ds_conv prompt; /* ends with a user turn */
    char *chosen, *rejected;
} ds_pref;

typedef enum {
    DS_FMT_AUTO = 0,
    DS_FMT_OPENORCA,
    DS_FMT_METAMATH,
    DS_FMT_MESSAGES,
    DS_FMT_SHAREGPT,
    DS_FMT_ALPACA,
    DS_FMT_PROMPT_COMPLETION,
    DS_FMT_OASST,               /* SFT from oasst trees */
    DS_FMT_ULTRAFEEDBACK,       /* preference formats from here on */
    DS_FMT_ORCA_DPO,
    DS_FMT_PROMPT_CHOSEN_REJECTED,
    DS_FMT_SHAREGPT_PREFERENCE,
    DS_FMT_OPENAI_PREFERENCE,
    DS_FMT_OASST_PREFERENCE,    /* preference pairs from oasst trees */
    DS_FMT_COUNT
} ds_format;

/* Why a record was skipped (index into the stats' counters). */
typedef enum {
    DS_SKIP_JSON = 0,      /* malformed JSON or not an object */
    DS_SKIP_TOO_LONG,      /* line / element over DS_MAX_RECORD */
    DS_SKIP_FIELD,         /* missing or mistyped field */
    DS_SKIP_UTF8,          /* invalid UTF-8 in a text field */
    DS_SKIP_EMPTY_TURN,    /* empty (or whitespace-only) turn */
    DS_SKIP_ROLE,          /* unknown role */
    DS_SKIP_ORDER,         /* roles out of order */
    DS_SKIP_DELETED,       /* oasst: deleted message (with its subtree) */
    DS_SKIP_MISSING_PARENT,/* oasst: parent not in the file (with its subtree) */
    DS_SKIP_UNRANKED,      /* oasst preference: sibling replies without ranks */
    DS_SKIP_NO_REPLY,      /* oasst: tree without any assistant reply */
    DS_SKIP_COUNT
} ds_skip_reason;

const char *ds_skip_reason_name(int reason);
const char *ds_format_name(ds_format f);
int ds_format_from_name(const char *name, ds_format *out, ft_error *e);
int ds_format_is_preference(ds_format f);
/* Detect from a record's fields; `where` names it in the error. */
int ds_format_detect(const cJSON *rec, const char *where, ds_format *out, ft_error *e);

int ds_record_to_conv(ds_format f, const cJSON *rec, const char *where, ds_conv *out, int *reason, ft_error *e);
int ds_record_to_pref(ds_format f, const cJSON *rec, const char *where, ds_pref *out, int *reason, ft_error *e);

/* Conversation helpers (used by oasst and tests). */
void ds_conv_add(ds_conv *c, ds_role role, const char *text);
void ds_conv_free(ds_conv *c);
void ds_pref_free(ds_pref *p);
/* Check [system] user (assistant user)* [assistant]; end_role is the role the
 * last turn must have. Also rejects empty turns. */
int ds_conv_check(const ds_conv *c, ds_role end_role, int *reason, ft_error *e);
const char *ds_role_name(ds_role r);
int ds_utf8_valid(const char *s, size_t n, size_t *bad_off);

#endif
