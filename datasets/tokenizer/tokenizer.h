/* tokenizer: Hugging Face tokenizer.json in C (BPE: SentencePiece-style and GPT-2 byte-level).
 *
 * tok_load reads DIR/tokenizer.json (and tokenizer_config.json for bos/eos
 * names when present). tok_encode gives exactly the ids HF `tokenizers`
 * gives for Tokenizer.encode(text, add_special_tokens=special): added and
 * special tokens are matched first, then normalizer, pre-tokenizer, BPE,
 * and, when special is set, the post-processor's BOS/EOS. tok_decode is
 * Tokenizer.decode(ids, skip_special_tokens=skip_special). */
#ifndef FT_TOKENIZER_H
#define FT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/base/util.h"

typedef struct ft_tokenizer ft_tokenizer;

int tok_load(const char *dir, ft_tokenizer **out, ft_error *e);
/* Load from tokenizer.json text; `where` names the source in errors. */
int tok_load_json(const char *json, size_t len, const char *where, ft_tokenizer **out, ft_error *e);
void tok_free(ft_tokenizer *t);

/* Encode len bytes of UTF-8 text. *ids is malloc'd (caller frees), *n its length. */
int tok_encode(const ft_tokenizer *t, const char *text, size_t len, int special, int32_t **ids, size_t *n,
               ft_error *e);
/* As tok_encode(special = 0) for text that continues a text already begun: no start-of-text prefix is put
 * before it (a Prepend("▁") normalizer, Metaspace's prepend_scheme first/always, ByteLevel's
 * add_prefix_space), as none is in the middle of a text. Where the pre-tokenizer splits between two pieces
 * (before a space, at an added token), tok_encode(A) + tok_encode_cont(B) == tok_encode(A B). */
int tok_encode_cont(const ft_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, ft_error *e);
/* Decode to a malloc'd NUL-terminated UTF-8 string. */
int tok_decode(const ft_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text, ft_error *e);

int tok_vocab_size(const ft_tokenizer *t);     /* including added tokens */
int32_t tok_token_id(const ft_tokenizer *t, const char *token); /* -1 if absent */
const char *tok_token_str(const ft_tokenizer *t, int32_t id);   /* NULL if out of range */
int32_t tok_bos_id(const ft_tokenizer *t); /* -1 if none */
int32_t tok_eos_id(const ft_tokenizer *t); /* -1 if none */

#endif
