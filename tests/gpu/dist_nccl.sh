#!/usr/bin/env bash
# Data parallelism over NCCL on real GPUs (run by tests/gpu/run.sh; needs a GPU, a build with NCCL):
# - `--nproc 1` runs the whole NCCL path (TCP bootstrap of the id, communicator, all-reduces, broadcasts) and
#   gives the same losses and weights as the plain run (an all-reduce over one rank is the identity);
# - with two or more GPUs, `--nproc 2` at grad_accum 1 matches one process at grad_accum 2 within 1e-3
#   relative (cuBLAS's summation order differs between micro-batch splits) - the two-GPU check.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$SRC/tests/cli/lib.bash"
command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 || skip "no GPU (nvidia-smi -L)"
T=$(mktemp -d "${PWD:-/tmp}/dist_nccl.XXXXXX")
trap 'rm -rf "$T"' EXIT
R=$SRC/recipes/quickstart-sft.json
ARGS=(device=cuda precision=fp32 max_steps=6 save_every=3 eval_every=3 log_every=1)
"$FT" sft "$R" "${ARGS[@]}" grad_accum=2 output_dir="$T/one" > "$T/one.log" 2>&1
rc=$?
check "plain run on the GPU exits 0 ($(tail -1 "$T/one.log"))" '[ $rc = 0 ]'
NCCL_DEBUG=${NCCL_DEBUG:-WARN} "$FT" sft "$R" --nproc 1 "${ARGS[@]}" grad_accum=2 output_dir="$T/nproc1" > "$T/nproc1.log" 2>&1
rc=$?
grep -q "this build has none" "$T/nproc1.log" && skip "this build has no NCCL (libnccl not found at configure time)"
check "--nproc 1 (NCCL) exits 0 ($(tail -1 "$T/nproc1.log"))" '[ $rc = 0 ]'
check "--nproc 1 says NCCL" 'grep -q "NCCL .* (id over TCP)" "$T/nproc1.log"'
check "--nproc 1 = the plain run, byte for byte" 'cmp -s "$T/one/model.safetensors" "$T/nproc1/model.safetensors"'
ngpu=$(nvidia-smi -L | wc -l)
if [ "$ngpu" -ge 2 ]; then
  "$FT" sft "$R" --nproc 2 "${ARGS[@]}" grad_accum=1 output_dir="$T/nproc2" > "$T/nproc2.log" 2>&1
  rc=$?
  check "--nproc 2 on 2 GPUs exits 0 ($(tail -1 "$T/nproc2.log"))" '[ $rc = 0 ]'
  check "--nproc 2 losses = one process at the same global batch (1e-3)" \
    'paste <(grep -o "\"loss\":[0-9.e+-]*" "$T/one/metrics.jsonl") <(grep -o "\"loss\":[0-9.e+-]*" "$T/nproc2/metrics.jsonl") |
     awk -F"[:\t]" "{d=\$2-\$4; if (d<0) d=-d; if (d > 1e-3*\$2) bad=1} END {exit bad}"'
else
  echo "skipped: --nproc 2 needs two GPUs (this machine has $ngpu)"
fi
exit $fail
