/* The memory plan of a sequence classifier (finetune classify --dry-run): no lm_head and no vocabulary
 * workspace, the head's state counted as trainable in LoRA/QLoRA. H2O-Danube3-4B (../shared/FACTS.md) as a
 * 3-label QLoRA classifier at 2048 tokens must plan to fit a 16 GB T4 with room for batch > 1. */
#include "finetune/model/memplan.h"
#include "test.h"

int main(void) {
    const char *json =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 32000, "
        "\"hidden_size\": 3840, \"intermediate_size\": 10240, \"num_hidden_layers\": 24, \"num_attention_heads\": 32, "
        "\"num_key_value_heads\": 8, \"head_dim\": 120, \"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-5, "
        "\"rope_theta\": 100000.0, \"tie_word_embeddings\": false}";
    ft_config lm, cls;
    ft_error e = {0};
    CHECK(cfg_parse(json, strlen(json), "danube3-4b", &lm, &e) == 0);
    cls = lm;
    CHECK(cfg_set_labels(&cls, 3, NULL, NULL, &e) == 0);
    /* parameters: the lm_head's V x D replaced by the head's 3 x D */
    CHECK(cfg_param_count(&lm) - cfg_param_count(&cls) == (int64_t)32000 * 3840 - 3 * 3840);
    ft_memplan a, b, q2, q4;
    memplan_estimate(&lm, FT_TRAIN_QLORA, 2048, 1, 16, &a);
    memplan_estimate(&cls, FT_TRAIN_QLORA, 2048, 1, 16, &b);
    memplan_estimate(&cls, FT_TRAIN_QLORA, 2048, 2, 16, &q2);
    memplan_estimate(&cls, FT_TRAIN_QLORA, 2048, 4, 16, &q4);
    double gib = 1024.0 * 1024 * 1024;
    fprintf(stderr, "danube3-4b QLoRA 2048 tokens: LM %.2f GiB, classifier %.2f / %.2f / %.2f GiB at batch 1 / 2 / 4\n",
            a.total / gib, b.total / gib, q2.total / gib, q4.total / gib);
    /* no lm_head copy (V x D in 16 bits) and no log-prob workspace */
    CHECK(a.weights - b.weights > 0.9 * 2.0 * 32000 * 3840);
    CHECK(a.activations > b.activations);
    CHECK(b.trainable_params == memplan_lora_params(&cls, 16) + 3 * 3840);
    /* a T4 has 15.1 GiB usable: batch 4 of 2048 tokens fits */
    CHECK(q2.total < 15.0 * gib && q4.total < 15.0 * gib);
    TEST_DONE();
}
