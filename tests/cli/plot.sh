#!/usr/bin/env bash
# finetune plot: an SVG with a line per series from a metrics.jsonl; clear errors on bad input.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

# an SFT-like run (noisy loss, eval every 5 steps, a NaN step) and a DPO-like run
mkdir -p "$T/sft" "$T/dpo"
for s in $(seq 1 60); do
  loss=$(awk -v s="$s" 'BEGIN { printf "%.4f", 2.5 * exp(-s / 30) + 0.7 + 0.05 * sin(s) }')
  if [ "$s" = 33 ]; then loss=null; fi
  echo "{\"step\":$s,\"epoch\":$(awk -v s="$s" 'BEGIN{print s/60}'),\"loss\":$loss,\"lr\":$(awk -v s="$s" 'BEGIN{printf "%.3g", 2e-5 * (1 - s / 61)}'),\"grad_norm\":1.5,\"tokens_per_s\":1000}"
  if [ $((s % 5)) = 0 ]; then echo "{\"step\":$s,\"eval_loss\":$(awk -v s="$s" 'BEGIN{printf "%.4f", 2.4 * exp(-s / 35) + 0.9}'),\"eval_ppl\":3.1}"; fi
done > "$T/sft/metrics.jsonl"
for s in $(seq 1 20); do
  echo "{\"step\":$s,\"loss\":0.69,\"lr\":1e-6,\"rewards/accuracies\":0.$((s % 10)),\"rewards/margins\":$s,\"rewards/chosen\":0.5,\"rewards/rejected\":-0.5}"
done > "$T/dpo/metrics.jsonl"

"$FT" plot "$T/sft" > "$T/out.txt" 2>&1
rc=$?
check "plot sft exits 0 ($(cat "$T/out.txt"))" '[ $rc = 0 ]'
S="$T/sft/metrics.svg"
check "default output RUN_DIR/metrics.svg" '[ -s "$S" ]'
check "svg open tag" 'grep -q "<svg" "$S"'
check "svg close tag" 'tail -c 20 "$S" | grep -q "</svg>"'
check "title names the run dir" 'grep -q "finetune run: $T/sft" "$S"'
for key in "loss" "loss (moving avg)" "eval loss" "learning rate" "grad norm"; do
  check "a polyline for '$key'" 'grep -q "<polyline class=\"series\" data-key=\"$key\"" "$S"'
done
check "the null loss breaks the line in two" '[ "$(grep -c "data-key=\"loss\"" "$S")" = 2 ]'
check "eval markers" 'grep -q "<circle" "$S"'
check "axis label" 'grep -q ">step</text>" "$S"'
check "no DPO panels for SFT" '! grep -q "rewards/" "$S"'
if command -v xmllint > /dev/null; then check "well-formed XML" 'xmllint --noout "$S"'; fi
open_tags=$(grep -o "<text" "$S" | wc -l); close_tags=$(grep -o "</text>" "$S" | wc -l)
check "balanced <text> tags" '[ "$open_tags" = "$close_tags" ]'

"$FT" plot "$T/dpo" --out "$T/d.svg" > /dev/null 2>&1
check "plot dpo --out" '[ -s "$T/d.svg" ]'
for key in "rewards/accuracies" "rewards/margins" "rewards/chosen" "rewards/rejected" "learning rate"; do
  check "a polyline for '$key'" 'grep -q "data-key=\"$key\"" "$T/d.svg"'
done

# errors: missing, empty, bad line (file:line), no step, unknown option
"$FT" plot "$T/nope" > /dev/null 2> "$T/err"; rc=$?
check "missing run dir fails with 2 (rc=$rc)" '[ $rc = 2 ]'
check "missing names the file" 'grep -q "$T/nope/metrics.jsonl" "$T/err"'
mkdir -p "$T/empty"; : > "$T/empty/metrics.jsonl"
"$FT" plot "$T/empty" > /dev/null 2> "$T/err"; rc=$?
check "empty file fails" '[ $rc = 2 ] && grep -q "empty" "$T/err"'
mkdir -p "$T/bad"; printf '{"step":1,"loss":2}\n{"step":2,"loss":\n' > "$T/bad/metrics.jsonl"
"$FT" plot "$T/bad" > /dev/null 2> "$T/err"; rc=$?
check "bad line fails naming file:line ($(cat "$T/err"))" '[ $rc = 2 ] && grep -q "$T/bad/metrics.jsonl:2:" "$T/err"'
printf '{"loss":2}\n' > "$T/bad/metrics.jsonl"
"$FT" plot "$T/bad" > /dev/null 2> "$T/err"; rc=$?
check "record without step fails" '[ $rc = 2 ] && grep -q "metrics.jsonl:1: record has no numeric \"step\"" "$T/err"'
printf '{"step":1,"foo":2}\n' > "$T/bad/metrics.jsonl"
"$FT" plot "$T/bad" > /dev/null 2> "$T/err"; rc=$?
check "nothing plottable fails" '[ $rc = 2 ] && grep -q "no plottable series" "$T/err"'
"$FT" plot "$T/sft" --bogus > /dev/null 2>&1; rc=$?
check "unknown option fails" '[ $rc = 2 ]'
"$FT" plot --help | grep -q "usage: finetune plot"
check "help" '[ $? = 0 ]'

[ $fail = 0 ] && echo "plot: all checks passed"
exit $fail
