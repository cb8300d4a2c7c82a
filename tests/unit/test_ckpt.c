/* ckpt: round trip, corruption / truncation / missing manifest refused,
 * leftover .tmp dirs ignored and cleaned, keep_last pruning, CRC32 value. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "finetune/io/ckpt.h"
#include "test.h"

static const char *RUN = "test_ckpt_run";

static void rmtree(const char *p) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    CHECK(system(cmd) == 0);
}

static int write_ckpt(int64_t step, int keep_last, float scale) {
    ft_error e = {0};
    ckpt_writer *w;
    if (ckpt_writer_begin(RUN, step, &w, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    static float a[6], m[6];
    static uint16_t h[3];
    for (int i = 0; i < 6; i++) {
        a[i] = scale * (float)(i + 1);
        m[i] = -0.5f * (float)i;
    }
    for (int i = 0; i < 3; i++) h[i] = ft_f32_to_bf16((float)i + 0.25f);
    int64_t s23[2] = {2, 3}, s6[1] = {6}, s3[1] = {3};
    int rc = ckpt_writer_add_tensor(w, "layers.0.q.lora_A", FT_F32, 2, s23, a, &e);
    if (!rc) rc = ckpt_writer_add_tensor(w, "optim.m.layers.0.q.lora_A", FT_F32, 1, s6, m, &e);
    /* the staged path: declare, then write from a buffer that is reused afterwards */
    if (!rc) rc = ckpt_writer_declare(w, "scaler", FT_BF16, 1, s3, &e);
    char state[128];
    snprintf(state, sizeof state, "{\"step\": %lld, \"rng\": \"00ff00ff00ff00ff\"}", (long long)step);
    if (!rc) rc = ckpt_writer_set_state(w, state, &e);
    if (!rc) {
        uint16_t stage[3];
        memcpy(stage, h, sizeof stage);
        rc = ckpt_writer_write(w, "scaler", stage, &e);
        memset(stage, 0, sizeof stage);
    }
    if (rc) {
        fprintf(stderr, "%s\n", e.msg);
        ckpt_writer_abort(w);
        return rc;
    }
    char *path = NULL;
    rc = ckpt_writer_commit(w, keep_last, &path, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    free(path);
    return rc;
}

static void test_crc(void) {
    FILE *f = fopen("test_ckpt_crc.txt", "wb");
    fputs("123456789", f);
    fclose(f);
    uint32_t crc = 0;
    uint64_t size = 0;
    ft_error e = {0};
    CHECK(ckpt_crc32_file("test_ckpt_crc.txt", &crc, &size, &e) == FT_OK);
    CHECK(crc == 0xCBF43926u); /* the standard CRC-32 check value */
    CHECK(size == 9);
    CHECK(ckpt_crc32_file("test_ckpt_nonexistent", &crc, NULL, &e) != FT_OK);
    unlink("test_ckpt_crc.txt");
}

static void test_round_trip(void) {
    rmtree(RUN);
    ft_error e = {0};
    char *latest = (char *)1;
    int64_t step = -1;
    CHECK(ckpt_latest(RUN, &latest, &step, &e) == FT_OK && latest == NULL);
    CHECK(write_ckpt(123, 0, 1.0f) == 0);
    CHECK(ckpt_latest(RUN, &latest, &step, &e) == FT_OK && latest && step == 123);
    if (!latest) return;
    CHECK(strstr(latest, "checkpoints/step-000123") != NULL);
    ckpt *c = NULL;
    CHECK(ckpt_load(latest, &c, &e) == FT_OK);
    if (!c) {
        fprintf(stderr, "%s\n", e.msg);
        free(latest);
        return;
    }
    CHECK(ckpt_step(c) == 123);
    cJSON *st = cJSON_Parse(ckpt_state(c));
    CHECK(st && cJSON_GetObjectItem(st, "step")->valuedouble == 123);
    CHECK(st && strcmp(cJSON_GetObjectItem(st, "rng")->valuestring, "00ff00ff00ff00ff") == 0);
    cJSON_Delete(st);
    CHECK(ckpt_num_tensors(c) == 3);
    float a[6] = {0}, m[6] = {0};
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6}, s3[1] = {3};
    CHECK(ckpt_read(c, "layers.0.q.lora_A", FT_F32, 2, s23, a, &e) == FT_OK);
    for (int i = 0; i < 6; i++) CHECK(a[i] == (float)(i + 1));
    CHECK(ckpt_read(c, "optim.m.layers.0.q.lora_A", FT_F32, 1, s6, m, &e) == FT_OK);
    for (int i = 0; i < 6; i++) CHECK(m[i] == -0.5f * (float)i);
    uint16_t h[3];
    CHECK(ckpt_read(c, "scaler", FT_BF16, 1, s3, h, &e) == FT_OK);
    for (int i = 0; i < 3; i++) CHECK(ft_bf16_to_f32(h[i]) == (float)i + 0.25f);
    /* shape / dtype / name checks */
    CHECK(ckpt_read(c, "layers.0.q.lora_A", FT_F32, 2, s32, a, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "F32 [2, 3] in the checkpoint, expected F32 [3, 2]") != NULL, "%s", e.msg);
    CHECK(ckpt_read(c, "scaler", FT_F32, 1, s3, a, &e) == FT_EINPUT);
    CHECK(ckpt_read(c, "nope", FT_F32, 1, s3, a, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "'nope'") != NULL, "%s", e.msg);
    CHECK(ckpt_find(c, "scaler") != NULL && ckpt_find(c, "x") == NULL);
    ckpt_free(c);
    /* re-saving the same step replaces it */
    CHECK(write_ckpt(123, 0, 2.0f) == 0);
    CHECK(ckpt_load(latest, &c, &e) == FT_OK);
    if (c) {
        CHECK(ckpt_read(c, "layers.0.q.lora_A", FT_F32, 2, s23, a, &e) == FT_OK && a[5] == 12.0f);
        ckpt_free(c);
    }
    free(latest);
}

static char *file_in(int64_t step, const char *name) {
    char *d = ckpt_dir_for_step(RUN, step);
    char *p = ft_path_join(d, name);
    free(d);
    return p;
}

static void test_corruption(void) {
    rmtree(RUN);
    ft_error e = {0};
    ckpt *c = NULL;
    char *d = ckpt_dir_for_step(RUN, 120);
    /* flip one byte of the tensor data */
    CHECK(write_ckpt(120, 0, 1.0f) == 0);
    char *p = file_in(120, "tensors.safetensors");
    FILE *f = fopen(p, "r+b");
    CHECK(f != NULL);
    fseek(f, -3, SEEK_END);
    int ch = fgetc(f);
    fseek(f, -3, SEEK_END);
    fputc(ch ^ 0x10, f);
    fclose(f);
    CHECK(ckpt_load(d, &c, &e) == FT_EINPUT && c == NULL);
    CHECK_MSG(strstr(e.msg, "checkpoints/step-000120/tensors.safetensors: CRC32 mismatch (file corrupt or truncated); "
                            "remove the checkpoint or resume from an older one") != NULL,
              "%s", e.msg);
    /* truncate */
    CHECK(write_ckpt(120, 0, 1.0f) == 0);
    CHECK(truncate(p, 40) == 0);
    CHECK(ckpt_load(d, &c, &e) == FT_EINPUT && c == NULL);
    CHECK_MSG(strstr(e.msg, "step-000120/tensors.safetensors: size 40 bytes") != NULL, "%s", e.msg);
    CHECK_MSG(strstr(e.msg, "truncated") != NULL, "%s", e.msg);
    free(p);
    /* state.json corrupted */
    CHECK(write_ckpt(120, 0, 1.0f) == 0);
    p = file_in(120, "state.json");
    f = fopen(p, "r+b");
    fputc('[', f);
    fclose(f);
    CHECK(ckpt_load(d, &c, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "state.json: CRC32 mismatch") != NULL, "%s", e.msg);
    /* missing manifest: incomplete, and ckpt_latest ignores it */
    CHECK(write_ckpt(110, 0, 1.0f) == 0);
    CHECK(write_ckpt(120, 0, 1.0f) == 0);
    free(p);
    p = file_in(120, "MANIFEST.json");
    CHECK(unlink(p) == 0);
    CHECK(ckpt_load(d, &c, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "MANIFEST.json: missing") != NULL, "%s", e.msg);
    char *latest = NULL;
    int64_t step = 0;
    CHECK(ckpt_latest(RUN, &latest, &step, &e) == FT_OK && step == 110);
    free(latest);
    /* garbage manifest */
    f = fopen(p, "wb");
    fputs("{\"files\": 3}", f);
    fclose(f);
    CHECK(ckpt_load(d, &c, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "MANIFEST.json: not a valid checkpoint manifest") != NULL, "%s", e.msg);
    free(p);
    CHECK(ckpt_load("test_ckpt_nonexistent_dir", &c, &e) == FT_EINPUT);
    free(d);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_tmp_and_keep(void) {
    rmtree(RUN);
    ft_error e = {0};
    CHECK(write_ckpt(5, 0, 1.0f) == 0);
    /* what a SIGKILL mid-save leaves: a newer .tmp dir of a dead process */
    const char *dead = "test_ckpt_run/checkpoints/step-000010.tmp-2147483000";
    CHECK(ft_mkdir_p(dead, &e) == FT_OK);
    FILE *f = fopen("test_ckpt_run/checkpoints/step-000010.tmp-2147483000/tensors.safetensors", "wb");
    fputs("partial", f);
    fclose(f);
    /* and one of a live process (ourselves) must stay */
    char live[256];
    snprintf(live, sizeof live, "test_ckpt_run/checkpoints/step-000011.tmp-%d", (int)getppid());
    CHECK(ft_mkdir_p(live, &e) == FT_OK);
    char *latest = NULL;
    int64_t step = 0;
    CHECK(ckpt_latest(RUN, &latest, &step, &e) == FT_OK && latest && step == 5);
    free(latest);
    CHECK(!exists(dead));
    CHECK(exists(live));
    rmtree(live);

    /* keep_last = 2 leaves exactly the two newest */
    for (int64_t s = 10; s <= 50; s += 10) CHECK(write_ckpt(s, 2, 1.0f) == 0);
    int64_t *steps = NULL;
    size_t n = 0;
    CHECK(ckpt_list_steps(RUN, &steps, &n, &e) == FT_OK);
    CHECK(n == 2);
    if (n == 2) CHECK(steps[0] == 40 && steps[1] == 50);
    free(steps);
    CHECK(!exists("test_ckpt_run/checkpoints/step-000030"));
    CHECK(!exists("test_ckpt_run/checkpoints/step-000005"));
    /* saving an older step (resumed from it) never deletes the new one */
    CHECK(write_ckpt(45, 1, 1.0f) == 0);
    CHECK(exists("test_ckpt_run/checkpoints/step-000045/MANIFEST.json"));
    CHECK(exists("test_ckpt_run/checkpoints/step-000050/MANIFEST.json"));
    CHECK(!exists("test_ckpt_run/checkpoints/step-000040"));
    /* aborting leaves nothing behind */
    ckpt_writer *w;
    CHECK(ckpt_writer_begin(RUN, 60, &w, &e) == FT_OK);
    ckpt_writer_abort(w);
    CHECK(ckpt_list_steps(RUN, &steps, &n, &e) == FT_OK && n == 2);
    free(steps);
    char tmp[256];
    snprintf(tmp, sizeof tmp, "test_ckpt_run/checkpoints/step-000060.tmp-%d", (int)getpid());
    CHECK(!exists(tmp));
    /* invalid state JSON is refused */
    CHECK(ckpt_writer_begin(RUN, 70, &w, &e) == FT_OK);
    CHECK(ckpt_writer_set_state(w, "{not json", &e) != FT_OK);
    ckpt_writer_abort(w);
    rmtree(RUN);
}

int main(void) {
    test_crc();
    test_round_trip();
    test_corruption();
    test_tmp_and_keep();
    TEST_DONE();
}
