/* modelpath: see modelpath.h. */
#include "finetune/model/modelpath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/gguf.h"
#include "finetune/io/gguf_model.h"

int modelpath_is_gguf(const char *path) { return path && gguf_is_gguf_path(path); }

int modelpath_tokenizer(const char *path, ft_tokenizer **out, ft_error *e) {
    *out = NULL;
    if (!modelpath_is_gguf(path)) return tok_load(path, out, e);
    gguf_model *g = NULL;
    char *tj = NULL, *cj = NULL;
    int rc = gguf_model_open(path, &g, e);
    if (!rc) rc = gguf_model_tokenizer_json(g, &tj, e);
    if (!rc) rc = gguf_model_tokenizer_config_json(g, &cj, e);
    gguf_model_close(g);
    if (!rc) {
        size_t n = strlen(path) + 32;
        char *where = ft_xmalloc(n);
        snprintf(where, n, "%s (tokenizer)", path);
        rc = tok_load_texts(tj, strlen(tj), cj, strlen(cj), where, out, e);
        free(where);
    }
    free(tj);
    free(cj);
    return rc;
}

/* The chat template of one GGUF file (NULL when it has none). */
static int gguf_template(const char *path, tmpl **out, ft_error *e) {
    gguf_model *g = NULL;
    char *text = NULL;
    int rc = gguf_model_open(path, &g, e);
    if (!rc) rc = gguf_model_chat_template(g, &text, e);
    gguf_model_close(g);
    if (!rc && text) {
        size_t n = strlen(path) + 32;
        char *where = ft_xmalloc(n);
        snprintf(where, n, "%s tokenizer.chat_template", path);
        rc = tmpl_from_jinja(text, where, out, e);
        free(where);
    }
    free(text);
    return rc;
}

int modelpath_template(const char *name, const char *const *paths, int n, const char *fallback, tmpl **out,
                       ft_error *e) {
    *out = NULL;
    if (name && strcmp(name, "auto") != 0) return tmpl_resolve(name, paths, n, fallback, out, e);
    for (int i = 0; i < n; i++) {
        if (!paths[i]) continue;
        int rc = modelpath_is_gguf(paths[i]) ? gguf_template(paths[i], out, e) : tmpl_auto(&paths[i], 1, out, e);
        if (rc || *out) return rc;
    }
    return fallback ? tmpl_resolve(fallback, NULL, 0, NULL, out, e) : FT_OK;
}
