#!/usr/bin/env bash
# train_gpu.sh: training speed and memory on a lent GPU: `finetune sft` on a Danube3-500M-shaped Llama
# (random init by `finetune init`, the quick-start data packed into rows of 2048 tokens), full SFT, LoRA
# and QLoRA; and, when python3 there can import torch (CUDA) + transformers (+ peft), the same job in a
# PyTorch loop (bench/train_torch.py: same checkpoint, same packed batches, bf16 autocast over fp32
# weights) for the ratios. First run on an H100: docs/gpu-log.md. bench/configs/ holds other shapes for CONFIG.
#
#   OUT=/some/dir bash bench/train_gpu.sh BUILD_DIR     (BUILD_DIR: a CUDA build with finetune and bench_sft_batches)
#
# Writes $OUT/bench-gpu/summary.md (the table) and one log per run. Per run: tokens/s over steps 3..N
# (ours: metrics.jsonl's cumulative tokens_per_s; torch: its own per-step timing with cuda synchronize),
# peak GPU memory (ours: metrics.jsonl mem_gib, the backend's peak; torch: max_memory_allocated), MFU =
# 6 * parameters * tokens/s / PEAK_TFLOPS (default 790e12, H100 dense bf16 as measured; the 6N rule is
# the full fine-tune's count, so LoRA/QLoRA MFU overstates their useful work), max |loss difference|.
# Knobs (env): STEPS (10), RUN_TIMEOUT (s per run, 60), PEAK_TFLOPS (790), MAXLEN (2048), PYTHON (python3),
# TORCH_REF (1; 0 skips the PyTorch runs), MODES ("full lora qlora"; also dpo-lora: ours only, the quick-start
# pairs, 8 a micro-batch, reference precomputed; a mode with -nocache, e.g. lora-nocache, runs with the cuBLASLt
# plan cache off for the A/B), DOCS (packed | long), TORCH_PLAIN (0), CONFIG (another config.json than the Danube3-500M shape, e.g. a smaller model on
# a T4). Total runtime stays under ~6 minutes: 5 runs of at most RUN_TIMEOUT each.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${OUT:-$ROOT/gpu-out}
B=$OUT/bench-gpu
mkdir -p "$B" || { echo "train_gpu.sh: cannot create $B" >&2; exit 2; }
STEPS=${STEPS:-10}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
PEAK_TFLOPS=${PEAK_TFLOPS:-790}
MAXLEN=${MAXLEN:-2048}
MODES=${MODES:-full lora qlora classify-qlora}
PY=${PYTHON:-python3}
FT=$BUILD/finetune
DUMP=$BUILD/bench_sft_batches
SUM=$B/summary.md
T_START=$SECONDS
export FT_CUDA_STATS=1 # each run's log ends with the cuBLASLt plan cache's hits and misses

say() { echo "$*" | tee -a "$SUM"; }
: >"$SUM"
say "# GPU training benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
say ""
[ -x "$FT" ] || { say "FAIL: $FT not found (build the CUDA backend first)"; exit 2; }
[ -x "$DUMP" ] || { say "FAIL: $DUMP not found (it is built with the benchmarks)"; exit 2; }
command -v nvidia-smi >/dev/null || { say "FAIL: nvidia-smi not found: no NVIDIA GPU here"; exit 2; }
GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
say "- gpu: ${GPU:-unknown} (sm_${CAP:-?}); commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# long_data OUT N: one long document per example (the quick-start answers joined, repeated past N tokens; a
# recipe's max_length truncates each to one full row, so every row is a single sequence: attention over all of it)
long_data() {
    "${PYTHON:-python3}" - "$ROOT/recipes/quickstart/openorca-sample.jsonl" "$1" "$2" <<'PYEOF'
import json, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = " ".join(json.loads(l)["response"] for l in open(src) if l.strip())
body = (text + " ") * (n * 5 // max(1, len(text)) + 2)  # ~4 characters a token: > n tokens
with open(dst, "w") as f:
    for i in range(64):
        f.write(json.dumps({"id": str(i), "system_prompt": "", "question": f"Recite passage {i}.", "response": body}) + "\n")
PYEOF
}

# T4=1: "a T4 on an H100". BUILD must be the T4 build (cmake -DFT_CUDA_T4_PTX=ON: compute_75 PTX only, run as
# sm_75 so fp16 and the sm_75 kernels, device memory capped at 15 GiB by our own allocator; tests/gpu/run.sh
# with T4=1 makes it). Three fit checks, each a short `finetune sft` on random weights of the shape, with
# tokens/s and the peak from metrics.jsonl, "fits" = the steps ran, "does not fit" = exit 4 (the cap):
#   1. Danube3-4B shape, QLoRA NF4 r 16, rows of 2048 tokens;
#   2. Danube2-1.8B shape, QLoRA NF4 r 16, offload_activations=true: one document of 4096, 8192, ... tokens
#      (doubling to T4_MAXLEN, 65536) until one does not fit: the longest that fits (goal >= 32768);
#   3. Danube3-500M shape, full fine-tune, rows of 2048 tokens.
# Knobs: T4_STEPS (3), T4_TIMEOUT (s per run, 150), T4_MAXLEN (65536), T4_LIMIT (15GiB, FT_GPU_MEMORY_LIMIT);
# for a smoke test of the script itself: T4_CFG_4B, T4_CFG_18B, T4_CFG_500M (config.json files), T4_LEN (2048),
# T4_LENS (the doubling list).
# Results: $B/t4.md (a table) and $B/t4.json.
if [ "${T4:-0}" = 1 ]; then
    T4_STEPS=${T4_STEPS:-3}
    T4_TIMEOUT=${T4_TIMEOUT:-150}
    T4_MAXLEN=${T4_MAXLEN:-65536}
    export FT_GPU_MEMORY_LIMIT=${T4_LIMIT:-15GiB}
    W=$(mktemp -d "${TMPDIR:-/tmp}/ft-bench-t4.XXXXXX")
    trap 'rm -rf "$W"' EXIT
    say "- T4 mode: FT_GPU_MEMORY_LIMIT=$FT_GPU_MEMORY_LIMIT, $T4_STEPS steps a run, random weights, precision auto"
    long_data "$W/long.jsonl" "$T4_MAXLEN" || { say "FAIL: could not write the long-document data (python3 needed)"; exit 2; }
    t4_json=()
    t4_run() { # t4_run NAME CONFIG MAXLEN DATA [key=value...]: init (once per config), then sft; prints "rc tok/s peak"
        local name=$1 cfg=$2 len=$3 data=$4 m
        shift 4
        m=$W/model-$(basename "$cfg" .json)
        if [ ! -d "$m" ]; then
            timeout 900 "$FT" init --config "$cfg" --out "$m" --seed 7 --dtype bf16 >"$B/t4-init-$(basename "$cfg" .json).log" 2>&1 ||
                { echo "init-failed 0 0"; return; }
        fi
        cat >"$W/$name.json" <<EOF2
{"model": "$m", "tokenizer": "$ROOT/recipes/quickstart/tokenizer", "data": "$data", "format": "openorca",
 "template": "danube", "output_dir": "$W/out-$name", "max_length": $len, "packing": true, "batch_size": 1,
 "grad_accum": 1, "max_steps": $T4_STEPS, "lr": 1e-4, "warmup_steps": 1, "save_every": 0, "log_every": 1,
 "device": "cuda", "seed": 42, "precision": "auto"}
EOF2
        timeout "$T4_TIMEOUT" "$FT" sft "$W/$name.json" "$@" >"$B/t4-$name.log" 2>&1
        local rc=$?
        cp "$W/out-$name/metrics.jsonl" "$B/t4-$name.metrics.jsonl" 2>/dev/null
        rm -rf "$W/out-$name"
        "${PYTHON:-python3}" - "$B/t4-$name.metrics.jsonl" "$rc" <<'PYEOF'
import json, os, sys
p, rc = sys.argv[1], sys.argv[2]
m = [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
m = [r for r in m if r.get("tokens_per_s")]
tps = m[-1]["tokens_per_s"] if m else 0
peak = max((r.get("mem_gib") or 0) for r in m) if m else 0
print(rc, f"{tps:.0f}", f"{peak:.2f}", len(m))
PYEOF
    }
    verdict() { case $1 in 0) echo "fits";; 4) echo "does not fit (exit 4)";; 124) [ "$2" -gt 0 ] && echo "fits (timed out after $2 steps)" || echo "unknown (timed out before a step)";; *) echo "failed (exit $1)";; esac; }
    say ""
    say "| check | shape | mode | tokens/row | result | tok/s | peak GiB (ours) |"
    say "|---|---|---|---|---|---|---|"
    read -r rc tps peak n <<<"$(t4_run q4b "${T4_CFG_4B:-$ROOT/bench/configs/danube3-4b.json}" "${T4_LEN:-2048}" "$W/long.jsonl" qlora.r=16 qlora.alpha=32)"
    say "| 1 | Danube3-4B | QLoRA NF4 r16 | ${T4_LEN:-2048} | $(verdict "$rc" "${n:-0}") | $tps | $peak |"
    t4_json+=("{\"check\": \"4b-qlora-2048\", \"exit\": $rc, \"tokens_per_s\": $tps, \"peak_gib\": $peak, \"steps\": ${n:-0}}")
    longest=0
    for len in ${T4_LENS:-4096 8192 16384 32768 65536 131072}; do
        [ "$len" -le "$T4_MAXLEN" ] || break
        read -r rc tps peak n <<<"$(t4_run "l18-$len" "${T4_CFG_18B:-$ROOT/bench/configs/danube2-1.8b.json}" "$len" "$W/long.jsonl" \
            qlora.r=16 qlora.alpha=32 offload_activations=true)"
        say "| 2 | Danube2-1.8B | QLoRA NF4 r16, offload | $len | $(verdict "$rc" "${n:-0}") | $tps | $peak |"
        t4_json+=("{\"check\": \"1.8b-qlora-offload\", \"tokens\": $len, \"exit\": $rc, \"tokens_per_s\": $tps, \"peak_gib\": $peak, \"steps\": ${n:-0}}")
        { [ "$rc" = 0 ] || { [ "$rc" = 124 ] && [ "${n:-0}" -gt 0 ]; }; } || break
        longest=$len
    done
    say "| 2 | Danube2-1.8B | longest that fits | $longest | $([ "$longest" -ge 32768 ] && echo "goal (>= 32768) met" || echo "goal (>= 32768) not met") | | |"
    read -r rc tps peak n <<<"$(t4_run f500m "${T4_CFG_500M:-$ROOT/bench/configs/danube3-500m.json}" "${T4_LEN:-2048}" "$W/long.jsonl")"
    say "| 3 | Danube3-500M | full fine-tune | ${T4_LEN:-2048} | $(verdict "$rc" "${n:-0}") | $tps | $peak |"
    t4_json+=("{\"check\": \"500m-full-2048\", \"exit\": $rc, \"tokens_per_s\": $tps, \"peak_gib\": $peak, \"steps\": ${n:-0}}")
    grep -h "cuda: " "$B"/t4-*.log 2>/dev/null | head -1 | sed 's/^/- backend: /' | tee -a "$SUM"
    (IFS=,; echo "{\"gpu\": \"${GPU:-unknown}\", \"limit\": \"$FT_GPU_MEMORY_LIMIT\", \"longest_1.8b_qlora\": $longest, \"runs\": [${t4_json[*]}]}") >"$B/t4.json"
    cp "$SUM" "$B/t4.md"
    exit 0
fi
HAVE_PY=0
command -v "$PY" >/dev/null && HAVE_PY=1
[ $HAVE_PY = 1 ] || say "- no $PY on this machine: our runs are kept in their logs but no table can be computed"

# The Python stack, if any (the machine has no network: nothing is installed).
TORCH=0
if [ $HAVE_PY = 1 ] && [ "${TORCH_REF:-1}" = 1 ]; then
    TV=$(timeout 60 "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; print('torch', torch.__version__)" 2>&1 | tail -1)
    if [[ "$TV" == torch* ]]; then
        if TT=$(timeout 60 "$PY" -c "import transformers, peft; print('transformers', transformers.__version__, 'peft', peft.__version__)" 2>&1 | tail -1) &&
            [[ "$TT" == transformers* ]]; then
            TORCH=1
            say "- python stack: $TV, $TT"
        else
            say "- python stack: $TV but no transformers/peft ($TT): our numbers only"
        fi
    else
        say "- python stack: torch with CUDA not importable ($TV): our numbers only"
    fi
fi
# The Python side at its ordinary best settings (TORCH_PLAIN=1: none of them): recompute per layer as we do,
# fused AdamW, SDPA's flash backend where the rows allow it (DOCS=long), bf16 frozen bases, bitsandbytes QLoRA.
TORCH_BEST=(--grad-checkpointing --fused-adamw --sdpa-flash)
[ "${TORCH_PLAIN:-0}" = 1 ] && TORCH_BEST=()
BNB=0
if [ $TORCH = 1 ]; then
    BNBV=$(timeout 60 "$PY" -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>&1 | tail -1)
    [[ "$BNBV" == bitsandbytes* ]] && BNB=1
fi
if [ "${CAP:-0}" -lt 80 ] 2>/dev/null && [ $TORCH = 1 ]; then
    say "- sm_$CAP has no bf16: the torch comparison (bf16 autocast) is skipped; ours runs with precision=auto (fp16)"
    TORCH=0
fi

# Danube3-500M's shape (docs: /work/shared/FACTS.md), random weights; or the CONFIG given.
W=$(mktemp -d "${TMPDIR:-/tmp}/ft-bench-gpu.XXXXXX")
trap 'rm -rf "$W"' EXIT
if [ -n "${CONFIG:-}" ]; then
    cp "$CONFIG" "$W/config.json" || { say "FAIL: cannot read CONFIG=$CONFIG"; exit 2; }
    SHAPE="the shape of $CONFIG"
else
    cat >"$W/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 1536,
 "intermediate_size": 4096, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
 "head_dim": 96, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
    SHAPE="Danube3-500M shape (hidden 1536, 16 layers, 16/8 heads, vocab 32000)"
fi
if ! timeout 120 "$FT" init --config "$W/config.json" --out "$W/model" --seed 7 >"$B/init.log" 2>&1; then
    say "FAIL: finetune init (see bench-gpu/init.log)"
    exit 1
fi
# (513,590,784 for the Danube3-500M shape: 2*32000*1536 + 16*(2*1536^2 + 2*1536*768 + 3*1536*4096 + 2*1536) + 1536)
PARAMS=$("$FT" info "$W/model" 2>/dev/null | awk '$1 == "parameters" { print $2; exit }')
[[ "$PARAMS" =~ ^[0-9]+$ ]] || { say "FAIL: finetune info gave no parameter count"; exit 1; }
# DOCS=packed (default): the quick-start rows packed (many short samples a row: both sides need a block-diagonal
# mask, so torch's SDPA cannot use its flash backend); DOCS=long: one sample a row (plain causal attention: flash)
DATA_FILE=$ROOT/recipes/quickstart/openorca-sample.jsonl
DATA_DESC="quick-start OpenOrca rows packed into rows of $MAXLEN tokens"
if [ "${DOCS:-packed}" = long ]; then
    DATA_FILE=$W/long.jsonl
    DATA_DESC="one long document a row ($MAXLEN tokens: the quick-start answers joined)"
    long_data "$DATA_FILE" "$MAXLEN" || { say "FAIL: could not write the long-document data"; exit 2; }
fi
cat >"$W/recipe.json" <<EOF
{"model": "$W/model", "tokenizer": "$ROOT/recipes/quickstart/tokenizer",
 "data": "$DATA_FILE", "format": "openorca", "template": "danube",
 "output_dir": "$W/unused", "max_length": $MAXLEN, "packing": true, "batch_size": 1, "grad_accum": 1,
 "max_steps": $STEPS, "lr": 1e-4, "schedule": "cosine", "warmup_steps": 2, "weight_decay": 0.0,
 "grad_clip": 1.0, "save_every": 0, "keep_last": 1, "log_every": 1, "device": "cuda", "seed": 42,
 "save_dtype": "bf16", "precision": "auto"}
EOF
# classify-qlora: the same model and shape as a sequence classifier (2 labels, score head on each packed
# sample's last token; real alpaca rows packed into rows of $MAXLEN tokens), QLoRA r 16: no lm_head at all.
cat >"$W/recipe-cls.json" <<EOF
{"model": "$W/model", "tokenizer": "$ROOT/recipes/quickstart/tokenizer",
 "data": "$ROOT/tests/fixtures/cls/alpaca-period.jsonl", "layout": "text", "labels": ["period", "other"],
 "output_dir": "$W/unused", "max_length": $MAXLEN, "packing": true, "batch_size": 1, "grad_accum": 1,
 "max_steps": $STEPS, "lr": 1e-4, "schedule": "cosine", "warmup_steps": 2, "weight_decay": 0.0,
 "grad_clip": 1.0, "save_every": 0, "keep_last": 1, "log_every": 1, "device": "cuda", "seed": 42,
 "precision": "auto"}
EOF
# DPO-LoRA (MODES dpo-lora): the quick-start preference pairs, 8 pairs a micro-batch, precomputed reference
# (whose cache key fingerprints the tokenizer dir as a model dir: so the tokenizer files go beside the model)
cp "$ROOT"/recipes/quickstart/tokenizer/* "$W/model/" 2>/dev/null
cat >"$W/dpo.json" <<EOF
{"model": "$W/model", "tokenizer": "$W/model",
 "data": "$ROOT/recipes/quickstart/pairs-sample.jsonl", "format": "orca_dpo", "template": "danube",
 "output_dir": "$W/unused", "max_length": $MAXLEN, "batch_size": 8, "grad_accum": 1, "max_steps": $STEPS,
 "epochs": 100, "lr": 1e-4, "schedule": "cosine", "warmup_steps": 2, "save_every": 0, "log_every": 1,
 "device": "cuda", "seed": 42, "precision": "auto",
 "dpo": {"loss": "sigmoid", "beta": 0.1, "reference": "precompute"}}
EOF
if ! timeout 60 "$DUMP" "$W/recipe.json" --epochs $((STEPS + 1)) >"$W/batches.jsonl" 2>"$B/dump.log"; then
    say "FAIL: bench_sft_batches (see bench-gpu/dump.log)"
    exit 1
fi
if [ $TORCH = 1 ] && ! timeout 120 "$PY" "$ROOT/bench/train_torch.py" init-lora --model "$W/model" --out "$W/peft-init" \
    --r 16 --alpha 32 >"$B/peft-init.log" 2>&1; then
    say "- PEFT adapter init failed (see bench-gpu/peft-init.log): LoRA runs start from our own init, no torch LoRA"
fi
say "- model: $SHAPE, $PARAMS parameters, random init;"
say "  data: $DATA_DESC, batch 1, $STEPS steps; timing over steps 3..$STEPS"
[ $TORCH = 1 ] && say "- torch at its ordinary best: ${TORCH_BEST[*]:-(plain: TORCH_PLAIN=1)}; LoRA on a bf16 base; QLoRA $([ $BNB = 1 ] && echo "on bitsandbytes NF4 ($BNBV)" || echo "not run (bitsandbytes not importable)")"
say ""

run() { # run NAME CMD...: with a timeout; a timed-out run still leaves its per-step metrics
    local name=$1 t0=$SECONDS rc
    shift
    timeout "$RUN_TIMEOUT" "$@" >"$B/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $((SECONDS - t0)) s" >>"$B/runs.txt"
    [ $rc -eq 124 ] && echo "$name: timed out after $RUN_TIMEOUT s (metrics so far are used)" | tee -a "$SUM"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && { echo "$name: failed (exit $rc), see bench-gpu/$name.log" | tee -a "$SUM"; tail -5 "$B/$name.log"; }
    return 0
}
for mode in $MODES; do
    # MODE-nocache: MODE with FT_CUDA_LT_CACHE=0 (cuBLASLt plans built per GEMM, as before issue 18): the A/B
    # of the plan cache in one call (docs/perf-notes.md)
    envs=()
    case $mode in *-nocache) envs=(env FT_CUDA_LT_CACHE=0) ;; esac
    cmd=sft recipe=$W/recipe.json
    case ${mode%-nocache} in
    full) over=(); tover=() ;;
    lora) over=("lora.r=16" "lora.alpha=32"); tover=(--lora-init "$W/peft-init" --bf16-base) ;;
    qlora) over=("qlora.r=16" "qlora.alpha=32"); tover=(--lora-init "$W/peft-init" --qlora) ;;
    dpo-lora) over=("lora.r=16" "lora.alpha=32"); tover=(); cmd=dpo recipe=$W/dpo.json ;; # ours only (no Python DPO step yet)
    classify-qlora) over=("qlora.r=16" "qlora.alpha=32"); tover=(); cmd=classify recipe=$W/recipe-cls.json ;;
    *) say "unknown mode '$mode' (full, lora, qlora, dpo-lora, classify-qlora, each also with -nocache): skipped"; continue ;;
    esac
    sec=${mode%-nocache} # the recipe section: lora or qlora (dpo-lora: lora)
    sec=${sec#dpo-}
    [ "$sec" != full ] && [ "$cmd" != classify ] && [ -d "$W/peft-init" ] && over+=("$sec.init_from=$W/peft-init")
    # The dry run's memory estimate, to set beside the measured peak ("memory estimate (...): X GiB (... overhead Y)")
    "$FT" $cmd "$recipe" output_dir="$W/ours-$mode" "${over[@]}" --dry-run 2>&1 |
        sed -n 's/^memory estimate.*: \([0-9.]*\) GiB (.*overhead \([0-9.]*\)).*/\1 \2/p' >"$B/ours-$mode.estimate"
    run "ours-$mode" "${envs[@]}" "$FT" $cmd "$recipe" output_dir="$W/ours-$mode" "${over[@]}"
    cp "$W/ours-$mode/metrics.jsonl" "$B/ours-$mode.metrics.jsonl" 2>/dev/null
    rm -rf "$W/ours-$mode" # 0.5B checkpoints: free the disk
    if [ $TORCH = 1 ] && [ "$cmd" = sft ] && { [ "$mode" != qlora ] || [ $BNB = 1 ]; } && [ ${#envs[@]} = 0 ] &&
        { [ "$mode" = full ] || [ -d "$W/peft-init" ]; }; then
        run "torch-$mode" "$PY" "$ROOT/bench/train_torch.py" train --model "$W/model" --batches "$W/batches.jsonl" \
            --steps "$STEPS" --lr 1e-4 --warmup 2 --schedule cosine --wd 0 --clip 1.0 --device cuda --dtype bf16 \
            --out "$B/torch-$mode.metrics.jsonl" "${tover[@]}" "${TORCH_BEST[@]}"
    fi
done

[ $HAVE_PY = 1 ] || { echo "no python3: raw metrics are in $B"; exit 0; }
"$PY" - "$B" "$W/batches.jsonl" "$STEPS" "$PARAMS" "$PEAK_TFLOPS" "$MODES" >>"$SUM" 2>"$B/summary.err" <<'EOF' || say "summary failed: see bench-gpu/summary.err"
import json, os, sys
b, batches, steps, params, peak, modes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) * 1e12, sys.argv[6].split()
bt = []
for l, _ in zip(open(batches), range(steps)):
    x = json.loads(l)
    bt.append(x["rows"] * x["row_len"])

def rows(p):
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []

def ours(mode):
    m = {r["step"]: r for r in rows(f"{b}/ours-{mode}.metrics.jsonl") if r.get("tokens_per_s")}
    n = max(m) if m else 0
    if n < 3:
        return None
    if mode.startswith("dpo"):  # other batches than the SFT dump: the run's own average (steps 1..n)
        tps = m[n]["tokens_per_s"]
    else:
        el = lambda k: sum(bt[:k]) / m[k]["tokens_per_s"]
        tps = sum(bt[2:n]) / (el(n) - el(2))
    return {"tps": tps, "mem": max(r.get("mem_gib") or 0 for r in m.values()),
            "loss": [m[k]["loss"] for k in sorted(m)], "n": n}

def torch(mode):
    m = rows(f"{b}/torch-{mode}.metrics.jsonl")
    if len(m) < 3:
        return None
    return {"tps": sum(r["tokens"] for r in m[2:]) / sum(r["time_s"] for r in m[2:]), "mem": max(r["mem_gib"] for r in m),
            "loss": [r["loss"] for r in m], "n": len(m)}

print("| mode | ours tok/s | ours peak GiB | ours MFU | torch tok/s | torch peak GiB | speed ratio | memory ratio | max abs loss diff | steps |")
print("|---|---|---|---|---|---|---|---|---|---|")
results = {"params": params, "peak_tflops": peak / 1e12, "modes": {}}
for mode in modes:
    o, t = ours(mode), torch(mode)
    results["modes"][mode] = {"ours": o, "torch": t}
    if not o:
        print(f"| {mode} | no result (fewer than 3 steps logged) | | | | | | | | |")
        continue
    mfu = 6 * params * o["tps"] / peak * 100
    o["mfu"] = mfu / 100
    cells = [f"{o['tps']:,.0f}", f"{o['mem']:.2f}", f"{mfu:.1f}%"]
    if t:
        k = min(len(o["loss"]), len(t["loss"]))
        dl = max(abs(x - y) for x, y in zip(o["loss"][:k], t["loss"][:k]) if x is not None)
        cells += [f"{t['tps']:,.0f}", f"{t['mem']:.2f}", f"{o['tps'] / t['tps']:.2f}", f"{o['mem'] / t['mem']:.2f}", f"{dl:.2e}"]
    else:
        cells += ["-"] * 5
    print(f"| {mode} | " + " | ".join(cells) + f" | {o['n']}{'/' + str(t['n']) if t else ''} |")
with open(f"{b}/summary.json", "w") as f:  # the same numbers, for bench/results/
    json.dump(results, f, indent=1)
print()
print("Memory: the dry run's estimate against the measured peak (the backend's own allocations, as the progress")
print("line shows; the estimate's fixed overhead stands for the CUDA context and cuBLAS workspace, outside them).")
print()
print("| mode | measured peak GiB | dry-run estimate GiB | estimate without overhead | ratio to measured |")
print("|---|---|---|---|---|")
for mode in modes:
    o = ours(mode)
    e = open(f"{b}/ours-{mode}.estimate").read().split() if os.path.exists(f"{b}/ours-{mode}.estimate") else []
    if not o or len(e) != 2:
        print(f"| {mode} | no result | | | |")
        continue
    est, over = float(e[0]), float(e[1])
    print(f"| {mode} | {o['mem']:.2f} | {est:.2f} | {est - over:.2f} | {(est - over) / o['mem']:.3f} |")
print()
print(f"MFU = 6 x {params:,} x tokens/s / {peak / 1e12:.0f} TFLOP/s (full fine-tune count; LoRA/QLoRA do less).")
EOF
say ""
say "total $((SECONDS - T_START)) s"
