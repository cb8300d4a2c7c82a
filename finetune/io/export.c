#include "finetune/io/export.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "finetune/io/gguf.h"
#include "finetune/io/gguf_model.h"

static int write_json(const char *dir, const char *name, cJSON *obj, ft_error *e) {
    char *text = cJSON_Print(obj);
    char *path = ft_path_join(dir, name);
    size_t n = strlen(text);
    text = ft_xrealloc(text, n + 2);
    text[n] = '\n';
    text[n + 1] = 0;
    int rc = ft_write_file_atomic(path, text, n + 1, e);
    free(text);
    free(path);
    return rc;
}

int export_generation_config(int bos_token_id, int eos_token_id, int pad_token_id, const char *out_dir, ft_error *e) {
    return export_generation_config_eot(bos_token_id, eos_token_id, NULL, 0, pad_token_id, out_dir, e);
}

int export_generation_config_eot(int bos_token_id, int eos_token_id, const int *eot_ids, int n_eot, int pad_token_id,
                                 const char *out_dir, ft_error *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "_from_model_config", 1);
    if (bos_token_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", bos_token_id);
    int ids[16], n = 0;
    if (eos_token_id >= 0) ids[n++] = eos_token_id;
    for (int i = 0; i < n_eot && n < 16; i++) {
        int dup = eot_ids[i] < 0;
        for (int k = 0; k < n && !dup; k++) dup = ids[k] == eot_ids[i];
        if (!dup) ids[n++] = eot_ids[i];
    }
    if (n == 1) cJSON_AddNumberToObject(o, "eos_token_id", ids[0]);
    else if (n > 1) cJSON_AddItemToObject(o, "eos_token_id", cJSON_CreateIntArray(ids, n));
    if (pad_token_id >= 0) cJSON_AddNumberToObject(o, "pad_token_id", pad_token_id);
    int rc = write_json(out_dir, "generation_config.json", o, e);
    cJSON_Delete(o);
    return rc;
}

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, int required, ft_error *e) {
    char *src = ft_path_join(src_dir, name), *dst = ft_path_join(dst_dir, name);
    int rc = FT_OK;
    if (ft_file_exists(src)) {
        char *data = NULL;
        size_t len = 0;
        rc = ft_read_file(src, &data, &len, e);
        if (!rc) rc = ft_write_file_atomic(dst, data, len, e);
        free(data);
    } else if (required) {
        rc = ft_fail(e, FT_EINPUT, "%s: not found", src);
    }
    free(src);
    free(dst);
    return rc;
}

/* The tokenizer files of a GGUF model file, built from its metadata (io/gguf_model). */
static int export_gguf_tokenizer(const char *path, const char *out_dir, const char *chat_template, ft_error *e) {
    gguf_model *g = NULL;
    char *tj = NULL, *cj = NULL;
    int rc = gguf_model_open(path, &g, e);
    if (!rc) rc = gguf_model_tokenizer_json(g, &tj, e);
    if (!rc) rc = gguf_model_tokenizer_config_json(g, &cj, e);
    gguf_model_close(g);
    char *p = ft_path_join(out_dir, "tokenizer.json");
    if (!rc) rc = ft_write_file_atomic(p, tj, strlen(tj), e);
    free(p);
    cJSON *cfg = rc ? NULL : cJSON_Parse(cj);
    if (cfg && chat_template) {
        cJSON_DeleteItemFromObject(cfg, "chat_template");
        cJSON_AddStringToObject(cfg, "chat_template", chat_template);
    }
    if (cfg) rc = write_json(out_dir, "tokenizer_config.json", cfg, e);
    cJSON_Delete(cfg);
    free(tj);
    free(cj);
    return rc;
}

int export_has_tokenizer(const char *dir) {
    if (gguf_is_gguf_path(dir)) {
        gguf_file *f = NULL;
        int has = gguf_open(dir, &f, NULL) == FT_OK && gguf_find_kv(f, "tokenizer.ggml.model");
        gguf_close(f);
        return has;
    }
    char *p = ft_path_join(dir, "tokenizer.json");
    int has = ft_file_exists(p);
    free(p);
    return has;
}

int export_tokenizer(const char *tok_dir, const char *out_dir, const char *chat_template, ft_error *e) {
    if (gguf_is_gguf_path(tok_dir)) return export_gguf_tokenizer(tok_dir, out_dir, chat_template, e);
    if (strcmp(tok_dir, out_dir) == 0 && !chat_template) return FT_OK;
    int rc = FT_OK;
    if (strcmp(tok_dir, out_dir) != 0) {
        rc = copy_file(tok_dir, out_dir, "tokenizer.json", 1, e);
        if (!rc) rc = copy_file(tok_dir, out_dir, "special_tokens_map.json", 0, e);
        if (!rc) rc = copy_file(tok_dir, out_dir, "tokenizer.model", 0, e);
        if (rc) return rc;
    }
    char *src = ft_path_join(tok_dir, "tokenizer_config.json");
    cJSON *cfg = NULL;
    if (ft_file_exists(src)) {
        char *text = NULL;
        rc = ft_read_file(src, &text, NULL, e);
        if (!rc && !(cfg = cJSON_Parse(text))) rc = ft_fail(e, FT_EINPUT, "%s: not valid JSON", src);
        free(text);
    } else {
        cfg = cJSON_CreateObject();
        cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    }
    free(src);
    if (rc) return rc;
    if (chat_template) {
        cJSON_DeleteItemFromObject(cfg, "chat_template");
        cJSON_AddStringToObject(cfg, "chat_template", chat_template);
    }
    rc = write_json(out_dir, "tokenizer_config.json", cfg, e);
    cJSON_Delete(cfg);
    return rc;
}
