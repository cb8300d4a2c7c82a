#!/usr/bin/env bash
# finetune export-gguf from the command line: tiny-random-llama with the Llama-2 tokenizer and a byte-level
# (SmolLM tokenizer) model made by `finetune init`, every --type, with and without --adapter, --as-lora; the refusals
# (-o inside an input, unknown --type, an adapter of another model, a tokenizer of another model) exit 2 and
# write nothing; a full disk mid-write leaves no file and no temp file; the inputs are never changed.
# (test_gguf_export reads the files back and checks every value; tests/reference/check_gguf_export.py checks
# them with gguf-py.)
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/export_gguf.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

is_gguf() { [ -s "$1" ] && [ "$(head -c 4 "$1")" = GGUF ]; }

mkdir "$T/tl"
cp "$ASSETS_DIR/models/tiny-random-llama/"* "$ASSETS_DIR/tokenizers/llama-2/"* "$T/tl/"
for t in f16 bf16 q8_0 q4_0; do
  "$FT" export-gguf "$T/tl" --type $t -o "$T/tl-$t.gguf" > "$T/out" 2>&1
  rc=$?
  check "tiny-random-llama --type $t exits 0 ($(head -1 "$T/out"))" '[ $rc = 0 ] && is_gguf "$T/tl-$t.gguf"'
done
check "q8_0: rows of 16 fall back to F16 and say so" 'grep -q "stored as F16" "$T/out"'

# a byte-level model: SmolLM's tokenizer, SmolLM2's chat template (its end of turn <|im_end|> is id 2)
cat > "$T/smol.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 64,
 "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true,
 "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "bfloat16"}
EOF
"$FT" init --config "$T/smol.json" --out "$T/sm" --seed 4 > /dev/null 2>&1
cp "$ASSETS_DIR/tokenizers/smollm-135m/"* "$T/sm/"
cp "$SRC/tests/fixtures/templates/jinja/HuggingFaceTB-SmolLM2-135M-Instruct.jinja" "$T/sm/chat_template.jinja"
for t in f16 bf16 q8_0 q4_0; do
  "$FT" export-gguf "$T/sm" --type $t -o "$T/sm-$t.gguf" > "$T/out" 2>&1
  rc=$?
  check "byte-level model --type $t exits 0 ($(head -1 "$T/out"))" '[ $rc = 0 ] && is_gguf "$T/sm-$t.gguf"'
done
check "the template's end-of-turn id is written as eot" 'grep -q "end-of-turn token id 2" "$T/out"'
check "q4_0 is smaller than f16" '[ $(stat -c %s "$T/sm-q4_0.gguf") -lt $(stat -c %s "$T/sm-f16.gguf") ]'

# --adapter: PEFT's peft_a on llama-gqa (256 ids: a small SentencePiece-style tokenizer written here)
mkdir "$T/gqa"
cp "$SRC/tests/fixtures/models/llama-gqa/config.json" "$SRC/tests/fixtures/models/llama-gqa/model.safetensors" "$T/gqa/"
{
  printf '{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},'
  printf ' {"id": 2, "content": "</s>", "special": true}], "decoder": {"type": "Sequence", "decoders": []},'
  printf ' "model": {"type": "BPE", "byte_fallback": true, "merges": [], "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2'
  for i in $(seq 0 252); do printf ', "<0x%02X>": %d' $i $((i + 3)); done
  printf '}}}\n'
} > "$T/gqa/tokenizer.json"
ADAPTER=$SRC/tests/fixtures/lora/peft_a
sums() { sha256sum "$T/tl/"* "$T/gqa/"* "$ADAPTER/"* | sort; }
sums > "$T/sums.before"
for t in f16 q8_0 q4_0 bf16; do
  "$FT" export-gguf "$T/gqa" --adapter "$ADAPTER" --type $t -o "$T/gqa-$t.gguf" > "$T/out" 2>&1
  rc=$?
  check "--adapter --type $t exits 0 ($(head -1 "$T/out"))" '[ $rc = 0 ] && is_gguf "$T/gqa-$t.gguf"'
done
check "--adapter merges the 14 adapted linears" 'grep -q "14 LoRA linears merged (r=4, scaling=2)" "$T/out"'
check "the merged file differs from the base's" '"$FT" export-gguf "$T/gqa" --type bf16 -o "$T/gqa-base.gguf" > /dev/null 2>&1 && ! cmp -s "$T/gqa-base.gguf" "$T/gqa-bf16.gguf"'

# --as-lora: the adapter alone, as llama.cpp's LoRA adapter file
"$FT" export-gguf "$T/gqa" --adapter "$ADAPTER" --as-lora --type f16 -o "$T/lora.gguf" > "$T/out" 2>&1
rc=$?
check "--as-lora exits 0 ($(head -1 "$T/out"))" '[ $rc = 0 ] && is_gguf "$T/lora.gguf" && grep -q "LoRA adapter for llama, f16, 14 adapted linears" "$T/out"'
check "--as-lora is much smaller than the merged model" '[ $(stat -c %s "$T/lora.gguf") -lt $(stat -c %s "$T/gqa-f16.gguf") ]'
"$FT" export-gguf "$T/gqa" --adapter "$SRC/tests/fixtures/lora/dora_a" --as-lora --type f16 -o "$T/bad.gguf" > "$T/out" 2>&1
rc=$?
check "--as-lora with a DoRA adapter: exit 2 ($(cat "$T/out"))" '[ $rc = 2 ] && [ ! -e "$T/bad.gguf" ] && grep -q "no DoRA" "$T/out"'

# refusals: exit 2, nothing written
"$FT" export-gguf "$T/tl" --type f16 -o "$T/tl/inside.gguf" > "$T/out" 2>&1
rc=$?
check "-o inside the model dir: exit 2 ($(cat "$T/out"))" '[ $rc = 2 ] && [ ! -e "$T/tl/inside.gguf" ] && grep -q "lies inside the model directory" "$T/out"'
"$FT" export-gguf "$T/gqa" --adapter "$ADAPTER" --type f16 -o "$ADAPTER/x.gguf" > "$T/out" 2>&1
rc=$?
check "-o inside the adapter dir: exit 2" '[ $rc = 2 ] && [ ! -e "$ADAPTER/x.gguf" ]'
"$FT" export-gguf "$T/tl" --type q5_1 -o "$T/bad.gguf" > "$T/out" 2>&1
rc=$?
check "unknown --type: exit 2 ($(cat "$T/out"))" '[ $rc = 2 ] && [ ! -e "$T/bad.gguf" ] && grep -q "expected f16, bf16, q8_0 or q4_0" "$T/out"'
"$FT" export-gguf "$T/tl" --adapter "$ADAPTER" --type f16 -o "$T/bad.gguf" > "$T/out" 2>&1
rc=$?
check "an adapter of another model: exit 2 ($(head -c 200 "$T/out"))" '[ $rc = 2 ] && [ ! -e "$T/bad.gguf" ] && grep -q "has shape" "$T/out"'
mkdir "$T/mix" && cp "$T/gqa/config.json" "$T/gqa/model.safetensors" "$T/tl/tokenizer.json" "$T/mix/"
"$FT" export-gguf "$T/mix" --type f16 -o "$T/bad.gguf" > "$T/out" 2>&1
rc=$?
check "a tokenizer of another model: exit 2 ($(head -c 200 "$T/out"))" '[ $rc = 2 ] && [ ! -e "$T/bad.gguf" ] && grep -q "vocab_size 256" "$T/out"'
"$FT" export-gguf "$T/tl" --type f16 > "$T/out" 2>&1
rc=$?
check "no -o: usage error, exit 2" '[ $rc = 2 ]'

# a full disk mid-write: nothing at -o, no temp file beside it; the same export then succeeds
FT_FAULT=enospc:full.gguf:100000 "$FT" export-gguf "$T/tl" --type f16 -o "$T/full.gguf" > "$T/out" 2>&1
rc=$?
check "ENOSPC while writing: fails ($rc: $(head -c 200 "$T/out"))" '[ $rc != 0 ] && grep -q "No space left" "$T/out"'
check "ENOSPC: no file and no temp file left" '[ -z "$(ls "$T" | grep full)" ]'
"$FT" export-gguf "$T/tl" --type f16 -o "$T/full.gguf" > /dev/null 2>&1
check "the same export afterwards is the same file" 'cmp -s "$T/full.gguf" "$T/tl-f16.gguf"'

sums > "$T/sums.after"
check "the inputs are unchanged (sha256)" 'cmp -s "$T/sums.before" "$T/sums.after"'
exit $fail
