#!/usr/bin/env bash
# 4-bit checkpoints as QLoRA bases: bitsandbytes' own (tests/fixtures/lora/bnb4/f32, save_pretrained of
# llama-gqa) and ours (finetune quantize) train in `finetune sft` with a qlora section (loss falls); the
# 4-bit base's log-probs equal those of its dequantized fp32 model (finetune merge of the zero-B adapter an
# lr=0 run leaves, trained on as a plain lora base): the first step's loss is the same number.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/qlora_bnb.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
F=$SRC/tests/fixtures/sft
recipe() { # $1 = file, $2 = model, $3 = extra JSON members
  cat > "$T/$1" << EOF
{"model": "$2", "tokenizer": "$F/tokenizer", "data": "$F/data.jsonl", "format": "openorca",
 "template": "danube", "max_length": 64, "packing": true, "batch_size": 1, "grad_accum": 1, "max_steps": 10,
 "lr": 1e-2, "schedule": "constant", "log_every": 1, "device": "cpu", "seed": 5, $3}
EOF
}
losses() { grep -o '"loss":[0-9.e+-]*' "$1" | sed 's/"loss"://'; }
first_last() { losses "$1" | awk '{v[NR]=$1} END{printf "%s %s", v[1], v[NR]}'; }

"$FT" quantize "$SRC/tests/fixtures/models/llama-gqa" --out "$T/ours4" > "$T/quant.log" 2>&1
check "quantize runs" '[ $? -eq 0 ] || { cat "$T/quant.log"; false; }'
for base in "$SRC/tests/fixtures/lora/bnb4/f32" "$T/ours4"; do
  n=$(basename "$base")
  recipe "$n.json" "$base" "\"output_dir\": \"$T/run_$n\", \"qlora\": {\"r\": 4, \"alpha\": 8}"
  "$FT" sft "$T/$n.json" > "$T/$n.log" 2>&1
  check "qlora sft on $n runs" '[ $? -eq 0 ] || { cat "$T/$n.log"; false; }'
  read -r a b <<< "$(first_last "$T/run_$n/metrics.jsonl")"
  check "qlora loss on $n falls ($a -> $b)" 'awk -v a="$a" -v b="$b" "BEGIN{exit !(b < a)}"'
done

# log-probs of the 4-bit base == the dequantized model's: lr 0 keeps B = 0, so merging dequantizes
B4=$SRC/tests/fixtures/lora/bnb4/f32
recipe z.json "$B4" "\"output_dir\": \"$T/run_z\", \"qlora\": {\"r\": 4, \"alpha\": 8}"
"$FT" sft "$T/z.json" max_steps=1 lr=0 > "$T/z.log" 2>&1
check "lr=0 qlora run" '[ $? -eq 0 ] || { cat "$T/z.log"; false; }'
"$FT" merge --base "$B4" --adapter "$T/run_z" --out "$T/deq" > "$T/merge.log" 2>&1
check "merge of a 4-bit base" '[ $? -eq 0 ] || { cat "$T/merge.log"; false; }'
check "merged config has no quantization_config" '! grep -q quantization_config "$T/deq/config.json"'
recipe d.json "$T/deq" "\"output_dir\": \"$T/run_d\", \"lora\": {\"r\": 4, \"alpha\": 8}"
"$FT" sft "$T/d.json" max_steps=1 lr=0 > "$T/d.log" 2>&1
check "lora run on the dequantized model" '[ $? -eq 0 ] || { cat "$T/d.log"; false; }'
lq=$(losses "$T/run_z/metrics.jsonl" | head -1)
ld=$(losses "$T/run_d/metrics.jsonl" | head -1)
same=$(awk -v a="$lq" -v b="$ld" 'BEGIN{d=a-b; if(d<0)d=-d; s=a<0?-a:a; print (a != "" && d <= 1e-6*s) ? 1 : 0}')
check "4-bit loss ($lq) == dequantized loss ($ld)" '[ "$same" = 1 ]'

# a checkpoint with inconsistent quant state is refused clearly
mkdir -p "$T/broken" && cp "$B4/config.json" "$T/broken/"
sed 's/"blocksize": 64/"blocksize": 32/' "$B4/model.safetensors" > "$T/broken/model.safetensors"
recipe b.json "$T/broken" "\"output_dir\": \"$T/run_b\", \"qlora\": {\"r\": 4}"
"$FT" sft "$T/b.json" > "$T/b.log" 2>&1
rc=$?
check "inconsistent quant state: exit 2 (got $rc)" '[ $rc -eq 2 ]'
check "message names the tensor" 'grep -q "quant_state.bitsandbytes__nf4" "$T/b.log" || { cat "$T/b.log"; false; }'
exit $fail
