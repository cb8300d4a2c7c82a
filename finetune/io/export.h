/* export: the files around the weights that make an output directory a complete HF model.
 *
 * export_generation_config writes generation_config.json (bos/eos/pad from config.json).
 * export_tokenizer copies tokenizer.json and special_tokens_map.json from the tokenizer
 * directory and writes tokenizer_config.json (the source's, or a minimal one) with
 * "chat_template" set to the Jinja of the template we trained with, so transformers'
 * apply_chat_template renders exactly what the model saw. */
#ifndef FT_EXPORT_H
#define FT_EXPORT_H

#include "config.h"

int export_generation_config(const ft_config *cfg, const char *out_dir, ft_error *e);
/* chat_template may be NULL (keep the source's). */
int export_tokenizer(const char *tok_dir, const char *out_dir, const char *chat_template, ft_error *e);

#endif
