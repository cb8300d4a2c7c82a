#!/usr/bin/env bash
# finetune sft with LoRA dropout (lora.dropout > 0): the run trains (loss falls), dropout changes the run
# (other losses than dropout 0), the same seed gives the same losses and adapter bytes, and a run killed
# with SIGKILL after a checkpoint and resumed reproduces the uninterrupted run exactly (every step's loss,
# lr and grad norm, adapter_model.safetensors byte for byte): the masks depend on (seed, micro-batch index,
# layer, linear) only. adapter_config.json records lora_dropout.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/lora_dropout.XXXXXX")
BG=
trap '[ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
"$FT" init --config "$T/tiny.json" --out "$T/base" --seed 3 --std 0.2 > /dev/null 2>&1 || { echo "FAIL: init"; exit 1; }
head -30 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
recipe() { # $1 = dir, $2 = dropout
  mkdir -p "$T/$1"
  cat > "$T/$1/recipe.json" << EOF
{"model": "$T/base", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "$T/data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 1, "grad_accum": 2, "max_steps": 16, "lr": 1e-2, "warmup_steps": 2, "schedule": "cosine",
 "save_every": 2, "keep_last": 3, "log_every": 1, "device": "cpu", "seed": 9,
 "lora": {"r": 4, "alpha": 8, "dropout": $2, "target_modules": "all-linear"}}
EOF
}
losses() { grep -o '"step":[0-9]*,"epoch":[^,]*,"loss":[^,}]*' "$1"; }
first_last() {
  grep -o '"loss":[0-9.e+-]*' "$1" | sed 's/"loss"://' |
    awk '{v[NR]=$1} END{n=NR<3?NR:3; for(i=1;i<=n;i++){a+=v[i]; b+=v[NR-i+1]} printf "%.6f %.6f", a/n, b/n}'
}

recipe ref 0.1
(cd "$T/ref" && "$FT" sft recipe.json > log 2>&1)
rc=$?
check "dropout 0.1 run exits 0 ($(tail -3 "$T/ref/log"))" '[ $rc = 0 ]'
R=$T/ref/run
check "adapter written" '[ -s "$R/adapter_model.safetensors" ]'
check "adapter_config.json records lora_dropout 0.1" 'grep -q "\"lora_dropout\": 0.1," "$R/adapter_config.json"'
read -r l0 l1 <<< "$(first_last "$R/metrics.jsonl")"
check "loss falls with dropout ($l0 -> $l1)" 'awk -v a="$l0" -v b="$l1" "BEGIN{exit !(b < a - 0.05)}"'

recipe again 0.1
(cd "$T/again" && "$FT" sft recipe.json > log 2>&1)
check "same seed: same metrics" '[ "$(norm "$T/again/run/metrics.jsonl")" = "$(norm "$R/metrics.jsonl")" ]'
check "same seed: same adapter bytes" 'cmp "$T/again/run/adapter_model.safetensors" "$R/adapter_model.safetensors"'

recipe nodrop 0
(cd "$T/nodrop" && "$FT" sft recipe.json > log 2>&1)
check "dropout 0 runs" '[ -s "$T/nodrop/run/adapter_model.safetensors" ]'
check "dropout changes the losses" '[ "$(losses "$T/nodrop/run/metrics.jsonl")" != "$(losses "$R/metrics.jsonl")" ]'

# kill once after a checkpoint, resume
recipe killed 0.1
D=$T/killed
killed=0
for wait_extra in 0 0.05; do
  rm -rf "$D/run"
  [ "$(kill_at "$D" 6 "$wait_extra")" = killed ] && { killed=1; break; }
done
check "the run was really killed mid-training" '[ $killed = 1 ]'
echo "killed at newest checkpoint step $(latest_step "$D/run")"
(cd "$D" && "$FT" sft recipe.json --resume >> log 2>&1)
rc=$?
check "resumed run exits 0 ($(tail -3 "$D/log"))" '[ $rc = 0 ]'
check "resume message" 'grep -q "resuming from" "$D/log"'
check "resumed: every step's loss equals the uninterrupted run's" \
  '[ "$(losses "$D/run/metrics.jsonl")" = "$(losses "$R/metrics.jsonl")" ]'
check "resumed: metrics.jsonl (loss, lr, grad_norm) equals the uninterrupted run's" \
  '[ "$(norm "$D/run/metrics.jsonl")" = "$(norm "$R/metrics.jsonl")" ]'
check "resumed: adapter_model.safetensors byte-identical" \
  'cmp "$D/run/adapter_model.safetensors" "$R/adapter_model.safetensors"'

[ $fail = 0 ] && echo "lora_dropout: all checks passed"
exit $fail
