/* memplan: predicted peak accelerator memory of a training run, before anything is loaded.
 *
 * The plan follows the precision policy of docs/ARCHITECTURE.md: fp32 master
 * weights, gradients and AdamW moments for trainable parameters, 16-bit
 * compute weights and activations, per-layer activation recomputation (only
 * each layer's input is kept), chunked lm_head + loss. It is an estimate that
 * `finetune info` and `--dry-run` print; the GPU tests compare it with the
 * measured peak. */
#ifndef FT_MEMPLAN_H
#define FT_MEMPLAN_H

#include "finetune/model/config.h"

typedef enum { FT_TRAIN_FULL = 0, FT_TRAIN_LORA, FT_TRAIN_QLORA } ft_train_mode;

typedef struct ft_memplan {
    double weights;     /* frozen + compute copies of weights */
    double trainable;   /* master weights, gradients and optimizer state of trainable params */
    double activations; /* saved layer inputs + one layer's working set + loss chunk */
    double overhead;    /* runtime, workspace */
    double total;
    int64_t trainable_params;
} ft_memplan;

/* lora_r: rank for LoRA/QLoRA (all linear layers targeted). A classifier config (num_labels > 0) has no
 * lm_head and no vocabulary workspace; its score head trains whole in LoRA/QLoRA too. */
void memplan_estimate(const ft_config *cfg, ft_train_mode mode, int64_t seq_len, int64_t batch, int lora_r,
                      ft_memplan *out);
/* Parameters of a LoRA of rank r on every linear layer. */
int64_t memplan_lora_params(const ft_config *cfg, int r);

#endif
