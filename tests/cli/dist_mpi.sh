#!/usr/bin/env bash
# Data parallelism over MPI on the CPU backend (finetune/train/dist, docs/distributed.md):
# - zero=1 (ZeRO-1) gives the same bytes (weights, checkpoints) as without it;
# - mpirun -np 2 with grad_accum 1 computes the same run as one process with grad_accum 2 (the same global
#   batch): losses per step, eval loss and final weights within 1e-5 relative (fp32 summation order);
#   --nproc 2 (which starts mpirun itself) gives the same bytes as mpirun -np 2;
# - SIGKILL of one rank mid-step ends every rank with a non-zero status well within the timeout, and
#   --resume continues to the uninterrupted run's losses and weights with 2 ranks, and with 1 rank at the same
#   global batch (grad_accum 2); another global batch is refused, naming both;
# - a rank that hangs (SIGSTOP) ends the job within --dist-timeout with an error naming the collective;
# - ranks given different recipes stop at start-up with a message naming the key.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/lib.bash"
[ "${FT_HAVE_MPI:-ON}" = ON ] || skip "this build has no MPI (install libopenmpi-dev openmpi-bin: bash tests/deps.sh does, then reconfigure)"
command -v mpirun > /dev/null || skip "mpirun not found (install openmpi-bin; tests/run.sh installs it through tests/deps.sh)"
T=$(mktemp -d "${PWD:-/tmp}/dist_mpi.XXXXXX")
BG=
cleanup() {
  [ -n "$BG" ] && kill -9 "$BG" 2> /dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
unset FT_FAULT
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OpenMPI on a small container: no interface probing surprises, no warnings about missing high-speed networks
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
MPI=(mpirun --oversubscribe --bind-to none)

R=$SRC/recipes/quickstart-sft.json
ARGS=(max_steps=6 save_every=2 keep_last=3 eval_every=3 log_every=1)

cat > "$T/cmp.py" << 'PY'
# cmp.py metrics A B | weights A B: equal within 1e-5 relative (per step's loss / eval loss; per tensor's max-abs)
import json, struct, sys
def metrics(p):
    out = {}
    for line in open(p):
        r = json.loads(line)
        for k in ("loss", "eval_loss", "grad_norm"):
            if r.get(k) is not None: out[(r["step"], k)] = r[k]
    return out
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        assert v["dtype"] == "F32", k
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
what, a, b = sys.argv[1:4]
A, B = (metrics(a), metrics(b)) if what == "metrics" else (tensors(a), tensors(b))
if set(A) != set(B):
    sys.exit("different keys: %s" % sorted(set(A) ^ set(B))[:5])
worst = 0
for k in A:
    x, y = (A[k], B[k]) if what == "metrics" else (A[k], B[k])
    if what == "metrics":
        rel = abs(x - y) / max(abs(x), 1e-12)
    else:
        scale = max(max(abs(v) for v in x), 1e-12)
        rel = max(abs(p - q) for p, q in zip(x, y)) / scale
    worst = max(worst, rel)
    if rel > 1e-5:
        sys.exit("%s %s: relative difference %.3g" % (what, k, rel))
print("%s: %d compared, worst relative difference %.2g" % (what, len(A), worst))
PY
same() { python3 "$T/cmp.py" metrics "$1/metrics.jsonl" "$2/metrics.jsonl" && python3 "$T/cmp.py" weights "$1/model.safetensors" "$2/model.safetensors"; }

# One process, global batch 2 (grad_accum 2), uninterrupted: the reference.
"$FT" sft "$R" "${ARGS[@]}" grad_accum=2 output_dir="$T/ref" > "$T/ref.log" 2>&1
rc=$?
check "one process, grad_accum 2 exits 0 ($(tail -1 "$T/ref.log"))" '[ $rc = 0 ]'

# Two ranks, grad_accum 1: the same global batch.
"${MPI[@]}" -np 2 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/np2" > "$T/np2.log" 2>&1
rc=$?
check "mpirun -np 2 exits 0 ($(tail -1 "$T/np2.log"))" '[ $rc = 0 ]'
check "rank 0 alone prints the progress line" '[ "$(grep -c "^step 6/6" "$T/np2.log")" = 1 ]'
check "the log says data parallel with 2 ranks" 'grep -q "data parallel: rank 0 of 2" "$T/np2.log"'
check "2 ranks = 1 process at the same global batch: losses, eval loss, weights within 1e-5" 'same "$T/ref" "$T/np2"'
check "checkpoints and metrics written once (by rank 0)" \
  '[ "$(ls "$T/np2/checkpoints" | grep -c "^step-")" = 3 ] && [ "$(wc -l < "$T/np2/metrics.jsonl")" = 8 ]'

# --nproc 2 starts mpirun itself: the same bytes.
"$FT" sft "$R" --nproc 2 "${ARGS[@]}" grad_accum=1 output_dir="$T/nproc" > "$T/nproc.log" 2>&1
rc=$?
check "--nproc 2 exits 0 and equals mpirun -np 2 byte for byte" \
  '[ $rc = 0 ] && cmp -s "$T/nproc/model.safetensors" "$T/np2/model.safetensors"'

# ZeRO-1 (zero=1): AdamW's moments sharded, each tensor updated by its owner and broadcast: the same bytes, and
# the checkpoints (moments gathered to rank 0) identical to those without it.
"${MPI[@]}" -np 2 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 zero=1 output_dir="$T/zero" > "$T/zero.log" 2>&1
rc=$?
check "zero=1 exits 0 and says so" '[ $rc = 0 ] && grep -q "ZeRO-1: AdamW.s moments sharded over 2 ranks" "$T/zero.log"'
check "zero=1: the same weights and checkpoints as without it, byte for byte" \
  'cmp -s "$T/zero/model.safetensors" "$T/np2/model.safetensors" && diff -r "$T/zero/checkpoints" "$T/np2/checkpoints" > /dev/null'

# SIGKILL of rank 1 in the middle of step 5 (after the checkpoint of step 4): every rank ends, non-zero.
t0=$(date +%s)
timeout 120 "${MPI[@]}" -np 1 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/kill" --dist-timeout 60 : \
  -np 1 env FT_FAULT=kill:train-mid-step:5 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/kill" \
  --dist-timeout 60 > "$T/kill.log" 2>&1
rc=$?
t1=$(date +%s)
check "a rank SIGKILLed: the job exits non-zero ($rc), not by the test's timeout (120 s), in $((t1 - t0)) s" \
  '[ $rc != 0 ] && [ $rc != 124 ]'
check "no rank is left running" '! pgrep -f "output_dir=$T/kill" > /dev/null'
check "the killed run left the checkpoint of step 4" '[ "$(latest_step "$T/kill")" = 4 ]'
cp -r "$T/kill" "$T/kill1"
cp -r "$T/kill" "$T/kill3"

"${MPI[@]}" -np 2 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/kill" --resume > "$T/resume2.log" 2>&1
rc=$?
check "--resume with 2 ranks exits 0 ($(tail -1 "$T/resume2.log"))" '[ $rc = 0 ]'
check "resumed with 2 ranks = uninterrupted: losses and weights within 1e-5" 'same "$T/ref" "$T/kill"'
"$FT" sft "$R" "${ARGS[@]}" grad_accum=2 output_dir="$T/kill1" --resume > "$T/resume1.log" 2>&1
rc=$?
check "--resume with 1 rank at the same global batch (grad_accum 2) exits 0 ($(tail -1 "$T/resume1.log"))" '[ $rc = 0 ]'
check "resumed with 1 rank = uninterrupted: losses and weights within 1e-5" 'same "$T/ref" "$T/kill1"'
"$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/kill3" --resume > "$T/resume3.log" 2>&1
rc=$?
check "--resume at another global batch is refused, naming both ($(tail -1 "$T/resume3.log"))" \
  '[ $rc = 2 ] && grep -q "2 micro-batches per optimizer step (grad_accum 1 x 2 rank(s)) but this run takes 1" "$T/resume3.log"'

# A rank that hangs (stopped): the other times out in its collective and the job ends within the limit.
cat > "$T/stopme.sh" << SH
#!/usr/bin/env bash
echo \$\$ > "$T/stopme.pid"
exec "\$@"
SH
chmod +x "$T/stopme.sh"
t0=$(date +%s)
timeout 120 "${MPI[@]}" -np 1 "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/hang" --dist-timeout 5 : \
  -np 1 "$T/stopme.sh" "$FT" sft "$R" "${ARGS[@]}" grad_accum=1 output_dir="$T/hang" --dist-timeout 5 \
  > "$T/hang.log" 2>&1 &
BG=$!
n=0
while [ "$(latest_step "$T/hang")" -lt 2 ] && [ $n -lt 3000 ] && kill -0 $BG 2> /dev/null; do
  sleep 0.02
  n=$((n + 1))
done
kill -STOP "$(cat "$T/stopme.pid")"
wait $BG
rc=$?
BG=
t1=$(date +%s)
kill -9 "$(cat "$T/stopme.pid")" 2> /dev/null
check "a stopped rank: the job ends non-zero ($rc) by --dist-timeout 5, not the test's timeout (120 s), in $((t1 - t0)) s" \
  '[ $rc != 0 ] && [ $rc != 124 ]'
check "the message names the collective and the limit" 'grep -q "did not complete within 5 s: another rank died or hangs" "$T/hang.log"'

# DPO (LoRA, precomputed reference) from the reference SFT model: the reference pass and eval split over the ranks.
D=(model="$T/ref" max_steps=4 log_every=1000 eval_fraction=0.2 eval_every=2)
"$FT" dpo "$SRC/recipes/quickstart-dpo.json" "${D[@]}" grad_accum=2 output_dir="$T/dpo1" > "$T/dpo1.log" 2>&1
rc1=$?
"${MPI[@]}" -np 2 "$FT" dpo "$SRC/recipes/quickstart-dpo.json" "${D[@]}" grad_accum=1 output_dir="$T/dpo2" > "$T/dpo2.log" 2>&1
rc2=$?
check "dpo: one process and mpirun -np 2 exit 0 ($(tail -1 "$T/dpo2.log"))" '[ $rc1 = 0 ] && [ $rc2 = 0 ]'
check "dpo: the reference caches (split over 2 ranks, written by rank 0) are byte-identical" \
  'cmp -s "$T/dpo1/ref_logps.train.bin" "$T/dpo2/ref_logps.train.bin" && cmp -s "$T/dpo1/ref_logps.eval.bin" "$T/dpo2/ref_logps.eval.bin"'
check "dpo: losses, eval loss and adapter weights within 1e-5" \
  'python3 "$T/cmp.py" metrics "$T/dpo1/metrics.jsonl" "$T/dpo2/metrics.jsonl" && python3 "$T/cmp.py" weights "$T/dpo1/adapter_model.safetensors" "$T/dpo2/adapter_model.safetensors"'
check "dpo: the eval metrics were reduced over the ranks (eval rewards equal)" \
  '[ "$(grep -o "eval_rewards/accuracies\":[0-9.]*" "$T/dpo1/metrics.jsonl")" = "$(grep -o "eval_rewards/accuracies\":[0-9.]*" "$T/dpo2/metrics.jsonl")" ]'

# classify (LoRA with the score head trained whole): the same run on 2 ranks as in one process.
C=(max_steps=6 log_every=1000 eval_every=3 lora.r=8 lora.alpha=16 lora.target_modules=all-linear)
"$FT" classify "$SRC/recipes/quickstart-classify.json" "${C[@]}" grad_accum=2 output_dir="$T/cls1" > "$T/cls1.log" 2>&1
rc1=$?
"${MPI[@]}" -np 2 "$FT" classify "$SRC/recipes/quickstart-classify.json" "${C[@]}" grad_accum=1 output_dir="$T/cls2" > "$T/cls2.log" 2>&1
rc2=$?
check "classify: one process and mpirun -np 2 exit 0 ($(tail -1 "$T/cls2.log"))" '[ $rc1 = 0 ] && [ $rc2 = 0 ]'
check "classify: losses, eval loss and the adapter (LoRA + score) within 1e-5" \
  'python3 "$T/cmp.py" metrics "$T/cls1/metrics.jsonl" "$T/cls2/metrics.jsonl" && python3 "$T/cmp.py" weights "$T/cls1/adapter_model.safetensors" "$T/cls2/adapter_model.safetensors"'

# Different recipes on the two ranks: both stop at start-up, naming the key and both values.
timeout 120 "${MPI[@]}" -np 1 "$FT" sft "$R" "${ARGS[@]}" output_dir="$T/mis" : \
  -np 1 "$FT" sft "$R" "${ARGS[@]}" output_dir="$T/mis" lr=0.001 > "$T/mis.log" 2>&1
rc=$?
check "ranks with different recipes exit non-zero ($rc)" '[ $rc != 0 ] && [ $rc != 124 ]'
check "the message names the key and both values" \
  'grep -q "the ranks disagree on the recipe: on rank 1, lr is 0.001 here but 0.004 on rank 0" "$T/mis.log"'
check "nothing was trained" '[ ! -e "$T/mis/metrics.jsonl" ]'
exit $fail
