#!/usr/bin/env bash
# dist_cpu.sh: step time of data-parallel training at 1 and 2 ranks on the CPU backend over MPI, the same global
# batch (1 rank x grad_accum 2 vs 2 ranks x grad_accum 1), one OpenMP thread per rank: the scaling of the
# data-parallel logic (the all-reduces, the split of the steps), not of a GPU cluster. Reported as a ratio,
# never asserted.
#
#   bash bench/dist_cpu.sh [BUILD_DIR]     (default ./build; needs mpirun)
# Knobs (env): STEPS (12), MAXLEN (256), REPS (2).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" 2>/dev/null && pwd) || { echo "dist_cpu.sh: build dir not found" >&2; exit 2; }
command -v mpirun > /dev/null || { echo "dist_cpu.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }
STEPS=${STEPS:-12}
MAXLEN=${MAXLEN:-256}
REPS=${REPS:-2}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,tcp
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
ARGS=(max_steps=$STEPS max_length=$MAXLEN save_every=0 eval_every=0 eval_fraction=0 log_every=1000)
# seconds per step over steps 3..STEPS, from the wall clock of metrics.jsonl's appearance is too coarse: use the
# run's own tokens_per_s (cumulative over the run) at the last step and the tokens per step.
per_step() { # metrics.jsonl -> ms per optimizer step
  python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "loss" in l]
last = r[-1]
tok = 2 * int(sys.argv[2])  # packed rows of MAXLEN tokens: 2 per global step
print("%.1f" % (1000.0 * tok / last["tokens_per_s"]))' "$1" "$MAXLEN"
}
best() { sort -n | head -1; }
one=() two=()
for rep in $(seq "$REPS"); do
  "$BUILD/finetune" sft "$ROOT/recipes/quickstart-sft.json" "${ARGS[@]}" grad_accum=2 output_dir="$T/one$rep" > /dev/null 2>&1 &&
    one+=("$(per_step "$T/one$rep/metrics.jsonl")")
  mpirun --oversubscribe --bind-to none -np 2 "$BUILD/finetune" sft "$ROOT/recipes/quickstart-sft.json" "${ARGS[@]}" \
    grad_accum=1 output_dir="$T/two$rep" > /dev/null 2>&1 && two+=("$(per_step "$T/two$rep/metrics.jsonl")")
done
b1=$(printf '%s\n' "${one[@]}" | best)
b2=$(printf '%s\n' "${two[@]}" | best)
echo "data parallel on the CPU backend over MPI, $(getconf _NPROCESSORS_ONLN) cores, 1 thread per rank, global batch 2 rows of $MAXLEN tokens"
echo "  1 rank  (grad_accum 2): ${b1:-?} ms/step   (best of: ${one[*]})"
echo "  2 ranks (grad_accum 1): ${b2:-?} ms/step   (best of: ${two[*]})"
[ -n "${b1:-}" ] && [ -n "${b2:-}" ] && awk -v a="$b1" -v b="$b2" 'BEGIN { printf "  speed-up 2 ranks / 1 rank: %.2fx (ideal 2x)\n", a / b }'
