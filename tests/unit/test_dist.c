/* train/dist without a launcher (CI runs the MPI path in tests/cli/dist_mpi.sh): one process is rank 0 of 1 and
 * every collective is a no-op; the launcher's variables are read and checked; the local GPU is picked from
 * CUDA_VISIBLE_DEVICES; torchrun's variables on the CPU backend are refused, naming mpirun. */
#define _DEFAULT_SOURCE /* setenv */
#include "finetune/train/dist.h"

#include "tests/test.h"

static void clear_env(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID",
                          "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_LOCALID", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                          "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES", "FT_DIST_FILE", NULL};
    for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
}

int main(void) {
    ft_error e = {0};
    dist_comm *c = NULL;
    clear_env();
    CHECK(dist_launcher() == NULL);
    CHECK(dist_init(NULL, &c, &e) == FT_OK);
    CHECK(dist_rank(c) == 0 && dist_world(c) == 1 && !dist_active(c) && dist_timeout(c) == 300);
    float f[3] = {1, 2, 3};
    double d[2] = {4, 5};
    CHECK(dist_allreduce_f32(c, f, 3, "x", &e) == FT_OK && f[0] == 1 && f[2] == 3);
    CHECK(dist_allreduce_f64_host(c, d, 2, "x", &e) == FT_OK && d[1] == 5);
    CHECK(dist_broadcast_host(c, d, sizeof d, 0, "x", &e) == FT_OK && d[0] == 4);
    CHECK(dist_agree(c, "recipe", "{\"lr\": 1}", &e) == FT_OK);
    CHECK(dist_all_ok(c, 1, &e) == 1 && dist_all_ok(c, 0, &e) == 0);
    CHECK(dist_barrier(c, "x", &e) == FT_OK);
    dist_free(c);
    /* NULL communicator: the single-process answers */
    CHECK(dist_rank(NULL) == 0 && dist_world(NULL) == 1 && dist_allreduce_f32(NULL, f, 3, "x", &e) == FT_OK);

    /* the launcher's variables, and their precedence (mpirun > torchrun's > srun) */
    setenv("SLURM_PROCID", "0", 1), setenv("SLURM_NTASKS", "2", 1), setenv("SLURM_STEP_ID", "0", 1);
    CHECK(dist_launcher() && strcmp(dist_launcher(), "srun") == 0);
    setenv("RANK", "0", 1), setenv("WORLD_SIZE", "2", 1);
    CHECK(strcmp(dist_launcher(), "torchrun-env") == 0);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK(strcmp(dist_launcher(), "mpirun") == 0);
    clear_env();

    /* inconsistent: rank 3 of 2 */
    setenv("RANK", "3", 1), setenv("WORLD_SIZE", "2", 1);
    c = NULL;
    memset(&e, 0, sizeof e);
    CHECK(dist_init(NULL, &c, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "torchrun-env") && strstr(e.msg, "inconsistent"), "%s", e.msg);
    dist_free(c);

    /* rank 1 of 2, local rank 1: the second GPU of the list is this rank's, alone */
    clear_env();
    setenv("RANK", "1", 1), setenv("WORLD_SIZE", "2", 1), setenv("LOCAL_RANK", "1", 1);
    setenv("CUDA_VISIBLE_DEVICES", "4,6", 1);
    setenv("FT_DIST_TIMEOUT", "7.5", 1);
    c = NULL;
    memset(&e, 0, sizeof e);
    CHECK_MSG(dist_init(NULL, &c, &e) == FT_OK, "%s", e.msg);
    CHECK(dist_rank(c) == 1 && dist_world(c) == 2 && dist_local_rank(c) == 1 && dist_active(c));
    CHECK(dist_timeout(c) == 7.5);
    CHECK(getenv("CUDA_VISIBLE_DEVICES") && strcmp(getenv("CUDA_VISIBLE_DEVICES"), "6") == 0);
    CHECK(strstr(dist_desc(c), "rank 1 of 2") != NULL);
    /* torchrun's variables on the CPU backend: refused (its collectives run over MPI), naming mpirun */
    ft_backend *b = NULL;
    CHECK(ft_backend_create("cpu", &b, &e) == FT_OK);
    memset(&e, 0, sizeof e);
    CHECK(dist_bind(c, b, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "MPI") && (strstr(e.msg, "mpirun") || strstr(e.msg, "has none")), "%s", e.msg);
    dist_free(c);
    b->destroy(b);

    /* local rank 2 but two GPUs listed: an error naming CUDA_VISIBLE_DEVICES; a list of one is kept */
    setenv("LOCAL_RANK", "2", 1), setenv("RANK", "1", 1), setenv("WORLD_SIZE", "3", 1);
    setenv("CUDA_VISIBLE_DEVICES", "4,6", 1);
    c = NULL;
    memset(&e, 0, sizeof e);
    CHECK(dist_init(NULL, &c, &e) == FT_EINPUT);
    CHECK_MSG(strstr(e.msg, "CUDA_VISIBLE_DEVICES=4,6"), "%s", e.msg);
    dist_free(c);
    setenv("CUDA_VISIBLE_DEVICES", "5", 1);
    c = NULL;
    CHECK(dist_init(NULL, &c, &e) == FT_OK && strcmp(getenv("CUDA_VISIBLE_DEVICES"), "5") == 0);
    dist_free(c);
    TEST_DONE();
}
