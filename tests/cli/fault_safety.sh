#!/usr/bin/env bash
# A full disk (ENOSPC) and SIGKILL never leave a broken checkpoint, a half-written output or a damaged input:
# - ENOSPC while writing a checkpoint: a clear error (the file, "No space left on device", free space and
#   --resume), non-zero exit, no temp files, the previous checkpoint intact; after freeing space --resume ends
#   with the uninterrupted run's weights and losses, bit for bit;
# - ENOSPC while writing the final model: the same, resumed from the final checkpoint;
# - ENOSPC during `finetune merge`: nothing under --out, no temp dir beside it, inputs' sha256 unchanged;
#   after freeing space the merge gives the reference bytes;
# - SIGKILL mid-step, mid-way through a checkpoint file and with a complete checkpoint not yet renamed:
#   --resume picks the previous checkpoint and continues bit-identically; SIGKILL mid-merge leaves nothing
#   under --out and the inputs unchanged, and the next merge cleans up and succeeds.
# The full disk is a real size-limited tmpfs when this process may mount one (root), else the test-only
# fault hook FT_FAULT=enospc:... (finetune/base/util.h); the kill points are FT_FAULT=kill:POINT[:N].
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/fault_safety.XXXXXX")
MOUNTS=()
cleanup() {
  for m in "${MOUNTS[@]}"; do umount "$m" 2> /dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.bash"
unset FT_FAULT
# One thread (even under ctest's OMP_NUM_THREADS=2): ~1 s a run; two OpenMP threads spinning on a busy
# 2-core machine take ten times that. Bit-identity is compared between runs of the same thread count.
export OMP_NUM_THREADS=1

# The quickstart recipe and what it reads (the tiny random Llama, tokenizer, data), copied so that the
# inputs' hashes can be compared at the end. Checkpoints are ~50 MB (weights + AdamW moments, fp32).
mkdir "$T/in"
cp -r "$SRC/recipes/quickstart-sft.json" "$SRC/recipes/quickstart" "$SRC/recipes/models" "$T/in/"
R=$T/in/quickstart-sft.json
ARGS=(max_steps=6 save_every=2 keep_last=2 eval_every=3 log_every=1)
hash_tree() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -d' ' -f1; }
IN_HASH=$(hash_tree "$T/in")
sha() { sha256sum "$1" | cut -d' ' -f1; }
tmp_left() { find "$1" -name '*.tmp*' | head -3; }

# A full disk of $2 MiB at dir $1: a tmpfs when we may mount one (FS=tmpfs), else FS=injected (the caller then
# sets FT_FAULT).
FS=${FAULT_SAFETY_FS:-} # FAULT_SAFETY_FS=injected: use the fault hook even where a tmpfs could be mounted
full_disk() {
  mkdir -p "$1"
  if [ "$FS" != injected ] && mount -t tmpfs -o "size=${2}m" tmpfs "$1" 2> /dev/null; then
    MOUNTS+=("$1")
    FS=tmpfs
  else
    FS=injected
  fi
}
free_space() { [ "$FS" = tmpfs ] && mount -o remount,size=400m "$1"; }

# Reference: uninterrupted, 6 steps, checkpoints at 2, 4, 6.
"$FT" sft "$R" "${ARGS[@]}" output_dir="$T/ref" > "$T/ref.log" 2>&1
rc=$?
check "uninterrupted run exits 0 ($(tail -1 "$T/ref.log"))" '[ $rc = 0 ]'
REF_SHA=$(sha "$T/ref/model.safetensors")
norm "$T/ref/metrics.jsonl" > "$T/ref.metrics"
check "reference logged 6 steps" '[ "$(grep -c "\"loss\"" "$T/ref.metrics")" = 6 ]'

same_as_ref() { # name, run dir (check evals its expression in its own scope: named locals, not $1)
  local name=$1 run=$2
  check "$name: model.safetensors equals the uninterrupted run's" '[ "$(sha "$run/model.safetensors")" = "$REF_SHA" ]'
  check "$name: metrics.jsonl (losses, lr, grad norms, eval) equals the uninterrupted run's" \
    '[ "$(norm "$run/metrics.jsonl")" = "$(cat "$T/ref.metrics")" ]'
  check "$name: no temp files left ($(tmp_left "$run"))" '[ -z "$(tmp_left "$run")" ]'
}

# ---- ENOSPC during the checkpoint of step 4 (80 MiB hold step 2's checkpoint, not step 4's as well) ----
full_disk "$T/disk1" 80
RUN=$T/disk1/run
if [ $FS = tmpfs ]; then F=; else F=enospc:step-000004:20000000; fi
FT_FAULT=$F "$FT" sft "$R" "${ARGS[@]}" output_dir="$RUN" > "$T/nospc.log" 2>&1
rc=$?
echo "full disk: $FS"
check "ENOSPC in a checkpoint: exit non-zero (got $rc)" '[ $rc != 0 ]'
check "ENOSPC in a checkpoint: names the file and the cause ($(tail -1 "$T/nospc.log"))" \
  'grep -qi "step-000004.*tensors.safetensors.*no space left on device" "$T/nospc.log"'
check "ENOSPC in a checkpoint: says to free space and --resume from step 2" \
  'grep -q "free space.*--resume.*step-000002 (intact)" "$T/nospc.log"'
check "ENOSPC in a checkpoint: the previous checkpoint is the newest ($(ls "$RUN/checkpoints"))" \
  '[ "$(ls "$RUN/checkpoints")" = step-000002 ] && [ -f "$RUN/checkpoints/step-000002/MANIFEST.json" ]'
check "ENOSPC in a checkpoint: temp files removed ($(tmp_left "$RUN"))" '[ -z "$(tmp_left "$RUN")" ]'
free_space "$T/disk1"
"$FT" sft "$R" "${ARGS[@]}" output_dir="$RUN" --resume > "$T/nospc2.log" 2>&1
rc=$?
check "ENOSPC in a checkpoint: --resume after freeing space exits 0 ($(tail -1 "$T/nospc2.log"))" '[ $rc = 0 ]'
check "ENOSPC in a checkpoint: resumed from step 2" 'grep -q "resuming from .*step-000002" "$T/nospc2.log"'
same_as_ref "ENOSPC in a checkpoint" "$RUN"
rm -rf "${RUN:?}"

# ---- ENOSPC while writing the final model (2 steps, one checkpoint; 60 MiB hold it, not the model too) ----
"$FT" sft "$R" max_steps=2 eval_every=0 output_dir="$T/ref2" > "$T/ref2.log" 2>&1
full_disk "$T/disk2" 60
RUN=$T/disk2/run
if [ $FS = tmpfs ]; then F=; else F=enospc:model.safetensors:4000000; fi
FT_FAULT=$F "$FT" sft "$R" max_steps=2 eval_every=0 output_dir="$RUN" > "$T/out.log" 2>&1
rc=$?
check "ENOSPC in the final model: exit non-zero (got $rc)" '[ $rc != 0 ]'
check "ENOSPC in the final model: names the file and the cause ($(tail -1 "$T/out.log"))" \
  'grep -qi "model.safetensors.*no space left on device.*--resume.*step-000002" "$T/out.log"'
check "ENOSPC in the final model: no model.safetensors, no temp files" \
  '[ ! -e "$RUN/model.safetensors" ] && [ -z "$(tmp_left "$RUN")" ]'
free_space "$T/disk2"
"$FT" sft "$R" max_steps=2 eval_every=0 output_dir="$RUN" --resume > "$T/out2.log" 2>&1
rc=$?
check "ENOSPC in the final model: --resume writes it ($(tail -1 "$T/out2.log"))" \
  '[ $rc = 0 ] && cmp -s "$RUN/model.safetensors" "$T/ref2/model.safetensors"'
rm -rf "${RUN:?}" "$T/ref2"

# ---- SIGKILL at exact points of training (FT_FAULT=kill:POINT:N = the N-th time POINT is reached) ----
killed() { # name, FT_FAULT value, checkpoint the resume must start from[, what the kill left, its check]
  local name=$1 fault=$2 from=$3 dir=$T/$1
  FT_FAULT=$fault "$FT" sft "$R" "${ARGS[@]}" output_dir="$dir" > "$dir.log" 2>&1
  local st=$?
  check "$name: killed by SIGKILL (status $st)" '[ $st = 137 ] && grep -q "FT_FAULT: SIGKILL at" "$dir.log"'
  [ -n "${4:-}" ] && check "$name: $4" "$5"
  "$FT" sft "$R" "${ARGS[@]}" output_dir="$dir" --resume > "$dir.log2" 2>&1
  local rc=$?
  check "$name: --resume exits 0 ($(tail -1 "$dir.log2"))" '[ $rc = 0 ]'
  check "$name: resumed from $from" 'grep -q "resuming from .*$from" "$dir.log2"'
  same_as_ref "$name" "$dir"
  rm -rf "${dir:?}"
}
killed mid-step kill:train-mid-step:3 step-000002
killed ckpt-mid-write kill:ckpt-mid-write:2 step-000002 "a partial step-4 temp dir was left, without a manifest" \
  '[ -n "$(ls -d "$T/ckpt-mid-write/checkpoints/step-000004.tmp-"* 2>/dev/null)" ] &&
   [ -z "$(ls "$T/ckpt-mid-write/checkpoints/step-000004.tmp-"*/MANIFEST.json 2>/dev/null)" ]'
killed ckpt-before-rename kill:ckpt-before-rename:2 step-000002 "step 4 complete but not renamed (not taken)" \
  '[ -f "$(ls -d "$T/ckpt-before-rename/checkpoints/step-000004.tmp-"* | head -1)/MANIFEST.json" ] &&
   [ ! -e "$T/ckpt-before-rename/checkpoints/step-000004" ]'

# ---- merge: ENOSPC and SIGKILL leave no output under --out and the inputs unchanged ----
mkdir "$T/base"
cp "$T/ref/"{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$T/base/"
cat > "$T/lora.json" << EOF
{"model": "$T/base", "tokenizer": "$T/in/quickstart/tokenizer", "data": "$T/in/quickstart/openorca-sample.jsonl",
 "format": "openorca", "template": "danube", "max_length": 128, "packing": true, "batch_size": 1, "max_steps": 2,
 "lr": 1e-2, "device": "cpu", "seed": 5, "output_dir": "$T/adapter", "lora": {"r": 4, "alpha": 8}}
EOF
"$FT" sft "$T/lora.json" > "$T/lora.log" 2>&1
check "LoRA adapter trained ($(tail -1 "$T/lora.log"))" '[ -f "$T/adapter/adapter_model.safetensors" ]'
rm -rf "$T/adapter/checkpoints"
M_HASH=$(hash_tree "$T/base")$(hash_tree "$T/adapter")
"$FT" merge --base "$T/base" --adapter "$T/adapter" --out "$T/merged" > "$T/merge.log" 2>&1
rc=$?
check "reference merge exits 0 ($(tail -1 "$T/merge.log"))" '[ $rc = 0 ] && [ -f "$T/merged/model.safetensors" ]'

full_disk "$T/disk3" 12
if [ $FS = tmpfs ]; then F=; else F=enospc:disk3/merged.tmp-:4000000; fi
FT_FAULT=$F "$FT" merge --base "$T/base" --adapter "$T/adapter" --out "$T/disk3/merged" > "$T/m1.log" 2>&1
rc=$?
check "ENOSPC in merge: exit non-zero (got $rc)" '[ $rc != 0 ]'
check "ENOSPC in merge: names the file and the cause, says what to do ($(cat "$T/m1.log"))" \
  'grep -qi "model.safetensors.*no space left on device.*nothing was written under --out.*free space" "$T/m1.log"'
check "ENOSPC in merge: nothing under --out or beside it ($(ls "$T/disk3"))" '[ -z "$(ls "$T/disk3")" ]'
check "ENOSPC in merge: inputs unchanged" '[ "$(hash_tree "$T/base")$(hash_tree "$T/adapter")" = "$M_HASH" ]'
free_space "$T/disk3"
"$FT" merge --base "$T/base" --adapter "$T/adapter" --out "$T/disk3/merged" > "$T/m2.log" 2>&1
rc=$?
check "ENOSPC in merge: after freeing space the merge gives the reference bytes" \
  '[ $rc = 0 ] && cmp -s "$T/disk3/merged/model.safetensors" "$T/merged/model.safetensors"'

FT_FAULT=kill:merge-mid-write "$FT" merge --base "$T/base" --adapter "$T/adapter" --out "$T/mk" > "$T/m3.log" 2>&1
st=$?
check "SIGKILL mid-merge: killed (status $st)" '[ $st = 137 ]'
check "SIGKILL mid-merge: nothing under --out, the partial output is beside it" \
  '[ ! -e "$T/mk" ] && [ -n "$(ls -d "$T/mk.tmp-"* 2>/dev/null)" ]'
check "SIGKILL mid-merge: inputs unchanged" '[ "$(hash_tree "$T/base")$(hash_tree "$T/adapter")" = "$M_HASH" ]'
"$FT" merge --base "$T/base" --adapter "$T/adapter" --out "$T/mk" > "$T/m4.log" 2>&1
rc=$?
check "SIGKILL mid-merge: the next merge succeeds, equals the reference, removes the killed one's temp dir" \
  '[ $rc = 0 ] && cmp -s "$T/mk/model.safetensors" "$T/merged/model.safetensors" && [ -z "$(ls -d "$T/mk.tmp-"* 2>/dev/null)" ]'

check "training inputs (recipe, model config, tokenizer, data) unchanged" '[ "$(hash_tree "$T/in")" = "$IN_HASH" ]'
echo "fault_safety: the full disk was $([ "$FS" = tmpfs ] && echo "a real size-limited tmpfs" || echo "injected (FT_FAULT=enospc:...)")"
[ $fail = 0 ] && echo "fault_safety: all checks passed"
exit $fail
