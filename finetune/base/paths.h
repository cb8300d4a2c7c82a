/* paths: canonical spellings of paths, and the guard that keeps an output off its inputs.
 *
 * ft_path_canon: the absolute, symlink-free spelling of a path that need not exist yet: realpath() of
 * its longest existing prefix, then the remaining (non-existent) components with "." dropped and ".."
 * taking one component back, as mkdir -p would walk them. Relative paths are taken from the current
 * directory. So "a/../b", "./b/" and a symlink to b all come out as the same string.
 *
 * ft_path_relation: how canonical a stands to canonical b, component-wise: /x/model and /x/model2
 * are apart, /x/model/run lies inside /x/model.
 *
 * ft_path_guard_output: refuse (FT_EINPUT) an output path that is, lies inside or contains any of
 * the given inputs, with one message naming both paths and what each is, e.g.
 *   "output_dir /x/m is the model directory /x/m (it would be overwritten); choose another output_dir"
 * (a path whose canonical spelling differs from the one given is shown with it in parentheses). */
#ifndef FT_PATHS_H
#define FT_PATHS_H

#include "finetune/base/util.h"

/* Canonical spelling of path into a fresh heap string. */
int ft_path_canon(const char *path, char **out, ft_error *e);

typedef enum ft_path_rel {
    FT_PATH_APART = 0, /* neither is the other nor lies inside it */
    FT_PATH_SAME,      /* the same path */
    FT_PATH_INSIDE,    /* a lies inside b */
    FT_PATH_CONTAINS,  /* b lies inside a */
} ft_path_rel;

/* The relation of a to b after canonicalising both. */
int ft_path_relation(const char *a, const char *b, ft_path_rel *rel, ft_error *e);

/* One input of a command: its path and what it is ("model directory", "data file", ...). NULL paths
 * are skipped. */
typedef struct ft_path_input {
    const char *path;
    const char *what;
} ft_path_input;

/* FT_EINPUT when out (named out_what, e.g. "output_dir" or "--out") is, lies inside or contains one of
 * the n inputs; FT_OK when it is apart from all of them. */
int ft_path_guard_output(const char *out, const char *out_what, const ft_path_input *in, int n, ft_error *e);

#endif
