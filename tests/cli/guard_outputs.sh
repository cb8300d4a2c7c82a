#!/usr/bin/env bash
# A run never destroys its inputs: finetune sft / dpo refuse, before any work, an output_dir that is, lies
# inside or contains the model dir, an adapter dir (lora.init_from), a reference model or a data file;
# merge / quantize / init / plot refuse an --out over their inputs; a second run on an output_dir while one
# is running is refused (output_dir/.finetune.lock), a stale lock (its run was killed) is taken over. Every
# refusal exits 2 naming both paths, and no input file changes (sha256 before and after).
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/guard_outputs.XXXXXX")
T=$(cd "$T" && pwd -P)
BG=
trap '[ -n "$BG" ] && kill -9 $BG 2> /dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

# the quick-start recipe, its tiny model config, tokenizer and data, copied (paths in it are relative to it)
mkdir -p "$T/recipes/models"
cp -r "$SRC/recipes/quickstart" "$T/recipes/"
cp "$SRC/recipes/quickstart-sft.json" "$SRC/recipes/quickstart-dpo.json" "$T/recipes/"
cp "$SRC/recipes/models/tiny-llama.json" "$T/recipes/models/"
R=$T/recipes/quickstart-sft.json
D=$T/recipes/quickstart/openorca-sample.jsonl
FAST=(max_steps=2 max_length=64 eval_fraction=0 save_every=0 log_every=1000)
# a model dir (random init) and a recipe that trains it, and a LoRA adapter trained on it
"$FT" init --config "$T/recipes/models/tiny-llama.json" --out "$T/model" --seed 1 > /dev/null 2>&1 || { echo "FAIL: init"; exit 1; }
sed 's|"model_init": "models/tiny-llama.json"|"model": "../model"|' "$R" > "$T/recipes/model-sft.json"
M=$T/recipes/model-sft.json
"$FT" sft "$M" "${FAST[@]}" output_dir="$T/adapter" lora.r=4 > "$T/adapter.log" 2>&1
check "a LoRA adapter to continue from" '[ -f "$T/adapter/adapter_model.safetensors" ] || { cat "$T/adapter.log"; false; }'

mkdir "$T/recipes/data" && cp "$D" "$T/recipes/data/train.jsonl"
inputs() { (cd "$T" && find recipes model adapter -type f | sort | xargs sha256sum; find recipes model adapter | sort); }
inputs > "$T/before"

# refused EXPECT_MSG -- CMD...: exits 2 and says EXPECT_MSG (a fixed string)
refused() {
  local want=$1
  shift 2
  "$@" > "$T/out" 2>&1
  local rc=$?
  check "refused ($rc): ${want:0:150}" '[ $rc = 2 ] && grep -qF -- "$want" "$T/out" || { cat "$T/out"; false; }'
}

refused "output_dir $T/model is the model directory $T/model (it would be overwritten); choose another output_dir" \
  -- "$FT" sft "$M" "${FAST[@]}" output_dir="$T/model"
ln -s model "$T/model_link"
refused "output_dir $T/model_link ($T/model) is the model directory $T/model" \
  -- "$FT" sft "$M" "${FAST[@]}" output_dir="$T/model_link/"
refused "is the model directory $T/model (it would be overwritten)" \
  -- "$FT" sft "$M" "${FAST[@]}" output_dir="$T/recipes/../model" --dry-run
refused "output_dir $T contains the model directory $T/model (its files could be overwritten)" \
  -- "$FT" sft "$M" "${FAST[@]}" output_dir="$T"
refused "output_dir $T/adapter/run2 lies inside the LoRA init_from adapter directory $T/adapter" \
  -- "$FT" sft "$M" "${FAST[@]}" lora.init_from="$T/adapter" output_dir="$T/adapter/run2"
refused "output_dir $D is the data file $D (it would be overwritten)" \
  -- "$FT" sft "$R" "${FAST[@]}" output_dir="$D"
refused "output_dir $T/recipes/data contains the data file $T/recipes/data/train.jsonl" \
  -- "$FT" sft "$R" "${FAST[@]}" data="$T/recipes/data/train.jsonl" output_dir="$T/recipes/data"
refused "output_dir $T/recipes/data/train.jsonl is the eval_data file $T/recipes/data/train.jsonl" \
  -- "$FT" sft "$R" "${FAST[@]}" eval_data="$T/recipes/data/train.jsonl" output_dir="$T/recipes/data/train.jsonl"
refused "output_dir $T/recipes/quickstart/tokenizer is the tokenizer directory $T/recipes/quickstart/tokenizer" \
  -- "$FT" sft "$R" "${FAST[@]}" output_dir="$T/recipes/quickstart/tokenizer"
refused "output_dir $T/recipes/models contains the model_init file $T/recipes/models/tiny-llama.json" \
  -- "$FT" sft "$R" "${FAST[@]}" output_dir="$T/recipes/models"
refused "output_dir $T/recipes/quickstart/pairs-sample.jsonl is the data file" \
  -- "$FT" dpo "$T/recipes/quickstart-dpo.json" model="$T/model" max_steps=2 output_dir="$D/../pairs-sample.jsonl"
refused "output_dir $T/model/dpo lies inside the dpo.reference_model directory $T/model" \
  -- "$FT" dpo "$T/recipes/quickstart-dpo.json" model="$T/adapter" max_steps=2 dpo.reference=model \
  dpo.reference_model="$T/model" output_dir="$T/model/dpo"
refused "--out $T/model is the --base model directory $T/model (it would be overwritten); choose another --out" \
  -- "$FT" merge --base "$T/model" --adapter "$T/adapter" --out "$T/model"
refused "--out $T/adapter/merged lies inside the --adapter directory $T/adapter" \
  -- "$FT" merge --base "$T/model" --adapter "$T/adapter" --out "$T/adapter/merged"
refused "--out $T/model/q4 lies inside the model directory $T/model" \
  -- "$FT" quantize "$T/model" --out "$T/model/q4"
refused "--out $T/recipes/models contains the --config file $T/recipes/models/tiny-llama.json" \
  -- "$FT" init --config "$T/recipes/models/tiny-llama.json" --out "$T/recipes/models"
refused "--out $T/adapter/metrics.jsonl is the metrics file $T/adapter/metrics.jsonl" \
  -- "$FT" plot "$T/adapter" --out "$T/adapter/metrics.jsonl"
check "a refused run created no output_dir" '[ ! -e "$T/adapter/run2" ] && [ ! -e "$T/model/q4" ] && [ ! -e "$T/model/dpo" ]'

# one run per output_dir: a second one is refused while the first holds the lock
rm -f "$T/model_link"
"$FT" sft "$R" max_steps=100000 epochs=100000 max_length=64 eval_fraction=0 save_every=0 log_every=1000 \
  output_dir="$T/busy" > "$T/busy.log" 2>&1 &
BG=$!
n=0
while [ ! -e "$T/busy/.finetune.lock" ] && kill -0 $BG 2> /dev/null && [ $n -lt 3000 ]; do
  sleep 0.01
  n=$((n + 1))
done
check "the first run holds $T/busy/.finetune.lock ($(cat "$T/busy/.finetune.lock" 2> /dev/null))" \
  'grep -qx "$BG $(hostname)" "$T/busy/.finetune.lock" || { cat "$T/busy.log"; false; }'
refused "$T/busy is in use by another run: its lock file $T/busy/.finetune.lock is held by pid $BG on host $(hostname)" \
  -- "$FT" sft "$R" "${FAST[@]}" output_dir="$T/busy"
check "the first run is still running, its lock untouched" \
  'kill -0 $BG && grep -qx "$BG $(hostname)" "$T/busy/.finetune.lock"'
kill -9 $BG
wait $BG 2> /dev/null
dead=$BG
BG=

# the killed run's lock is stale: the next run says so, takes it over, trains and removes it at exit
check "the killed run left its lock behind" '[ -e "$T/busy/.finetune.lock" ]'
"$FT" sft "$R" "${FAST[@]}" save_every=1 output_dir="$T/busy" > "$T/stale.log" 2>&1
rc=$?
check "a run over a stale lock exits 0 ($(tail -1 "$T/stale.log"))" '[ $rc = 0 ]'
check "it reports the stale lock" \
  'grep -qF "$T/busy/.finetune.lock: stale lock of pid $dead on host $(hostname) (not running); taking it over" "$T/stale.log"'
check "the lock is gone after the run" '[ ! -e "$T/busy/.finetune.lock" ]'
# resuming a run into its own output_dir stays allowed
"$FT" sft "$R" "${FAST[@]}" max_steps=3 output_dir="$T/busy" --resume > "$T/resume.log" 2>&1
rc=$?
check "--resume into its own output_dir exits 0 ($(tail -1 "$T/resume.log"))" '[ $rc = 0 ]'
# a lock left by an error exit? none: a failed run removes its lock too (and the dir it created)
"$FT" sft "$R" "${FAST[@]}" output_dir="$T/failed" data="$T/nope.jsonl" > "$T/failed.log" 2>&1
check "a failed run leaves no lock and no empty output_dir" '[ ! -e "$T/failed" ]'

inputs > "$T/after"
check "every input file unchanged (sha256) and no file added among the inputs" \
  'cmp -s "$T/before" "$T/after" || diff "$T/before" "$T/after"'
exit $fail
