/* cli: the finetune command line. Each command lives in its own cli_<name>.c
 * as `int cmd_<name>(int argc, char **argv)` (argv[0] is the command name) and
 * returns the process exit code: 0 success, 2 bad input (FT_EINPUT), ...
 * Every command accepts --help and rejects unknown options. */
#ifndef FT_CLI_H
#define FT_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "finetune/model/model.h"
#include "finetune/train/job.h"
#include "finetune/base/util.h"

int cmd_sft(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_dpo(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_export_gguf(int argc, char **argv);

/* Print "finetune <cmd>: <message>" to stderr once and return e->code (or 1). */
int cli_report(const char *cmd, const ft_error *e);
/* "unknown option" / "missing value" errors, printed with a hint to use --help; return FT_EINPUT. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse "1,2,3" into a malloc'd int32 array. */
int cli_parse_ids(const char *s, int32_t **ids, size_t *n, ft_error *e);
/* Parse an integer / float option value with range checks; name is the flag for errors. */
int cli_parse_int(const char *name, const char *s, long lo, long hi, long *out, ft_error *e);
int cli_parse_float(const char *name, const char *s, double *out, ft_error *e);
int cli_is_help(const char *arg);
/* Load MODEL_DIR for inference on b, computing in precision (auto | fp32 | bf16 | fp16, as the recipe key;
 * auto: fp32 on the CPU, bf16 on sm_80+, fp16 on sm_75): 16-bit weights go straight to the device.
 * NaN/Inf weights are a warning on stderr naming the tensors (inference still runs). */
int cli_load_model(const char *dir, ft_backend *b, const char *precision, ft_model **out, ft_error *e);
/* 1 when arg is one of the NULL-terminated names. */
int cli_is_one_of(const char *arg, const char *const *names);
/* The command line of a training job (sft, dpo): RECIPE.json [key=value ...] [--dry-run] [--resume].
 * Also --nproc N (then the ranks are started here: cli_launch), --master-addr, --master-port, --dist-timeout (set
 * as MASTER_ADDR, MASTER_PORT, FT_DIST_TIMEOUT for finetune/train/dist).
 * Prints help or a usage error itself. Returns -1 to go on, else the exit code (0 after --help). */
int cli_parse_job_args(const char *cmd, const char *help, int argc, char **argv, job_args *a);
/* --nproc N: start N ranks of the job on this machine (forked with torchrun's variables for NCCL on GPUs; through
 * mpirun on the CPU backend), wait for them and return the exit code (the first failing rank's). */
int cli_launch(const char *cmd, const job_args *a);

#endif
