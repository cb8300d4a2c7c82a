/* placeholder until the model commands land */
#include <stdio.h>
#include "cli.h"
static int todo(const char *c) { fprintf(stderr, "finetune %s: not built yet\n", c); return 1; }
int cmd_info(int argc, char **argv) { (void)argc; return todo(argv[0]); }
int cmd_generate(int argc, char **argv) { (void)argc; return todo(argv[0]); }
int cmd_score(int argc, char **argv) { (void)argc; return todo(argv[0]); }
int cmd_init(int argc, char **argv) { (void)argc; return todo(argv[0]); }
