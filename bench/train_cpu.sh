#!/usr/bin/env bash
# train_cpu.sh: the same training job done by `finetune sft` and by PyTorch + transformers (+ PEFT) on the
# CPU, side by side in one run; prints a table and writes it to bench/results/cpu-<date>.md.
#
#   bash bench/train_cpu.sh [BUILD_DIR]        (default ./build; needs finetune and bench_sft_batches)
#
# Both train the same model (one random checkpoint written by `finetune init`, loaded by both) on the
# same packed micro-batches (bench_sft_batches prints the rows `finetune sft` plans; train_torch.py reads
# them), fp32, the same thread count, the same AdamW / cosine schedule / clipping. Modes: full SFT and
# LoRA (ours: lora.init_from = the adapter PEFT initialised and saved, so both start identical).
# Measured per run: tokens/s over steps 3..N (start-up excluded: ours from metrics.jsonl's cumulative
# tokens_per_s, torch from its own per-step timing), peak RSS (/usr/bin/time -v, whole process), and
# the per-step loss of both (max |difference| is the correctness check). Each measurement runs REPS
# times; the table shows the best and the spread.
# Knobs (env): VENV (/work/venv), THREADS (nproc), STEPS (20), REPS (3), MAXLEN (512), HIDDEN (256),
# LAYERS (4), MODES ("full lora"), RESULTS (bench/results), KEEP (0: delete the work dir).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" 2>/dev/null && pwd) || { echo "train_cpu.sh: build dir '${1:-$ROOT/build}' not found" >&2; exit 2; }
VENV=${VENV:-/work/venv}
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}
STEPS=${STEPS:-20}
REPS=${REPS:-3}
MAXLEN=${MAXLEN:-512}
HIDDEN=${HIDDEN:-256}
LAYERS=${LAYERS:-4}
MODES=${MODES:-full lora}
RESULTS=${RESULTS:-$ROOT/bench/results}
KEEP=${KEEP:-0}
FT=$BUILD/finetune
DUMP=$BUILD/bench_sft_batches

die() { echo "train_cpu.sh: $*" >&2; exit 2; }
[ -x "$FT" ] || die "$FT not found: build first (cmake -S . -B build -DFT_CUDA=OFF && cmake --build build)"
[ -x "$DUMP" ] || die "$DUMP not found: rebuild (bench/bench_sft_batches.c is built with the benchmarks)"
[ "$STEPS" -ge 4 ] 2>/dev/null || die "STEPS must be >= 4 (steps 1-2 are excluded from the timing)"
TIME=/usr/bin/time
[ -x $TIME ] || die "/usr/bin/time not found (GNU time, for peak RSS): apt-get install -y time"
PY=$VENV/bin/python
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || die "no Python: neither $VENV/bin/python nor python3 exists"
if ! "$PY" -c "import torch, transformers, peft" 2>/dev/null; then
    die "the Python stack is missing: '$PY -c \"import torch, transformers, peft\"' fails; set VENV=/path/to/venv (torch, transformers, peft)"
fi
PYVER=$("$PY" -c "import torch, transformers, peft; print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')")

WORK=$(mktemp -d /tmp/ft-bench-cpu.XXXXXX)
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "work dir $WORK; threads $THREADS; $PYVER"

# The model: a small Llama, vocab 32000 (the quick-start Mistral tokenizer), one random init for both.
HEADS=$((HIDDEN / 64))
cat >"$WORK/config.json" <<EOF
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
 "hidden_size": $HIDDEN, "intermediate_size": $((HIDDEN * 8 / 3 / 16 * 16)), "num_hidden_layers": $LAYERS,
 "num_attention_heads": $HEADS, "num_key_value_heads": $(( HEADS > 1 ? HEADS / 2 : 1 )),
 "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
"$FT" init --config "$WORK/config.json" --out "$WORK/model" --seed 7 >"$WORK/init.log" 2>&1 ||
    { cat "$WORK/init.log"; die "finetune init failed"; }
PARAMS=$("$PY" -c "
import json; from safetensors import safe_open
f = safe_open('$WORK/model/model.safetensors', 'pt'); n = 0
for k in f.keys(): n += f.get_slice(k).get_shape()[0] * (f.get_slice(k).get_shape()[1] if len(f.get_slice(k).get_shape()) > 1 else 1)
print(n)")

# The data: the quick-start OpenOrca sample, packed into rows of MAXLEN tokens; max_steps wraps epochs.
cat >"$WORK/recipe.json" <<EOF
{"model": "$WORK/model", "tokenizer": "$ROOT/recipes/quickstart/tokenizer",
 "data": "$ROOT/recipes/quickstart/openorca-sample.jsonl", "format": "openorca", "template": "danube",
 "output_dir": "$WORK/unused", "max_length": $MAXLEN, "packing": true, "batch_size": 1, "grad_accum": 1,
 "max_steps": $STEPS, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 2, "weight_decay": 0.0,
 "grad_clip": 1.0, "save_every": 0, "log_every": 5, "device": "cpu", "seed": 42, "save_dtype": "f32"}
EOF
"$DUMP" "$WORK/recipe.json" --epochs $((STEPS + 1)) >"$WORK/batches.jsonl" 2>"$WORK/dump.log" ||
    { cat "$WORK/dump.log"; die "bench_sft_batches failed"; }
echo "model: hidden $HIDDEN, $LAYERS layers, vocab 32000, $PARAMS parameters; rows of $MAXLEN tokens, $STEPS steps"

"$PY" "$ROOT/bench/train_torch.py" init-lora --model "$WORK/model" --out "$WORK/peft-init" --r 16 --alpha 32 \
    >"$WORK/peft-init.log" 2>&1 || { cat "$WORK/peft-init.log"; die "PEFT adapter init failed"; }

rss_kib() { sed -n 's/.*Maximum resident set size (kbytes): *//p' "$1"; }
for mode in $MODES; do
    case $mode in
    full) over=(); tover=() ;;
    lora) over=("lora.r=16" "lora.alpha=32" 'lora.target_modules="all-linear"' "lora.init_from=$WORK/peft-init")
        tover=(--lora-init "$WORK/peft-init") ;;
    *) die "unknown mode '$mode' (full, lora)" ;;
    esac
    for rep in $(seq 1 "$REPS"); do
        d=$WORK/ours-$mode-$rep
        echo "[$mode $rep/$REPS] finetune sft"
        $TIME -v "$FT" sft "$WORK/recipe.json" output_dir="$d" "${over[@]}" >"$WORK/ours-$mode-$rep.log" 2>&1 ||
            { tail -20 "$WORK/ours-$mode-$rep.log"; die "finetune sft ($mode) failed"; }
        echo "$(rss_kib "$WORK/ours-$mode-$rep.log")" >"$d/rss_kib"
        echo "[$mode $rep/$REPS] torch"
        t=$WORK/torch-$mode-$rep
        mkdir -p "$t"
        $TIME -v "$PY" "$ROOT/bench/train_torch.py" train --model "$WORK/model" --batches "$WORK/batches.jsonl" \
            --steps "$STEPS" --lr 1e-3 --warmup 2 --schedule cosine --wd 0 --clip 1.0 --threads "$THREADS" \
            --out "$t/metrics.jsonl" "${tover[@]}" >"$t/log" 2>&1 || { tail -20 "$t/log"; die "train_torch.py ($mode) failed"; }
        echo "$(rss_kib "$t/log")" >"$t/rss_kib"
    done
done

# The table.
mkdir -p "$RESULTS"
DATE=$(date -u +%Y-%m-%d)
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
REPORT=$RESULTS/cpu-$DATE.md
"$PY" "$ROOT/bench/summarize_cpu.py" "$WORK" "$STEPS" "$REPS" "$MODES" >"$WORK/table.md" || die "summary failed"
{
    echo "# CPU training benchmark, $DATE"
    echo
    echo "- machine: $(nproc) cores ($CPU), shared with other builds while measuring; threads $THREADS for both"
    echo "- commit: $COMMIT; $PYVER"
    echo "- model: Llama, hidden $HIDDEN, $LAYERS layers, vocab 32000, $PARAMS parameters (one \`finetune init\` checkpoint loaded by both), fp32"
    echo "- data: recipes/quickstart/openorca-sample.jsonl, danube template, packed rows of $MAXLEN tokens, batch 1, $STEPS steps (the same micro-batches for both)"
    echo "- tokens/s over steps 3..$STEPS, best of $REPS runs (spread = (best − worst)/best); best step = the fastest single step of all runs (least disturbed by other load); peak RSS of the whole process (/usr/bin/time -v), lowest of $REPS; max abs loss diff over every step of every run pair"
    echo "- LoRA: r 16, alpha 32, q/k/v/o/gate/up/down, both starting from the adapter PEFT initialised"
    echo
    cat "$WORK/table.md"
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "written: $REPORT"
