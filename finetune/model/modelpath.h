/* modelpath: what a model path gives besides weights and config, whether it is a Hugging Face
 * directory or a GGUF model file.
 *
 * Contract: modelpath_tokenizer loads the tokenizer of a directory (tok_load: tokenizer.json and
 * tokenizer_config.json) or of a GGUF file (the same two files built from its metadata by
 * io/gguf_model, in memory). modelpath_template is tmpl_resolve over such paths: "auto" (or NULL) takes
 * the first path with a chat template of its own (a directory's tokenizer_config.json /
 * chat_template.jinja, a GGUF file's tokenizer.chat_template), else the built-in fallback (NULL:
 * *out stays NULL); "none": *out = NULL; another name: that built-in. (Weights and config need no
 * wrapper: st_model_open and cfg_load take a GGUF file themselves.) */
#ifndef FT_MODELPATH_H
#define FT_MODELPATH_H

#include "datasets/template.h"
#include "datasets/tokenizer/tokenizer.h"
#include "finetune/base/util.h"

int modelpath_is_gguf(const char *path);
int modelpath_tokenizer(const char *path, ft_tokenizer **out, ft_error *e);
int modelpath_template(const char *name, const char *const *paths, int n, const char *fallback, tmpl **out,
                       ft_error *e);

#endif
