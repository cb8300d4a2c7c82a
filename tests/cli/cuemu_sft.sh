#!/usr/bin/env bash
# finetune sft with device=cuda, run by finetune_cuemu: the real command line on the CUDA backend, its kernels
# executed by the CPU emulator (tests/cuemu). What a GPU session would otherwise check by hand:
#   - precision=fp16 full fine-tune: the loss falls, metrics.jsonl has loss_scale and mem_gib, and a run
#     killed with SIGKILL after a checkpoint and resumed reproduces the uninterrupted run exactly;
#   - offload_activations=true gives the same run bit for bit;
#   - QLoRA (NF4 base) with LoRA dropout 0.05 in bf16: the loss falls, resume is exact;
#   - DPO with LoRA in bf16: the precomputed and the on-the-fly reference, and the same checkpoint as a
#     separate reference model, give the same run;
#   - score and generate compute in bf16 (--precision) close to fp32;
#   - bf16 on an sm_75 GPU and any GPU below sm_75 are refused with a clear message;
#   - a model that does not fit the (emulated) GPU stops with exit 4 and the memory estimate, and so does one past
#     our own cap (FT_GPU_MEMORY_LIMIT, gpu_memory_limit);
# Skipped (77) without the emulator build (FT_BIN_CUEMU). On a GPU machine tests/gpu/run.sh runs the same
# scenarios with the real binary (FT_BIN_CUEMU=build/finetune FT_SFT_ON_GPU=1), without the two that need
# the emulator's knobs (an sm_75 GPU, a 24 MiB GPU).
set -u
ON_GPU=${FT_SFT_ON_GPU:-0}
FT=${FT_BIN_CUEMU:-}
[ -n "$FT" ] && [ -x "$FT" ] || { echo "skipped: FT_BIN_CUEMU (finetune built for the CUDA emulator) not set; configure with -DFT_CUEMU=ON to run it"; exit 77; }
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/cuemu_sft.XXXXXX")
BG=
trap '[ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
export CUEMU_SM=90

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -16 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
# recipe NAME EXTRA_JSON [MODEL_JSON]: a run dir with the shared settings plus EXTRA_JSON; the model is a random
# init of tiny.json unless MODEL_JSON names a checkpoint
recipe() {
  local model=${3:-'"model_init": "tiny.json"'}
  mkdir -p "$T/$1"
  cp "$T/tiny.json" "$T/data.jsonl" "$T/$1/"
  cat > "$T/$1/recipe.json" << EOF
{$model, "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 1, "grad_accum": 1, "epochs": 2, "warmup_steps": 2, "schedule": "cosine",
 "save_every": 2, "keep_last": 2, "log_every": 1, "device": "cuda", "seed": 7, $2}
EOF
}
losses() { grep -o '"loss":[^,}]*' "$1"; }
# run NAME [ARGS]: finetune sft on run dir NAME, log appended to NAME/log; returns its exit status
run() {
  local d=$T/$1
  shift
  (cd "$d" && "$FT" sft recipe.json "$@" >> log 2>&1)
}
# kill_resume NAME STEP: start NAME, SIGKILL it once a checkpoint >= STEP exists, then --resume to the end
KILL_POLLS=30000 # the emulator is slow: wait up to 5 minutes for the checkpoint
kill_resume() {
  local r
  r=$(kill_at "$T/$1" "$2" 0)
  echo "$1: $r after checkpoint step $(latest_step "$T/$1/run")"
  run "$1" --resume
}
first_last() { # "first last" loss of a metrics.jsonl
  losses "$1" | sed 's/"loss"://' | sed -n '1p;$p' | tr '\n' ' '
}
falls() { awk -v a="$1" -v b="$2" -v f="${3:-0.85}" 'BEGIN { exit !(b < f * a) }'; }

# 1. fp16 full fine-tune, uninterrupted
F='"precision": "fp16", "lr": 1e-2'
recipe fp16 "$F"
run fp16
rc=$?
check "fp16: exit 0 ($(tail -2 "$T/fp16/log"))" '[ $rc = 0 ]'
M=$T/fp16/run/metrics.jsonl
read -r L0 L1 <<< "$(first_last "$M")"
check "fp16: the loss falls ($L0 -> $L1)" 'falls "$L0" "$L1"'
check "fp16: loss_scale in metrics.jsonl" 'grep -q "\"loss_scale\":65536" "$M"'
check "fp16: mem_gib in metrics.jsonl" 'grep -q "\"mem_gib\":0\.[0-9]*[1-9]" "$M"'
check "fp16: GPU memory in the progress line" 'grep -q "| mem 0\.[0-9] GiB" "$T/fp16/log"'
DEV="cuemu (CPU emulation of sm_90)"
[ "$ON_GPU" = 1 ] && DEV=
check "fp16: the log names the device and the compute dtype" \
  'grep -q "^device: cuda: $DEV.*; compute F16 with dynamic loss scaling" "$T/fp16/log"'
check "fp16: model written" '[ -s "$T/fp16/run/model.safetensors" ]'

# 2. killed and resumed: identical
recipe fp16_resume "$F"
kill_resume fp16_resume 6
rc=$?
check "fp16 resume: exit 0 ($(tail -2 "$T/fp16_resume/log"))" '[ $rc = 0 ]'
check "fp16 resume: resumed from a checkpoint" 'grep -q "resuming from" "$T/fp16_resume/log"'
check "fp16 resume: metrics.jsonl equals the uninterrupted run's" \
  '[ "$(norm "$T/fp16_resume/run/metrics.jsonl")" = "$(norm "$M")" ]'
check "fp16 resume: model.safetensors byte-identical" 'cmp "$T/fp16_resume/run/model.safetensors" "$T/fp16/run/model.safetensors"'

# 3. activation offload: the same run bit for bit
recipe fp16_offload "$F"', "offload_activations": true'
run fp16_offload
rc=$?
check "offload: exit 0 ($(tail -2 "$T/fp16_offload/log"))" '[ $rc = 0 ]'
check "offload: metrics.jsonl equals the run without offload" \
  '[ "$(norm "$T/fp16_offload/run/metrics.jsonl")" = "$(norm "$M")" ]'
check "offload: model.safetensors byte-identical" 'cmp "$T/fp16_offload/run/model.safetensors" "$T/fp16/run/model.safetensors"'

# 4. QLoRA with dropout in bf16, uninterrupted and resumed
Q='"precision": "bf16", "lr": 2e-2, "qlora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear", "quantize_base": "nf4"}'
"$FT" init --config "$T/tiny.json" --out "$T/base" --seed 3 > /dev/null 2>&1
check "init of the QLoRA base" '[ -s "$T/base/model.safetensors" ]'
recipe qlora "$Q" "\"model\": \"$T/base\""
run qlora
rc=$?
check "qlora bf16: exit 0 ($(tail -2 "$T/qlora/log"))" '[ $rc = 0 ]'
read -r L0 L1 <<< "$(first_last "$T/qlora/run/metrics.jsonl")"
# (adapters on a random base learn slowly; the curve itself is checked against the CPU in test_cuda_train)
check "qlora bf16: the loss falls ($L0 -> $L1)" 'falls "$L0" "$L1" 0.99'
check "qlora bf16: adapter written" '[ -s "$T/qlora/run/adapter_model.safetensors" ]'
recipe qlora_resume "$Q" "\"model\": \"$T/base\""
kill_resume qlora_resume 6
rc=$?
check "qlora bf16 resume: exit 0 ($(tail -2 "$T/qlora_resume/log"))" '[ $rc = 0 ]'
check "qlora bf16 resume: metrics.jsonl equals the uninterrupted run's" \
  '[ "$(norm "$T/qlora_resume/run/metrics.jsonl")" = "$(norm "$T/qlora/run/metrics.jsonl")" ]'
check "qlora bf16 resume: adapter byte-identical" \
  'cmp "$T/qlora_resume/run/adapter_model.safetensors" "$T/qlora/run/adapter_model.safetensors"'

# 5. DPO with LoRA in bf16 on the fp16 run's model: the precomputed reference cache and the on-the-fly
#    reference (adapters off) give the same run, and it reports TRL's metrics
DPO=(dpo "$SRC/recipes/quickstart-dpo.json" model="$T/fp16/run" device=cuda precision=bf16 max_steps=4 log_every=1
  eval_fraction=0)
"$FT" "${DPO[@]}" output_dir="$T/dpo_pre" > "$T/dpo_pre.log" 2>&1
rc=$?
check "dpo bf16 (reference precomputed): exit 0 ($(tail -1 "$T/dpo_pre.log"))" '[ $rc = 0 ]'
check "dpo bf16: reference cache written" '[ -s "$T/dpo_pre/ref_logps.train.bin" ]'
"$FT" "${DPO[@]}" output_dir="$T/dpo_fly" dpo.reference=adapters_disabled > "$T/dpo_fly.log" 2>&1
rc=$?
check "dpo bf16 (reference on the fly): exit 0 ($(tail -1 "$T/dpo_fly.log"))" '[ $rc = 0 ]'
check "dpo bf16: both references give the same losses" \
  '[ -n "$(losses "$T/dpo_pre/metrics.jsonl")" ] && [ "$(losses "$T/dpo_pre/metrics.jsonl")" = "$(losses "$T/dpo_fly/metrics.jsonl")" ]'
check "dpo bf16: reward metrics" 'grep -q "\"rewards/accuracies\"" "$T/dpo_pre/metrics.jsonl"'
# the same checkpoint as a separate reference model, loaded straight into bf16 (model_load_frozen): the same run
"$FT" "${DPO[@]}" output_dir="$T/dpo_ref" dpo.reference=model dpo.reference_model="$T/fp16/run" > "$T/dpo_ref.log" 2>&1
rc=$?
check "dpo bf16 (reference: a separate model): exit 0 ($(tail -1 "$T/dpo_ref.log"))" '[ $rc = 0 ]'
check "dpo bf16: the separate reference model gives the same losses" \
  '[ "$(losses "$T/dpo_ref/metrics.jsonl")" = "$(losses "$T/dpo_pre/metrics.jsonl")" ]'
check "dpo bf16: adapter written" '[ -s "$T/dpo_pre/adapter_model.safetensors" ]'

# 6. inference in 16 bits (--precision, auto = bf16 here): score within bf16 rounding of fp32, and greedy
#    generation runs with the KV cache in bf16
MODEL=$T/fp16/run
"$FT" score "$MODEL" --ids 1,5,9,200,7,42 --device cuda --precision fp32 > "$T/score32" 2>&1
rc32=$?
"$FT" score "$MODEL" --ids 1,5,9,200,7,42 --device cuda > "$T/score16" 2>&1
rc=$?
check "score on the GPU in fp32 and bf16: exit 0 ($(cat "$T/score16"))" '[ $rc32 = 0 ] && [ $rc = 0 ]'
check "score bf16 within 0.05 of fp32 per token" \
  'paste -d" " <(tr -d "[] " < "$T/score32" | tr , "\n") <(tr -d "[] " < "$T/score16" | tr , "\n") |
     awk "{ n++; d = \$1 - \$2; if (d < 0) d = -d; if (d >= 0.05 || \$2 == \"\") bad = 1 } END { exit bad || n != 5 }"'
"$FT" generate "$MODEL" --prompt-ids 1,5,9 --max-new 6 --greedy --ignore-eos --device cuda --precision bf16 > "$T/gen16" 2>&1
rc=$?
check "generate bf16 on the GPU: 6 new tokens ($(cat "$T/gen16"))" '[ $rc = 0 ] && [ "$(tr -cd , < "$T/gen16" | wc -c)" = 5 ]'

# 6b. our own device memory cap (what the T4-on-an-H100 runs use): a model past FT_GPU_MEMORY_LIMIT or the recipe's
# gpu_memory_limit stops like a full GPU (exit 4, the estimate, the cap named); a malformed cap is an input error
recipe cap "$F"
FT_GPU_MEMORY_LIMIT=40MiB run cap
rc=$?
check "FT_GPU_MEMORY_LIMIT=40MiB: exit 4 (got $rc)" '[ $rc = 4 ]'
check "FT_GPU_MEMORY_LIMIT: the estimate and the cap in the message ($(grep -i "limit" "$T/cap/log" | tail -1))" \
  'grep -q "This recipe needs about" "$T/cap/log" && grep -q "capped at gpu_memory_limit 0.04 GiB" "$T/cap/log"'
check "FT_GPU_MEMORY_LIMIT: no output model" '[ ! -e "$T/cap/run/model.safetensors" ]'
run cap gpu_memory_limit=40MiB output_dir=run2
rc=$?
check "gpu_memory_limit=40MiB (recipe key): exit 4 (got $rc)" '[ $rc = 4 ] && grep -q "refusing" "$T/cap/log"'
run cap 'gpu_memory_limit=15 parsecs' output_dir=run3
rc=$?
check "gpu_memory_limit='15 parsecs': exit 2 naming the key (got $rc)" \
  '[ $rc = 2 ] && grep -q "gpu_memory_limit 15 parsecs: expected a size" "$T/cap/log"'
(cd "$T/cap" && "$FT" sft recipe.json gpu_memory_limit=40MiB output_dir=run5 --dry-run > dry 2>&1)
check "--dry-run: the estimate against the cap ($(grep gpu_memory_limit "$T/cap/dry"))" \
  'grep -q "gpu_memory_limit 0.04 GiB: the estimate without its overhead, [0-9.]* GiB, does not fit" "$T/cap/dry"'
FT_GPU_MEMORY_LIMIT=lots run cap output_dir=run4
rc=$?
check "FT_GPU_MEMORY_LIMIT=lots: exit 2 naming it (got $rc)" '[ $rc = 2 ] && grep -q "FT_GPU_MEMORY_LIMIT=.lots.: expected" "$T/cap/log"'

[ "$ON_GPU" = 1 ] && exit $fail

# 7. bf16 on a T4-class GPU is refused; fp16 is what auto picks there
recipe t4 '"precision": "bf16"'
CUEMU_SM=75 run t4
rc=$?
check "sm_75 bf16: refused with exit 2 (got $rc)" '[ $rc = 2 ]'
check "sm_75 bf16: message names bf16 and the GPU ($(tail -1 "$T/t4/log"))" 'grep -qi "bf16" "$T/t4/log" && grep -q "75" "$T/t4/log"'

# 8. a GPU older than sm_75 is refused, naming it
recipe old "$F"
CUEMU_SM=70 run old
rc=$?
check "sm_70: exit 5 (no usable device), not a crash (got $rc)" '[ $rc = 5 ]'
check "sm_70: message names the compute capability and the minimum ($(tail -1 "$T/old/log"))" \
  'grep -q "compute capability 7.0; finetune needs 7.5 or newer" "$T/old/log"'

# 9. out of GPU memory: exit 4, the estimate and what to lower
recipe oom "$F"
CUEMU_MEM_MIB=24 run oom batch_size=8
rc=$?
check "oom: exit 4 (got $rc)" '[ $rc = 4 ]'
check "oom: message has the estimate and what to lower ($(grep -i "memory" "$T/oom/log" | head -2))" \
  'grep -q "This recipe needs about" "$T/oom/log" && grep -q "lower batch_size (8)" "$T/oom/log"'
check "oom: no output model" '[ ! -e "$T/oom/run/model.safetensors" ]'

exit $fail
