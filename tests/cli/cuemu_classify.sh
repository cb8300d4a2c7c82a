#!/usr/bin/env bash
# finetune classify / predict with device=cuda, run by finetune_cuemu (the CUDA backend's kernels on the CPU
# emulator, tests/cuemu):
#   - a full fine-tune in fp32 follows the CPU's loss curve step by step (within 1e-3), and in fp16 (loss
#     scaling from 2^10, no step skipped) within 2e-2;
#   - LoRA in bf16 (the frozen base in 16 bits, the score head's fp32 master beside its bf16 copy) trains and
#     writes a SEQ_CLS adapter; predict on the emulated GPU in bf16 gives the CPU's fp32 probabilities within 2e-2.
# Skipped (77) without the emulator build (FT_BIN_CUEMU). On a GPU machine tests/gpu/run.sh can run it with the
# real binary (FT_BIN_CUEMU=build/finetune).
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
FG=${FT_BIN_CUEMU:-}
[ -n "$FG" ] && [ -x "$FG" ] || { echo "skipped: FT_BIN_CUEMU (finetune built for the CUDA emulator) not set; configure with -DFT_CUEMU=ON to run it"; exit 77; }
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/cuemu_classify.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
export CUEMU_SM=90

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -48 "$SRC/tests/fixtures/cls/alpaca-period.jsonl" > "$T/data.jsonl"
"$FT" init --config "$T/tiny.json" --out "$T/base" --seed 5 > /dev/null 2>&1
check "base checkpoint" '[ -s "$T/base/model.safetensors" ]'
cat > "$T/recipe.json" << EOF
{"model": "base", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl", "layout": "text",
 "labels": ["period", "other"], "output_dir": "run", "max_length": 48, "packing": true, "batch_size": 2,
 "max_steps": 6, "lr": 5e-3, "warmup_steps": 1, "log_every": 1, "seed": 2}
EOF
for d in cpu gpu32 gpu16 lcpu lgpu; do mkdir "$T/$d" && cp -r "$T/base" "$T/data.jsonl" "$T/recipe.json" "$T/$d/"; done
losses() { grep -o '"loss":[^,}]*' "$1" | cut -d: -f2; }
close() { # close A B TOL: the two loss columns agree within TOL (relative to max(1, |a|))
  paste <(losses "$1") <(losses "$2") | awk -v t="$3" '{ d = $1 - $2; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2;
    if (m < 1) m = 1; if (d > t * m) bad = 1; n++ } END { exit bad || n < 6 }'
}

"$FT" classify "$T/cpu/recipe.json" device=cpu > "$T/cpu.log" 2>&1
check "CPU run ($(tail -1 "$T/cpu.log"))" '[ -s "$T/cpu/run/model.safetensors" ]'
"$FG" classify "$T/gpu32/recipe.json" device=cuda precision=fp32 > "$T/gpu32.log" 2>&1
check "emulated GPU fp32 run ($(tail -1 "$T/gpu32.log"))" '[ -s "$T/gpu32/run/model.safetensors" ]'
check "fp32: every step's loss within 1e-3 of the CPU's" 'close "$T/gpu32/run/metrics.jsonl" "$T/cpu/run/metrics.jsonl" 1e-3'
# (an initial scale of 2^10 rather than 2^16: an overflow-skipped step, GradScaler's routine at the start, would
# put the curves one update apart)
"$FG" classify "$T/gpu16/recipe.json" device=cuda precision=fp16 loss_scale_init=1024 > "$T/gpu16.log" 2>&1
check "emulated GPU fp16 run with loss scaling ($(tail -1 "$T/gpu16.log"))" \
  '[ -s "$T/gpu16/run/model.safetensors" ] && grep -q loss_scale "$T/gpu16/run/metrics.jsonl" && ! grep -q skipped "$T/gpu16/run/metrics.jsonl"'
check "fp16: every step's loss within 2e-2 of the CPU's" 'close "$T/gpu16/run/metrics.jsonl" "$T/cpu/run/metrics.jsonl" 2e-2'

LORA='lora={"r": 4, "alpha": 8}'
"$FT" classify "$T/lcpu/recipe.json" device=cpu "$LORA" > "$T/lcpu.log" 2>&1
"$FG" classify "$T/lgpu/recipe.json" device=cuda precision=bf16 "$LORA" > "$T/lgpu.log" 2>&1
check "LoRA bf16 on the emulated GPU ($(tail -1 "$T/lgpu.log"))" 'grep -q SEQ_CLS "$T/lgpu/run/adapter_config.json"'
check "LoRA bf16: every step's loss within 5e-2 of the CPU's" 'close "$T/lgpu/run/metrics.jsonl" "$T/lcpu/run/metrics.jsonl" 5e-2'
"$FT" predict "$T/base" --adapter "$T/lgpu/run" --data "$T/data.jsonl" --out "$T/p_cpu.csv" --device cpu > /dev/null 2>&1
"$FG" predict "$T/base" --adapter "$T/lgpu/run" --data "$T/data.jsonl" --out "$T/p_gpu.csv" --device cuda --precision bf16 > "$T/pg.log" 2>&1
check "predict in bf16 on the emulated GPU ($(tail -1 "$T/pg.log"))" '[ "$(wc -l < "$T/p_gpu.csv")" = 49 ]'
check "its probabilities within 2e-2 of the CPU's" \
  'paste -d, "$T/p_cpu.csv" "$T/p_gpu.csv" | awk -F, "NR>1{ d = \$2 - \$5; if (d*d > 4e-4) bad=1 } END{exit bad}"'
exit $fail
