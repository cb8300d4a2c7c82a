#!/usr/bin/env bash
# finetune sft output: an HF model directory (config.json, model.safetensors, generation_config.json,
# tokenizer files, tokenizer_config.json carrying the chat template trained with), which our own
# tools load (score, generate); the loss falls; finetune plot draws the run.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/sft_output.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -40 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
cat > "$T/r.json" << EOF
{"model_init": "tiny.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 2, "epochs": 3, "lr": 1e-2, "warmup_steps": 2, "eval_fraction": 0.1, "eval_every": 10,
 "save_every": 0, "log_every": 5, "device": "cpu", "seed": 3}
EOF
"$FT" sft "$T/r.json" > "$T/log" 2>&1
rc=$?
check "sft exits 0 ($(tail -3 "$T/log"))" '[ $rc = 0 ]'
R=$T/run
for f in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json \
  special_tokens_map.json metrics.jsonl recipe.resolved.json; do
  check "output has $f" '[ -s "$R/$f" ]'
done
check "config.json: LlamaForCausalLM" 'grep -q "LlamaForCausalLM" "$R/config.json"'
check "config.json: the model's sizes" 'grep -Eq "\"hidden_size\":[[:space:]]*32," "$R/config.json" && grep -Eq "\"vocab_size\":[[:space:]]*32000" "$R/config.json"'
check "generation_config.json: eos_token_id 2" 'grep -Eq "\"eos_token_id\":[[:space:]]*2" "$R/generation_config.json"'
check "tokenizer.json copied unchanged" 'cmp -s "$R/tokenizer.json" "$SRC/recipes/quickstart/tokenizer/tokenizer.json"'
check "tokenizer_config.json has a chat_template" 'grep -q "\"chat_template\"" "$R/tokenizer_config.json"'
check "the chat_template is the danube one" \
  'grep "\"chat_template\"" "$R/tokenizer_config.json" | grep -q "<|prompt|>" && grep "\"chat_template\"" "$R/tokenizer_config.json" | grep -q "<|answer|>"'
check "model.safetensors: every layer weight of the model (7 linears + 2 norms per layer)" \
  '[ "$(head -c 20000 "$R/model.safetensors" | grep -aoE "model\.layers\.[0-9]+\.[a-z_.]+weight" | sort -u | wc -l)" = 18 ]'
check "model.safetensors: lm_head and embeddings" \
  'head -c 20000 "$R/model.safetensors" | grep -aq "lm_head.weight" && head -c 20000 "$R/model.safetensors" | grep -aq "model.embed_tokens.weight"'
check "checkpoint at the end" '[ -d "$R/checkpoints" ] && ls "$R/checkpoints" | grep -q "^step-"'
check "the summary names the output dir" 'grep -q "output in" "$T/log"'

# The loss falls: mean of the first 3 steps vs the last 3, and the first vs the last eval loss.
losses=$(grep -o '"loss":[0-9.e+-]*' "$R/metrics.jsonl" | cut -d: -f2)
n=$(echo "$losses" | wc -l)
first=$(echo "$losses" | head -3 | awk '{s += $1} END {print s / NR}')
last=$(echo "$losses" | tail -3 | awk '{s += $1} END {print s / NR}')
check "every step logged ($n)" '[ "$n" -ge 20 ]'
check "loss falls: first $first, last $last" 'awk -v a="$first" -v b="$last" "BEGIN { exit !(b < a - 0.5) }"'
ev=$(grep -o '"eval_loss":[0-9.e+-]*' "$R/metrics.jsonl" | cut -d: -f2)
check "eval loss logged (every 10 steps and at the end)" '[ "$(echo "$ev" | wc -l)" -ge 3 ]'
check "eval loss falls: $(echo $ev)" 'awk -v a="$(echo "$ev" | head -1)" -v b="$(echo "$ev" | tail -1)" "BEGIN { exit !(b < a) }"'

# Our own tools load the output: score and generate.
"$FT" score "$R" --ids 1,523,28766,14350,447,28766,28767 > "$T/score" 2> "$T/err"
rc=$?
check "score on the output exits 0 ($(cat "$T/err"))" '[ $rc = 0 ]'
check "score: 6 finite log-probs <= 0 ($(cat "$T/score"))" \
  '[ "$(tr -d "[] " < "$T/score" | tr , "\n" | awk "\$1 <= 0 && \$1 > -1000" | wc -l)" = 6 ]'
"$FT" generate "$R" --prompt "What is the capital of France?" --template danube --max-new 8 --greedy > "$T/gen" 2> "$T/err"
rc=$?
check "generate --prompt on the output (its own tokenizer) exits 0 ($(cat "$T/err"))" '[ $rc = 0 ]'

# save_dtype=bf16 writes BF16 tensors.
"$FT" sft "$T/r.json" output_dir="$T/run16" save_dtype=bf16 max_steps=2 eval_fraction=0 > "$T/log16" 2>&1
rc=$?
check "save_dtype=bf16 run exits 0 ($(tail -2 "$T/log16"))" '[ $rc = 0 ]'
check "save_dtype=bf16: BF16 tensors" 'head -c 4000 "$T/run16/model.safetensors" | grep -aq "\"BF16\""'
check "save_dtype=bf16: smaller file" '[ "$(stat -c %s "$T/run16/model.safetensors")" -lt "$(stat -c %s "$R/model.safetensors")" ]'

# finetune plot draws the run.
"$FT" plot "$R" > "$T/plot" 2>&1
rc=$?
check "plot exits 0 ($(cat "$T/plot"))" '[ $rc = 0 ]'
S=$R/metrics.svg
check "plot: an SVG" '[ -s "$S" ] && grep -q "<svg" "$S" && tail -c 20 "$S" | grep -q "</svg>"'
for key in "loss" "eval loss" "learning rate" "grad norm"; do
  check "plot: a series for '$key'" 'grep -q "<polyline class=\"series\" data-key=\"$key\"" "$S"'
done
if command -v xmllint > /dev/null; then check "plot: well-formed XML" 'xmllint --noout "$S"'; fi

[ $fail = 0 ] && echo "sft_output: all checks passed"
exit $fail
