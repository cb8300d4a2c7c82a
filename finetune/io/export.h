/* export: the files around the weights that make an output directory a complete HF model.
 *
 * export_generation_config writes generation_config.json (the bos/eos/pad ids of config.json; -1 = absent).
 * export_tokenizer copies tokenizer.json and special_tokens_map.json from the tokenizer
 * directory and writes tokenizer_config.json (the source's, or a minimal one) with
 * "chat_template" set to the Jinja of the template we trained with, so transformers'
 * apply_chat_template renders exactly what the model saw. The tokenizer directory may be a GGUF
 * model file: both files are then built from its metadata (io/gguf_model). */
#ifndef FT_EXPORT_H
#define FT_EXPORT_H

#include "finetune/base/util.h"

int export_generation_config(int bos_token_id, int eos_token_id, int pad_token_id, const char *out_dir, ft_error *e);
/* The same with the chat template's end-of-turn ids beside EOS: "eos_token_id" becomes the list
 * [eos, eot...] (duplicates and negatives dropped) that transformers' generate() stops on. */
int export_generation_config_eot(int bos_token_id, int eos_token_id, const int *eot_ids, int n_eot, int pad_token_id,
                                 const char *out_dir, ft_error *e);
/* 1 when export_tokenizer has something to copy: dir holds tokenizer.json, or is a GGUF file with a tokenizer. */
int export_has_tokenizer(const char *dir);
/* chat_template may be NULL (keep the source's). */
int export_tokenizer(const char *tok_dir, const char *out_dir, const char *chat_template, ft_error *e);

#endif
