/* lora_merge: PEFT's merge of a LoRA / DoRA adapter into its base's weights, one tensor at a time: what
 * `finetune merge` (HF model dir out) and `finetune export-gguf --adapter` (GGUF out) share.
 *
 * Contract: lora_merge_check checks everything before a byte is written: every tensor of the base is F32/F16/
 * BF16 (or a bitsandbytes 4-bit linear weight), every decoder linear has the config's shape, and every linear the
 * adapter adapts exists in the base; errors (FT_EINPUT) name the checkpoint, the tensor and what was expected.
 * lora_merge_read then reads one base tensor as fp32 (a 4-bit one dequantized as bitsandbytes does) and, when the
 * adapter adapts it, adds scaling * B A in fp32 (DoRA: then rescales each output row to m / ||W + s B A||, as
 * PEFT's merge does); the tensor's mmapped pages are given back after the read, so memory stays a few times the
 * largest tensor. ad may be NULL (no adapter: the base as it is). */
#ifndef FT_LORA_MERGE_H
#define FT_LORA_MERGE_H

#include "finetune/io/safetensors.h"
#include "lora/lora.h"

/* "model.layers.{l}.{linear}.weight" -> l and linear; 0 if the name is not a decoder linear's weight. */
int lora_merge_linear_name(const char *name, int num_layers, int *layer, ft_linear *which);

/* The checks above; *biggest: the largest tensor's element count (a 4-bit linear counted unpacked). */
int lora_merge_check(const st_model *st, const ft_config *cfg, const lora_adapter *ad, const char *base,
                     const char *adapter, int64_t *biggest, ft_error *e);

/* Scratch for lora_merge_read (zero-initialise; free with lora_merge_scratch_free). */
typedef struct lora_merge_scratch {
    float *a, *b, *row;
} lora_merge_scratch;
void lora_merge_scratch_free(lora_merge_scratch *s);

/* Tensor t of st as fp32 into buf (room for its elements), the adapter's delta folded in; *merged = 1 when it
 * was an adapted linear. base names the checkpoint in errors. */
int lora_merge_read(const st_model *st, const ft_config *cfg, const lora_adapter *ad, const st_tensor_info *t,
                    float *buf, lora_merge_scratch *s, const char *base, int *merged, ft_error *e);

/* The adapter dir's chat template (its tokenizer_config.json's "chat_template" string), malloc'd, or NULL. */
char *lora_adapter_chat_template(const char *adapter_dir);

#endif
