/* gguf_model: a GGUF model file (llama.cpp) seen as a Hugging Face checkpoint.
 *
 * Contract: gguf_model_open opens the file through io/gguf (every header, metadata and tensor bound
 * checked; a corrupt file is an FT_EINPUT error naming it), checks general.architecture ("llama";
 * Mistral and SmolLM GGUFs are written as llama), refuses what the HF model cannot reproduce
 * (rope_freqs.weight: Llama-3.1's rope scaling) and a tensor type it cannot dequantize, and lists
 * every tensor under its Hugging Face name and row-major shape ("blk.3.attn_q.weight" is
 * "model.layers.3.self_attn.q_proj.weight", ne reversed); a tensor a Llama model does not have is
 * an error naming it (never silently dropped). gguf_model_read_f32 dequantizes one tensor to fp32 (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K; io/ggml_types) and un-permutes the rows of q_proj/k_proj exactly as
 * transformers' GGUF loader does (reverse of llama.cpp's convert permute: row h*hd + 2j + i of the
 * file is row h*hd + i*hd/2 + j of the HF weight).
 *
 * The small HF files come from the metadata, as transformers' GGUF integration builds them:
 * config.json (LlamaForCausalLM; tied when output.weight is absent), tokenizer.json and
 * tokenizer_config.json (tokenizer.ggml.model "gpt2": byte-level BPE of tokens + merges with the
 * pre-tokenizer llama.cpp uses for tokenizer.ggml.pre; "llama": SentencePiece-style BPE as transformers'
 * LlamaTokenizer builds it (Metaspace, byte fallback, merges rebuilt from the scores exactly as
 * generate_merges orders them, BOS added unless add_bos_token is false); CONTROL (and, for "llama",
 * UNKNOWN) tokens are special added tokens, USER_DEFINED ones added tokens; bos/eos/unk/pad names,
 * add_bos/add_eos, chat_template), each as a malloc'd JSON text. gguf_model_chat_template gives tokenizer.chat_template (NULL when absent). */
#ifndef FT_GGUF_MODEL_H
#define FT_GGUF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"
#include "finetune/io/gguf.h"

typedef struct gguf_model_tensor {
    char name[96];    /* HF name */
    int ndim;
    int64_t shape[4]; /* row-major (HF) */
    const gguf_tensor *t;
    int unpermute_heads; /* q_proj: num_heads, k_proj: num_kv_heads; 0: rows as stored */
} gguf_model_tensor;

typedef struct gguf_model gguf_model;

int gguf_model_open(const char *path, gguf_model **out, ft_error *e);
/* The same for an image in memory (not copied; buf must outlive the model); name names it in errors. */
int gguf_model_open_memory(const void *buf, size_t len, const char *name, gguf_model **out, ft_error *e);
void gguf_model_close(gguf_model *m);
const char *gguf_model_path(const gguf_model *m);
const gguf_file *gguf_model_file(const gguf_model *m);
size_t gguf_model_count(const gguf_model *m);
const gguf_model_tensor *gguf_model_at(const gguf_model *m, size_t i); /* sorted by name */
const gguf_model_tensor *gguf_model_find(const gguf_model *m, const char *hf_name);
/* n must equal the tensor's element count. */
int gguf_model_read_f32(const gguf_model *m, const gguf_model_tensor *t, float *dst, size_t n, ft_error *e);

/* The HF files (malloc'd NUL-terminated JSON texts, indent 2, newline at the end). */
int gguf_model_config_json(const gguf_model *m, char **json, ft_error *e);
int gguf_model_tokenizer_json(const gguf_model *m, char **json, ft_error *e);
int gguf_model_tokenizer_config_json(const gguf_model *m, char **json, ft_error *e);
/* tokenizer.chat_template (malloc'd) or *text = NULL when the file has none. */
int gguf_model_chat_template(const gguf_model *m, char **text, ft_error *e);

#endif
