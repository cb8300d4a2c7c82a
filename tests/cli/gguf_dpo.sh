#!/usr/bin/env bash
# The real-model DPO test: DPO with LoRA of SmolLM2-135M-Instruct straight from its Q4_1 GGUF ($FT_ASSETS;
# skipped without it) on real Intel/orca_dpo_pairs rows (tests/fixtures/assets/datasets/openai-preference.jsonl,
# the pairs with the shortest prompts: 4 to train, 4 others held out). The chosen replies are GPT-4's, the
# rejected ones Llama-2-chat's ("Sure, I'd be happy to help! ..."), a style difference the policy learns in a
# few steps and carries over to unseen prompts. Before training the policy is the reference (rewards exactly
# 0, accuracy 0: rewards/accuracies counts r_c > r_r); after 2 steps the held-out pairs must be ranked right
# (eval reward accuracy >= 0.75) with a positive mean margin (measured: accuracy 1, margin 8.5). A run that does
# not learn (lr 0) fails it.
# Kept small for 2 CPU cores: sequences of at most 80 tokens, 2 steps of 2 pairs.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
. "$(dirname "$0")/lib.bash"
large_asset models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf "the real SmolLM2 GGUF is absent"
G=$LARGE_ASSET
T=$(mktemp -d "${PWD:-/tmp}/gguf_dpo.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

python3 - "$ASSETS_DIR/datasets/openai-preference.jsonl" << 'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
size = lambda i: sum(len(m["content"]) for m in json.loads(lines[i])["input"]["messages"])
order = sorted(range(len(lines)), key=size)[:10]
train = sorted(order[i] for i in (0, 2, 5, 7))
held = sorted(order[i] for i in (1, 4, 6, 9))
open("train.jsonl", "w").write("".join(lines[i] + "\n" for i in train))
open("eval.jsonl", "w").write("".join(lines[i] + "\n" for i in held))
EOF

cat > recipe.json << EOF
{"model": "$G", "data": "train.jsonl", "eval_data": "eval.jsonl", "format": "openai_preference",
 "output_dir": "run", "max_length": 80, "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
 "dpo": {"loss": "sigmoid", "beta": 0.1, "reference": "precompute"}, "batch_size": 2, "max_steps": 2,
 "lr": 3e-3, "schedule": "constant", "log_every": 1, "eval_every": 2, "device": "cpu", "seed": 1}
EOF
"$FT" dpo recipe.json > dpo.log 2>&1
st=$?
check "DPO with LoRA from the .gguf runs" '[ $st = 0 ] || cat dpo.log'
last_eval=$(grep eval_ run/metrics.jsonl | tail -1)
acc=$(echo "$last_eval" | grep -o '"eval_rewards/accuracies":[0-9.e+-]*' | cut -d: -f2)
margin=$(echo "$last_eval" | grep -o '"eval_rewards/margins":[0-9.e+-]*' | cut -d: -f2)
echo "held-out pairs after 2 steps: reward accuracy $acc, mean margin $margin (0 and 0 before training)"
check "held-out reward accuracy >= 0.75 ($acc)" '[ -n "$acc" ] && awk -v a="$acc" "BEGIN{exit !(a >= 0.75)}"'
check "held-out mean reward margin > 0 ($margin)" '[ -n "$margin" ] && awk -v a="$margin" "BEGIN{exit !(a > 0)}"'
exit $fail
