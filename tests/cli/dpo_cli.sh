#!/usr/bin/env bash
# finetune dpo end to end on the quick-start files: the reference modes agree where they must, the
# reference-free losses need no reference pass, the cache is reused, and bad input exits 2.
set -u
BIN=${FT_BIN:?FT_BIN is not set}
SRC=${FT_SOURCE_DIR:?FT_SOURCE_DIR is not set}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
run() { "$@" >"$T/out" 2>"$T/err" || { bad "$* exited $?: $(tail -c 600 "$T/err")"; return 1; }; ok; }
expect() { # expect CODE PATTERN -- cmd...
  local code=$1 pat=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  [ "$rc" = "$code" ] && grep -q -- "$pat" "$T/err" && ok || bad "$*: exit $rc (want $code), stderr: $(tail -c 400 "$T/err")"
}
losses() { grep '"loss"' "$1/metrics.jsonl" | sed -E 's/.*"loss": *([^,}]*).*/\1/' | tr '\n' ' '; }

run "$BIN" sft "$SRC/recipes/quickstart-sft.json" output_dir="$T/sft" max_steps=12 log_every=1000 || exit 1
R="$SRC/recipes/quickstart-dpo.json"
common=(model="$T/sft" max_steps=6 log_every=1000 eval_fraction=0)

# precompute (cached) and on-the-fly references give the same run for a fresh adapter
run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/pre"
[ -f "$T/pre/ref_logps.train.bin" ] && ok || bad "precompute wrote no reference cache"
run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/fly" dpo.reference=adapters_disabled
[ ! -e "$T/fly/ref_logps.train.bin" ] && ok || bad "adapters_disabled wrote a reference cache"
[ -n "$(losses "$T/pre")" ] && [ "$(losses "$T/pre")" = "$(losses "$T/fly")" ] && ok ||
  bad "precompute and adapters_disabled differ: $(losses "$T/pre") vs $(losses "$T/fly")"
# a second run reuses the cache: no reference pass
run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/pre"
! grep -q "reference log-probs:" "$T/err" && ok || bad "the cached reference log-probs were recomputed"

# reference-free losses: no reference pass, and they train
for loss in simpo orpo ipo hinge robust; do
  extra=()
  [ "$loss" = robust ] && extra=(dpo.label_smoothing=0.1)
  run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/$loss" dpo.loss=$loss "${extra[@]}"
  case $loss in simpo | orpo) [ ! -e "$T/$loss/ref_logps.train.bin" ] && ok || bad "$loss made a reference pass" ;; esac
  grep -q '"rewards/accuracies"' "$T/$loss/metrics.jsonl" && ok || bad "$loss: no reward metrics"
done

# --dry-run writes nothing
run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/dry" --dry-run
[ ! -e "$T/dry" ] && grep -q "memory estimate" "$T/err" && ok || bad "dpo --dry-run wrote $T/dry or printed no estimate"

# bad input
expect 2 "not preference data" -- "$BIN" dpo "$R" "${common[@]}" output_dir="$T/x" data="$SRC/recipes/quickstart/openorca-sample.jsonl" format=auto
expect 2 "dpo.loss.*unknown DPO loss type" -- "$BIN" dpo "$R" "${common[@]}" output_dir="$T/x" dpo.loss=kto
expect 2 "did you mean" -- "$BIN" dpo "$R" "${common[@]}" output_dir="$T/x" dpo.betta=0.2
grep -v '"lora"' "$R" | sed "s#\"quickstart/#\"$SRC/recipes/quickstart/#" >"$T/full.json"
expect 2 "adapters_disabled" -- "$BIN" dpo "$T/full.json" "${common[@]}" output_dir="$T/x" dpo.reference=adapters_disabled
expect 2 "reference_model" -- "$BIN" dpo "$T/full.json" "${common[@]}" output_dir="$T/x" dpo.reference=model
# full fine-tune with a separate (NF4) reference model trains
run "$BIN" dpo "$T/full.json" "${common[@]}" output_dir="$T/full" dpo.reference=model dpo.reference_model="$T/sft" dpo.reference_quantize=nf4
[ -f "$T/full/model.safetensors" ] && ok || bad "full DPO wrote no model"

# dpo.shared_prompt (default true: each pair's prompt computed once) against TRL's layout: the same run within
# fp32 summation order, for the precomputed, on-the-fly (adapters disabled) and separate-model references
metric() { grep -o "\"$2\":[^,}]*" "$1/metrics.jsonl" | cut -d: -f2 | tr '\n' ' '; }
same_run() { # same_run DIR_SHARED DIR_TRL: every logged loss and log-prob mean within 1e-5 (relative)
  local k
  for k in loss logps/chosen logps/rejected rewards/margins; do
    paste <(metric "$1" "$k" | tr ' ' '\n') <(metric "$2" "$k" | tr ' ' '\n') | awk -v k="$k" '
      NF == 2 { n++; d = $1 - $2; if (d < 0) d = -d; m = ($2 < 0 ? -$2 : $2); if (d > 1e-5 * (m > 1 ? m : 1)) bad = bad " " $1 "/" $2 }
      END { if (bad != "" || n < 6) { print k ":" bad " (" n " values)"; exit 1 } }' || return 1
  done
}
for ref in pre fly full; do
  case $ref in
    pre) args=("$R" "${common[@]}") ;;
    fly) args=("$R" "${common[@]}" dpo.reference=adapters_disabled) ;;
    full) args=("$T/full.json" "${common[@]}" dpo.reference=model dpo.reference_model="$T/sft" dpo.reference_quantize=nf4) ;;
  esac
  run "$BIN" dpo "${args[@]}" output_dir="$T/$ref-trl" dpo.shared_prompt=false
  grep -q "layout: TRL's" "$T/err" && ok || bad "dpo.shared_prompt=false: no TRL layout line"
  msg=$(same_run "$T/$ref" "$T/$ref-trl") && ok || bad "$ref: shared prompt and TRL's layout differ: $msg"
done
run "$BIN" dpo "$R" "${common[@]}" output_dir="$T/dry2" --dry-run
grep -q "layout: shared prompt, [0-9]* tokens per epoch (TRL's layout: [0-9]*" "$T/err" && ok ||
  bad "dpo --dry-run printed no shared-prompt layout line"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
