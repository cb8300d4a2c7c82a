#!/usr/bin/env bash
# The model commands end to end (init, info, score, generate) and their errors on bad checkpoints:
# one message naming the file and tensor or key, exit code 2, nothing written.
set -u
BIN=${FT_BIN:?FT_BIN is not set}
SRC=${FT_SOURCE_DIR:?FT_SOURCE_DIR is not set}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

# expect CODE PATTERN -- command...: exit code and a stderr pattern
expect() {
  local code=$1 pat=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" != "$code" ]; then bad "$* exited $rc, expected $code: $(head -c 400 "$T/err")"; return; fi
  if [ -n "$pat" ] && ! grep -q -- "$pat" "$T/err"; then bad "$*: stderr lacks '$pat': $(head -c 400 "$T/err")"; return; fi
  ok
}

cat >"$T/cfg.json" <<'JSON'
{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 300, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 8,
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}
JSON
expect 0 "" -- "$BIN" init --config "$T/cfg.json" --out "$T/m" --seed 3 --std 0.2
[ -f "$T/m/config.json" ] && [ -f "$T/m/model.safetensors" ] && ok || bad "init wrote no checkpoint"

expect 0 "" -- "$BIN" info "$T/m" --seq-len 512
grep -q "MistralForCausalLM" "$T/out" && grep -q "sliding window 8" "$T/out" && grep -q "QLoRA" "$T/out" && ok || bad "info output: $(cat "$T/out")"

# score: n-1 finite negative log-probs; the same with a bf16 copy of the checkpoint within bf16 precision
expect 0 "" -- "$BIN" score "$T/m" --ids 1,5,9,200,7 --device cpu
n=$(tr -cd ',' <"$T/out" | wc -c)
[ "$n" = 3 ] && grep -q '^\[-' "$T/out" && ok || bad "score output: $(cat "$T/out")"

# --precision: fp32 is the CPU's (the same numbers), 16 bits on the CPU is refused naming the fix, a bad name too
p32=$(cat "$T/out")
expect 0 "" -- "$BIN" score "$T/m" --ids 1,5,9,200,7 --device cpu --precision fp32
[ "$p32" = "$(cat "$T/out")" ] && ok || bad "score --precision fp32 differs: $(cat "$T/out") vs $p32"
expect 2 "needs device=cuda" -- "$BIN" score "$T/m" --ids 1,5,9 --device cpu --precision bf16
expect 2 "needs device=cuda" -- "$BIN" generate "$T/m" --prompt-ids 1,5,9 --device cpu --precision fp16
expect 2 "expected auto, fp32, bf16 or fp16" -- "$BIN" score "$T/m" --ids 1,5,9 --precision fp8

# generate: greedy is deterministic; sampling with a seed is reproducible
expect 0 "" -- "$BIN" generate "$T/m" --prompt-ids 1,5,9 --max-new 6 --greedy --ignore-eos
g1=$(cat "$T/out")
expect 0 "" -- "$BIN" generate "$T/m" --prompt-ids 1,5,9 --max-new 6 --greedy --ignore-eos
[ "$g1" = "$(cat "$T/out")" ] && [ "$(echo "$g1" | tr -cd ',' | wc -c)" = 5 ] && ok || bad "greedy generate: $g1"
expect 0 "" -- "$BIN" generate "$T/m" --prompt-ids 1,5,9 --max-new 6 --seed 7 --temperature 1.5 --top-p 0.9 --ignore-eos
s1=$(cat "$T/out")
expect 0 "" -- "$BIN" generate "$T/m" --prompt-ids 1,5,9 --max-new 6 --seed 7 --temperature 1.5 --top-p 0.9 --ignore-eos
[ "$s1" = "$(cat "$T/out")" ] && ok || bad "seeded sampling not reproducible"

# --help on every command, unknown options are errors
for c in info score generate init sft dpo eval merge quantize render tokenize plot chat; do
  expect 0 "" -- "$BIN" "$c" --help
  expect 2 "unknown option" -- "$BIN" "$c" --no-such-option
done
expect 2 "unknown command" -- "$BIN" frobnicate

# bad checkpoints
cp -r "$T/m" "$T/arch"; sed -i 's/MistralForCausalLM/GPT2LMHeadModel/' "$T/arch/config.json"
expect 2 "GPT2LMHeadModel" -- "$BIN" score "$T/arch" --ids 1,2
cp -r "$T/m" "$T/layers"; sed -i -E 's/"num_hidden_layers":[[:space:]]*2/"num_hidden_layers": 3/' "$T/layers/config.json"
expect 2 "model.layers.2.input_layernorm.weight" -- "$BIN" score "$T/layers" --ids 1,2
cp -r "$T/m" "$T/shape"; sed -i -E 's/"intermediate_size":[[:space:]]*64/"intermediate_size": 96/' "$T/shape/config.json"
expect 2 "shape" -- "$BIN" score "$T/shape" --ids 1,2
cp -r "$T/m" "$T/trunc"; truncate -s 5000 "$T/trunc/model.safetensors"
expect 2 "model.safetensors" -- "$BIN" score "$T/trunc" --ids 1,2
cp -r "$T/m" "$T/lying"; printf '\xff\xff\xff\xff\x00\x00\x00\x00' | dd of="$T/lying/model.safetensors" conv=notrunc status=none
expect 2 "model.safetensors" -- "$BIN" score "$T/lying" --ids 1,2
mkdir "$T/pickle"; cp "$T/m/config.json" "$T/pickle/"; echo "not really a pickle" >"$T/pickle/pytorch_model.bin"
expect 2 "pickle" -- "$BIN" score "$T/pickle" --ids 1,2
mkdir "$T/shards"; cp "$T/m/config.json" "$T/shards/"
echo '{"metadata": {}, "weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}' >"$T/shards/model.safetensors.index.json"
expect 2 "model-00001-of-00002.safetensors" -- "$BIN" score "$T/shards" --ids 1,2
expect 2 "vocabulary" -- "$BIN" score "$T/m" --ids 1,300
expect 2 "" -- "$BIN" score "$T/m" --ids 1,x
# init refuses a bad config and writes nothing
sed -E 's/"hidden_size":[[:space:]]*32/"hidden_size": "big"/' "$T/cfg.json" >"$T/badcfg.json"
expect 2 "hidden_size" -- "$BIN" init --config "$T/badcfg.json" --out "$T/never"
[ ! -e "$T/never/model.safetensors" ] && ok || bad "init wrote into $T/never after a config error"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
