#!/usr/bin/env bash
# dpo_shared_cpu.sh: DPO's shared-prompt layout (dpo.shared_prompt) against TRL's layout on orca_dpo_pairs
# rows, on the CPU with a small random Llama: tokens per epoch and the time of a training epoch and of a
# reference pass, in one process, alternating (bench_dpo_shared). Prints a table and writes it to
# bench/results/dpo-shared-cpu-<date>.md. Numbers only: nothing here is asserted.
#
#   bash bench/dpo_shared_cpu.sh [BUILD_DIR]      (default ./build; needs bench_dpo_shared)
#
# Data: tests/fixtures/assets/datasets/openai-preference.jsonl, 80 rows of Intel/orca_dpo_pairs (system
# prompt + question, chosen, rejected; the OpenAI preference conversion), the danube template and the
# quick-start Mistral tokenizer. Knobs (env): THREADS (nproc), REPS (3), MAXLEN (1024), BATCH (4 pairs),
# HIDDEN (256), LAYERS (4), DATA (that file), ROWS (all: the first ROWS rows only), RESULTS (bench/results).
# The whole run at the defaults is ~1 CPU-hour (vocab 32000: the lm_head dominates); on a busy 2-core
# machine use e.g. ROWS=16 HIDDEN=128 LAYERS=2 REPS=2.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" 2>/dev/null && pwd) || { echo "dpo_shared_cpu.sh: build dir '${1:-$ROOT/build}' not found" >&2; exit 2; }
BIN=$BUILD/bench_dpo_shared
[ -x "$BIN" ] || { echo "dpo_shared_cpu.sh: $BIN not found: build first" >&2; exit 2; }
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}
REPS=${REPS:-3}
MAXLEN=${MAXLEN:-1024}
BATCH=${BATCH:-4}
HIDDEN=${HIDDEN:-256}
LAYERS=${LAYERS:-4}
DATA=${DATA:-$ROOT/tests/fixtures/assets/datasets/openai-preference.jsonl}
ROWS=${ROWS:-0}
ROWS_OF=$(basename "$DATA")
RESULTS=${RESULTS:-$ROOT/bench/results}
WORK=$(mktemp -d /tmp/ft-bench-dpo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=$THREADS
if [ "$ROWS" -gt 0 ] 2>/dev/null; then
  head -n "$ROWS" "$DATA" >"$WORK/data.jsonl"
  DATA=$WORK/data.jsonl
fi
HEADS=$((HIDDEN / 64))
cat >"$WORK/config.json" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
 "hidden_size": $HIDDEN, "intermediate_size": $((HIDDEN * 8 / 3 / 16 * 16)), "num_hidden_layers": $LAYERS,
 "num_attention_heads": $HEADS, "num_key_value_heads": $(( HEADS > 1 ? HEADS / 2 : 1 )),
 "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
JSON
cat >"$WORK/recipe.json" <<JSON
{"model_init": "$WORK/config.json", "tokenizer": "$ROOT/recipes/quickstart/tokenizer", "data": "$DATA",
 "format": "auto", "template": "danube", "output_dir": "$WORK/out", "max_length": $MAXLEN,
 "batch_size": $BATCH, "device": "cpu", "seed": 42}
JSON
OUT=$("$BIN" "$WORK/recipe.json" --reps "$REPS" 2>"$WORK/err") || { cat "$WORK/err" >&2; exit 1; }
mkdir -p "$RESULTS"
RES="$RESULTS/dpo-shared-cpu-$(date -u +%Y-%m-%d).md"
{
  echo "# DPO shared prompt vs TRL's layout, CPU ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "$(grep -c . "$DATA") rows of ${ROWS_OF:-$(basename "$DATA")}; $(cat "$WORK/err")"
  echo "Model: random Llama, hidden $HIDDEN, $LAYERS layers, vocab 32000; fp32; $THREADS threads;" \
       "max_length $MAXLEN; full-model gradients, SimPO loss; $(uname -m), $(nproc) cores."
  echo
  echo "$OUT"
} | tee "$RES"
echo "written to $RES" >&2
