/* gguf_export: the parts of a llama.cpp GGUF model file made from a Hugging Face checkpoint, laid out as
 * llama.cpp's convert_hf_to_gguf.py writes them for LlamaForCausalLM / MistralForCausalLM (architecture
 * "llama") and Qwen2ForCausalLM ("qwen2"). `finetune export-gguf` (finetune/cli/export_gguf.c) drives it
 * through gguf_write; this module knows nothing of the model code (the hyper-parameters come in a struct).
 *
 * Contract:
 * - Types: --type f16 | bf16 | q8_0 | q4_0 gives general.file_type (llama.cpp's LlamaFileType: 1, 32, 7, 2)
 *   and the type of the 2-D weights. 1-D tensors, norms and biases stay F32 (convert_hf_to_gguf's rule); a
 *   weight whose rows are not a whole number of 32-element blocks falls back to F16, as gguf-py's quantizer
 *   does (QuantError). Conversion: F16 and BF16 round to nearest even (BF16 quiets NaN as gguf-py does), Q8_0
 *   and Q4_0 are ggml_quantize's, byte for byte gguf-py's.
 * - Names: model.embed_tokens -> token_embd, model.norm -> output_norm, lm_head -> output,
 *   model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
 *   mlp.{gate,up,down}_proj} -> blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
 *   ffn_up, ffn_down}, .weight / .bias kept. Dims are ggml's (the HF shape reversed).
 * - Q/K: for "llama", llama.cpp's rotary pairs are adjacent, HF's are half a head apart, so the rows of q_proj
 *   (n_head heads) and k_proj (n_kv_head heads) and their biases are permuted: within each head of size hd,
 *   out row 2i + j = in row j * hd/2 + i (i < hd/2, j < 2). "qwen2" (NEOX rope) is written unpermuted.
 * - Vocabulary from tokenizer.json (BPE) + tokenizer_config.json: byte_fallback BPE (SentencePiece-style:
 *   Llama-2, Mistral) is tokenizer.ggml.model "llama", pre "default", with scores and token types (byte
 *   tokens <0xXX> BYTE, special added tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL);
 *   byte-level BPE is "gpt2" with merges, and pre named from the pre-tokenizer (SmolLM's digits + byte-level:
 *   "smollm", GPT-2's: "gpt-2", Llama-3's split: "llama-bpe", Qwen2's: "qwen2"; another is an error).
 *   Ids the tokenizer lacks up to the config's vocab_size are "[PAD<id>]" UNUSED. Scores: tokenizer.json has
 *   none, so a token made by merge number r gets -r (0 for the rest): llama.cpp's SentencePiece tokenizer
 *   merges the highest score first, which then replays the BPE merges in order (convert_hf_to_gguf, without
 *   a tokenizer.model, writes -1000 for every token). Special ids as gguf-py's SpecialVocab finds them
 *   (tokenizer_config's bos/eos/unk/sep/pad/cls/mask token text, else config.json's *_token_id), eot from the
 *   caller (the chat template's end-of-turn token), add_bos/add_eos from the post-processor or
 *   tokenizer_config (add_bos is always written: false when nothing says so), the chat template as
 *   tokenizer.chat_template.
 * Errors are FT_EINPUT naming the file / tensor and what was wrong. */
#ifndef FT_GGUF_EXPORT_H
#define FT_GGUF_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"
#include "finetune/io/gguf_write.h"

/* llama.cpp's LlamaFileType values (general.file_type) */
enum { GGUF_FILE_F32 = 0, GGUF_FILE_F16 = 1, GGUF_FILE_Q4_0 = 2, GGUF_FILE_Q8_0 = 7, GGUF_FILE_BF16 = 32 };

/* "f16" | "bf16" | "q8_0" | "q4_0" -> file type and the 2-D weights' GGML_TYPE_*. */
int gguf_export_parse_type(const char *s, int *file_type, int *ggml_type, ft_error *e);

/* token types (llama.cpp's llama_token_type) */
enum { GGUF_TOK_NORMAL = 1, GGUF_TOK_UNKNOWN = 2, GGUF_TOK_CONTROL = 3, GGUF_TOK_USER_DEFINED = 4,
       GGUF_TOK_UNUSED = 5, GGUF_TOK_BYTE = 6 };

typedef struct gguf_export_hparams {
    const char *arch; /* "llama" or "qwen2" */
    const char *name; /* general.name */
    int file_type;
    int64_t n_params;                     /* for general.size_label */
    int context_length, embedding_length, block_count, feed_forward_length, head_count, head_count_kv;
    int head_dim;                         /* key/value_length written when != embedding_length / head_count */
    float rope_freq_base, rms_norm_eps;
    int vocab_size;                       /* llama: {arch}.vocab_size */
    const char *rope_scaling_type;        /* NULL or "linear" */
    float rope_scaling_factor;
    int sliding_window;                   /* > 0: {arch}.attention.sliding_window */
} gguf_export_hparams;

/* general.* and {arch}.* keys. */
int gguf_export_hparams_write(gguf_writer *w, const gguf_export_hparams *h, ft_error *e);

/* Special token ids of config.json (-1 = absent): the fallbacks of tokenizer_config's. */
typedef struct gguf_export_ids {
    int bos, eos, unk, sep, pad, cls, mask;
} gguf_export_ids;

/* tokenizer.* keys from tok_dir's tokenizer.json (+ tokenizer_config.json), n_vocab tokens; eot < 0: none;
 * chat_template NULL: none. */
int gguf_export_vocab(gguf_writer *w, const char *tok_dir, int n_vocab, const gguf_export_ids *cfg_ids, int eot,
                      const char *chat_template, ft_error *e);

/* The GGUF name of HF tensor hf into out: 1 written, 0 not a tensor GGUF keeps (rotary_emb.inv_freq),
 * -1 unknown (the caller refuses it). */
int gguf_export_tensor_name(const char *hf, int num_layers, char *out, size_t n);

/* llama.cpp's Q/K permutation of a [rows, cols] row-major tensor (cols 1 for a bias) with n_head heads,
 * in place (tmp: room for one head, rows / n_head * cols floats). rows must be a multiple of 2 * n_head. */
void gguf_export_permute(float *x, int64_t rows, int64_t cols, int n_head, float *tmp);

/* The type a tensor gets in a file whose weights are `weight_type`. */
int gguf_export_tensor_type(const char *gguf_name, int n_dims, int64_t ne0, int weight_type);

/* Convert x (n_dims HF dims, row-major) to the tensor's type and add it to w; *type_out: the type used. */
int gguf_export_add_tensor(gguf_writer *w, const char *gguf_name, const float *x, int n_dims, const int64_t *hf_shape,
                           int weight_type, int *type_out, ft_error *e);

/* llama3 rope: convert_hf_to_gguf's rope_freqs.weight (dim / 2 factors). */
void gguf_export_llama3_rope_factors(int dim, float base, float factor, float low_freq_factor, float high_freq_factor,
                                     int original_max_position, float *out);

#endif
