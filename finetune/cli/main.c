/* finetune: the command-line entry point; dispatches to cmd_<name>. */
#include <stdio.h>
#include <string.h>

#include "finetune/cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"sft", cmd_sft, "supervised fine-tuning from a recipe"},
    {"dpo", cmd_dpo, "preference tuning (DPO family) from a recipe"},
    {"classify", cmd_classify, "train a sequence classifier (score head) from a recipe"},
    {"predict", cmd_predict, "a classifier's probabilities for a data file, as a CSV submission"},
    {"info", cmd_info, "describe a checkpoint: architecture, parameters, training memory"},
    {"generate", cmd_generate, "generate tokens from a prompt"},
    {"chat", cmd_chat, "talk to a model in the terminal (multi-turn, chat template)"},
    {"eval", cmd_eval, "score a model on a dataset: loss/perplexity, or preference accuracy"},
    {"score", cmd_score, "log-probability of each token given those before it"},
    {"init", cmd_init, "write a randomly initialised checkpoint for a config"},
    {"tokenize", cmd_tokenize, "encode JSONL text to token ids (or --decode ids to text)"},
    {"render", cmd_render, "show dataset examples as the model sees them (template, mask), with statistics"},
    {"merge", cmd_merge, "fold a LoRA adapter into its base model (HF model dir out)"},
    {"quantize", cmd_quantize, "write a bitsandbytes 4-bit (NF4) checkpoint of a model"},
    {"convert", cmd_convert, "write the Hugging Face model dir of a GGUF file (dequantized)"},
    {"export-gguf", cmd_export_gguf, "write a model (optionally with a LoRA adapter merged) as a llama.cpp GGUF file"},
    {"plot", cmd_plot, "draw a run's metrics.jsonl (loss, eval loss, lr, DPO rewards) as an SVG"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: finetune <command> [options]   (finetune <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return FT_EINPUT;
    }
    if (cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "finetune: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return FT_EINPUT;
}
