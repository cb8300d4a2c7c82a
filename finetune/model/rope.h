/* rope: rotary-embedding frequencies for every scaling type of config.json.
 *
 * rope_inv_freq fills inv_freq[head_dim/2] the way transformers'
 * modeling_rope_utils does (default, linear, dynamic NTK, llama3), in fp32
 * like HF. seq_len (max position + 1 of the current forward) matters only for
 * dynamic scaling, which changes the base once seq_len exceeds
 * max_position_embeddings. *mscale receives the cos/sin multiplier (1 here). */
#ifndef FT_ROPE_H
#define FT_ROPE_H

#include "finetune/model/config.h"

void rope_inv_freq(const ft_config *cfg, int64_t seq_len, float *inv_freq, float *mscale);

#endif
