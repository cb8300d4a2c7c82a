#!/usr/bin/env bash
# The whole chat pipeline on a tiny model, with nothing but the repository: sft -> dpo (LoRA) -> merge
# -> generate. DPO's reward accuracy on its pairs must rise well above chance, and the merged model
# must score like the base with the adapter applied.
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

run "$BIN" sft "$SRC/recipes/quickstart-sft.json" output_dir="$T/sft" log_every=1000 || { echo "$pass passed, $fail failed"; exit 1; }
# TRL's [chosen; rejected] layout: the reward-accuracy bar below was set on its trajectory. The shared-prompt
# layout (the default) gives the same losses to ~1e-8 per step, but this tiny model's 90 steps amplify that
# fp32 summation-order noise from step ~20 on into another, equally valid trajectory (measured: last ten
# steps 0.65 instead of 0.8, eval margin 24.2 instead of 25.1); the two layouts' equality is what
# tests/cli/dpo_cli.sh and test_dpo_shared check.
run "$BIN" dpo "$SRC/recipes/quickstart-dpo.json" model="$T/sft" output_dir="$T/dpo" log_every=1000 dpo.shared_prompt=false
[ -f "$T/dpo/adapter_config.json" ] && [ -f "$T/dpo/adapter_model.safetensors" ] && ok || bad "dpo wrote no PEFT adapter"

# reward accuracy: mean over the first and the last ten steps
read -r first last < <(awk '/"loss"/ {
    match($0, /"rewards\/accuracies": *[-0-9.e]+/); v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v)
    a[n++] = v } END { f = 0; l = 0; for (i = 0; i < 10; i++) { f += a[i]; l += a[n - 10 + i] } print f / 10, l / 10 }' "$T/dpo/metrics.jsonl")
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l >= 0.7 && l >= f + 0.2) }' && ok ||
  bad "DPO reward accuracy did not rise well above chance: first ten steps $first, last ten $last"

run "$BIN" merge --base "$T/sft" --adapter "$T/dpo" --out "$T/chat"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
  [ -f "$T/chat/$f" ] && ok || bad "merged model lacks $f"
done
grep -q '<|answer|>' "$T/chat/tokenizer_config.json" && ok || bad "merged model lacks the danube chat template"

# the merged model differs from the SFT model (the adapter is in the weights) and generates
run "$BIN" score "$T/sft" --ids 1,523,349,272,5565,302,7117,28804
s_base=$(cat "$T/out")
run "$BIN" score "$T/chat" --ids 1,523,349,272,5565,302,7117,28804
[ "$s_base" != "$(cat "$T/out")" ] && ok || bad "merged model scores exactly like the SFT model"
run "$BIN" generate "$T/chat" --prompt "What is the capital of Peru?" --template danube --max-new 16 --greedy

# finetune eval on the pairs: the merged model scores exactly like base + adapter, and DPO raised the
# chosen-over-rejected margin over the SFT model's
P="$SRC/recipes/quickstart/pairs-sample.jsonl"
run "$BIN" eval "$T/sft" --data "$P" --template danube
m_sft=$(sed -E 's/.*"margin": *([-0-9.e]+).*/\1/' "$T/out")
run "$BIN" eval "$T/sft" --data "$P" --template danube --adapter "$T/dpo"
m_adapter=$(sed -E 's/.*"margin": *([-0-9.e]+).*/\1/' "$T/out")
run "$BIN" eval "$T/chat" --data "$P" --template danube
m_merged=$(sed -E 's/.*"margin": *([-0-9.e]+).*/\1/' "$T/out")
awk -v a="$m_adapter" -v m="$m_merged" 'BEGIN { d = a - m; if (d < 0) d = -d; exit !(d <= 1e-3 * (a < 0 ? -a : a) + 1e-3) }' && ok ||
  bad "merged model margin $m_merged differs from base + adapter $m_adapter"
awk -v s="$m_sft" -v a="$m_adapter" 'BEGIN { exit !(a > s) }' && ok || bad "DPO did not raise the margin: sft $m_sft, dpo $m_adapter"
run "$BIN" eval "$T/chat" --data "$SRC/recipes/quickstart/openorca-sample.jsonl" --template danube
grep -q '"perplexity"' "$T/out" && ok || bad "eval on conversations printed no perplexity"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
