/* config: the model's config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, and the same three
 * ...ForSequenceClassification: num_labels > 0, from id2label, with label2id, problem_type, pad_token_id).
 *
 * cfg_load reads DIR/config.json and validates every field it uses; an
 * unknown architecture, a missing or mistyped key, or inconsistent sizes give
 * one error naming the file and key (FT_EINPUT). cfg_write writes a config.json
 * that transformers loads. */
#ifndef FT_CONFIG_H
#define FT_CONFIG_H

#include "finetune/base/util.h"

#define FT_MAX_LABELS 64
#define FT_LABEL_LEN 48

typedef enum { FT_ARCH_LLAMA = 0, FT_ARCH_MISTRAL, FT_ARCH_QWEN2 } ft_arch;
typedef enum { FT_ROPE_NONE = 0, FT_ROPE_LINEAR, FT_ROPE_DYNAMIC, FT_ROPE_LLAMA3 } ft_rope_type;

typedef struct ft_config {
    ft_arch arch;
    char architecture[64]; /* "LlamaForCausalLM", ... as written */
    char model_type[32];   /* "llama", "mistral", "qwen2" */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_layers;
    int num_heads;
    int num_kv_heads; /* defaults to num_heads */
    int head_dim;     /* defaults to hidden_size / num_heads */
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    ft_rope_type rope_type;
    float rope_factor;                /* linear, dynamic, llama3 */
    float rope_low_freq_factor;       /* llama3 */
    float rope_high_freq_factor;      /* llama3 */
    int rope_original_max_position;   /* llama3: original_max_position_embeddings */
    int sliding_window;               /* 0 = none */
    int tie_word_embeddings;
    int attention_bias;               /* q/k/v biases (Qwen2: always) */
    int bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
    char torch_dtype[16];             /* "float32", "bfloat16", "float16" or "" */
    float initializer_range;          /* std of transformers' normal init (0.02 when absent) */
    /* Sequence classification (architectures ...ForSequenceClassification): num_labels > 0, the decoder
     * without lm_head and a bias-free `score` [num_labels, hidden] on the last token; 0 for a causal LM. */
    int num_labels;
    char labels[FT_MAX_LABELS][FT_LABEL_LEN]; /* id2label */
    char problem_type[32]; /* "single_label_classification", "multi_label_classification", "regression" or "" */
} ft_config;

/* model_dir may also be a GGUF model file: the config its metadata implies (io/gguf_model). */
/* Turn a causal-LM config into a sequence classifier of n labels (names: NULL gives transformers'
 * LABEL_i); FT_EINPUT when n is out of range or a name is too long or repeated. */
int cfg_set_labels(ft_config *c, int n, const char *const *names, const char *problem_type, ft_error *e);

int cfg_load(const char *model_dir, ft_config *cfg, ft_error *e);
/* Parse from an in-memory JSON text; `where` names the source in errors. */
int cfg_parse(const char *json, size_t len, const char *where, ft_config *cfg, ft_error *e);
/* Write DIR/config.json (atomically). */
int cfg_write(const char *model_dir, const ft_config *cfg, ft_error *e);
/* Number of parameters of the model this config describes. */
int64_t cfg_param_count(const ft_config *cfg);

#endif
