/* recipe: the JSON configuration of a training run, with command-line overrides.
 *
 * A recipe is a JSON object file where `//` line comments and `/ * * /` block
 * comments are allowed (they are stripped outside strings, so URLs survive;
 * line numbers in parse errors stay true). Duplicate keys are refused.
 * Overrides `key=value` use dotted paths into nested objects (`lora.r=8`,
 * `optim.lr=2e-5`); the value is JSON when it parses as JSON (numbers,
 * true/false, null, arrays, objects), else a plain string.
 *
 * Typed getters take a default and RECORD every key they read (whether present
 * or defaulted). A JSON null counts as absent (the default applies). After the
 * trainer read all it knows, rcp_check_unused fails naming every key present in
 * the recipe that nobody read, with a "did you mean" among the read keys, so a
 * typo never silently falls back to a default. rcp_dump_resolved gives the
 * effective configuration (recipe + overrides + defaults that were read).
 *
 * Paths (rcp_get_path*) are relative to the recipe file's directory unless
 * absolute; a value set by a command-line override is relative to the current
 * directory (where the user typed it); defaults are returned unchanged.
 * Strings returned by getters point into the recipe (or are the default
 * pointer) and stay valid until rcp_free or the next override of that key. */
#ifndef FT_RECIPE_H
#define FT_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"

typedef struct rcp rcp;

/* Load and parse a recipe file. */
int rcp_load(const char *path, rcp **out, ft_error *e);
/* Parse recipe text held in memory; `name` names it in errors, base_dir
 * anchors relative paths (NULL or "" = current directory). */
int rcp_parse(const char *text, const char *name, const char *base_dir, rcp **out, ft_error *e);
/* An empty recipe (a run configured by overrides only). */
rcp *rcp_new(void);
void rcp_free(rcp *r);

/* Apply one "key=value" override. */
int rcp_override(rcp *r, const char *kv, ft_error *e);

/* Strip // and block comments outside strings in place (replaced by spaces,
 * newlines kept). Fails on an unterminated block comment (names the line). */
int rcp_strip_comments(char *text, const char *name, ft_error *e);

/* 1 when the key is present and not null. Does not count as reading it. */
int rcp_has(const rcp *r, const char *key);

/* Typed getters. Each returns FT_OK (value or default in *out) or FT_EINPUT
 * when the key holds the wrong type ("recipe.json: key 'lora.r': expected an
 * integer, got string"). Integers must be integral JSON numbers. */
int rcp_get_int(rcp *r, const char *key, int def, int *out, ft_error *e);
int rcp_get_i64(rcp *r, const char *key, int64_t def, int64_t *out, ft_error *e);
int rcp_get_float(rcp *r, const char *key, double def, double *out, ft_error *e);
int rcp_get_bool(rcp *r, const char *key, int def, int *out, ft_error *e);
/* def may be NULL (then *out is NULL when absent). */
int rcp_get_string(rcp *r, const char *key, const char *def, const char **out, ft_error *e);
/* A string or an array of strings. *out is a malloc'd array of pointers into
 * the recipe (free the array only); def/ndef is the default list. */
int rcp_get_string_list(rcp *r, const char *key, const char *const *def, size_t ndef, const char ***out,
                        size_t *n, ft_error *e);
/* A path string resolved against the recipe's directory; *out is malloc'd
 * (NULL when absent and def is NULL). */
int rcp_get_path(rcp *r, const char *key, const char *def, char **out, ft_error *e);
/* A path or list of paths; *out is a malloc'd array of malloc'd strings (free with rcp_free_list). */
int rcp_get_path_list(rcp *r, const char *key, char ***out, size_t *n, ft_error *e);
void rcp_free_list(char **v, size_t n);
/* Any value, as cJSON text (malloc'd, NULL when absent); marks the whole subtree read. */
int rcp_get_json(rcp *r, const char *key, char **out, ft_error *e);

/* Fail naming every present key that no getter read. */
int rcp_check_unused(const rcp *r, ft_error *e);
/* Effective configuration as pretty JSON (malloc'd). */
char *rcp_dump_resolved(const rcp *r);
/* The name used in errors (file path, or "recipe"). */
const char *rcp_name(const rcp *r);

#endif
