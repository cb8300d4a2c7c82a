#!/usr/bin/env bash
# finetune sft --resume: a run killed with SIGKILL at several points and resumed reproduces an
# uninterrupted run exactly (every step's loss, lr, grad norm and eval loss in metrics.jsonl, and
# model.safetensors byte for byte); a corrupt or truncated checkpoint is refused, naming the file.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/sft_resume.XXXXXX")
BG=
trap '[ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

# A tiny random Llama (the shipped 32000-token tokenizer, 2 layers of width 32) on 40 OpenOrca rows:
# ~30 optimizer steps with gradient accumulation, an eval split, a checkpoint every 2 steps.
cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -40 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
cat > "$T/recipe.json" << EOF
// sft_resume.sh test recipe
{"model_init": "tiny.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 1, "grad_accum": 2, "epochs": 2, "lr": 1e-2, "warmup_steps": 3, "schedule": "cosine",
 "weight_decay": 0.01, "eval_fraction": 0.1, "eval_every": 5, "save_every": 2, "keep_last": 3,
 "log_every": 1, "device": "cpu", "seed": 7}
EOF

losses() { grep -o '"step":[0-9]*,"epoch":[^,]*,"loss":[^,}]*' "$1"; }

# Reference: uninterrupted.
mkdir "$T/ref"
cp "$T/recipe.json" "$T/tiny.json" "$T/data.jsonl" "$T/ref/"
"$FT" sft "$T/ref/recipe.json" > "$T/ref.log" 2>&1
rc=$?
check "uninterrupted run exits 0 ($(tail -3 "$T/ref.log"))" '[ $rc = 0 ]'
check "reference model written" '[ -s "$T/ref/run/model.safetensors" ]'
TOTAL=$(losses "$T/ref/run/metrics.jsonl" | wc -l)
check "reference has steps ($TOTAL)" '[ "$TOTAL" -ge 20 ]'
check "reference has eval records" 'grep -q eval_loss "$T/ref/run/metrics.jsonl"'


real_kills=0
scenario() { # name, then pairs "at extra" of kill points; resumes after each kill
  local name=$1
  shift
  local dir="$T/$name"
  mkdir "$dir"
  cp "$T/recipe.json" "$T/tiny.json" "$T/data.jsonl" "$dir/"
  local resume=
  while [ $# -ge 2 ]; do
    local r
    r=$(kill_at "$dir" "$1" "$2" $resume)
    echo "$name: kill after checkpoint >= $1 (+$2 s): $r, newest checkpoint step $(latest_step "$dir/run")"
    [ "$r" = killed ] && real_kills=$((real_kills + 1))
    resume=--resume
    shift 2
  done
  "$FT" sft "$dir/recipe.json" --resume >> "$dir/log" 2>&1
  rc=$?
  check "$name: resumed run exits 0 ($(tail -3 "$dir/log"))" '[ $rc = 0 ]'
  check "$name: resume message" 'grep -q "resuming from" "$dir/log"'
  check "$name: loss column of every step equals the uninterrupted run's" \
    '[ "$(losses "$dir/run/metrics.jsonl")" = "$(losses "$T/ref/run/metrics.jsonl")" ]'
  check "$name: metrics.jsonl (loss, lr, grad_norm, eval_loss, ...) equals the uninterrupted run's" \
    '[ "$(norm "$dir/run/metrics.jsonl")" = "$(norm "$T/ref/run/metrics.jsonl")" ]'
  check "$name: model.safetensors byte-identical" 'cmp "$dir/run/model.safetensors" "$T/ref/run/model.safetensors"'
  check "$name: config.json identical" 'cmp "$dir/run/config.json" "$T/ref/run/config.json"'
  rm -rf "$dir"
}

scenario early 4 0
scenario midstep 12 0.07
scenario twice 8 0 20 0.03
check "at least two runs were really killed mid-training (got $real_kills)" '[ $real_kills -ge 2 ]'

# Corrupt checkpoints are refused with a clear error naming the file.
C="$T/ref/run/checkpoints/step-$(printf %06d "$(latest_step "$T/ref/run")")"
cp -r "$T/ref/run" "$T/ref/run.orig"
F="$C/tensors.safetensors"
SZ=$(stat -c %s "$F")
OFF=$((SZ / 2))
B=$(dd if="$F" bs=1 skip=$OFF count=1 2> /dev/null | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $(((B ^ 1) & 255)))" | dd of="$F" bs=1 seek=$OFF conv=notrunc 2> /dev/null
check "byte really flipped" '! cmp -s "$F" "$T/ref/run.orig/checkpoints/$(basename "$C")/tensors.safetensors"'
"$FT" sft "$T/ref/recipe.json" --resume > "$T/bad.log" 2>&1
rc=$?
check "flipped byte: exit 2 (got $rc)" '[ $rc = 2 ]'
check "flipped byte: message names CRC32 and the file ($(cat "$T/bad.log"))" \
  'grep -q "tensors.safetensors: CRC32 mismatch" "$T/bad.log"'

rm -rf "$T/ref/run" && cp -r "$T/ref/run.orig" "$T/ref/run"
truncate -s $((SZ - 100)) "$F"
"$FT" sft "$T/ref/recipe.json" --resume > "$T/bad.log" 2>&1
rc=$?
check "truncated: exit 2 (got $rc)" '[ $rc = 2 ]'
check "truncated: message names the file and says truncated ($(cat "$T/bad.log"))" \
  'grep -q "tensors.safetensors: .*truncated" "$T/bad.log"'

rm -rf "$T/ref/run" && cp -r "$T/ref/run.orig" "$T/ref/run"
: > "$C/state.json"
"$FT" sft "$T/ref/recipe.json" --resume > "$T/bad.log" 2>&1
rc=$?
check "emptied state.json: exit 2 (got $rc)" '[ $rc = 2 ]'
check "emptied state.json: message names the file ($(cat "$T/bad.log"))" 'grep -q "state.json" "$T/bad.log"'

# --resume with nothing to resume from.
mkdir "$T/none" && cp "$T/recipe.json" "$T/tiny.json" "$T/data.jsonl" "$T/none/"
"$FT" sft "$T/none/recipe.json" --resume > "$T/bad.log" 2>&1
rc=$?
check "--resume without checkpoints: exit 2 (got $rc)" '[ $rc = 2 ]'
check "--resume without checkpoints: says so ($(cat "$T/bad.log"))" 'grep -q "no complete checkpoint" "$T/bad.log"'

# A resume with another seed would not continue the same run: refused.
rm -rf "$T/ref/run" && cp -r "$T/ref/run.orig" "$T/ref/run"
"$FT" sft "$T/ref/recipe.json" --resume seed=8 > "$T/bad.log" 2>&1
rc=$?
check "resume with another seed: exit 2 (got $rc)" '[ $rc = 2 ]'
check "resume with another seed: names both seeds ($(cat "$T/bad.log"))" 'grep -q "seed 7 but the recipe says 8" "$T/bad.log"'

[ $fail = 0 ] && echo "sft_resume: all checks passed"
exit $fail
