#!/usr/bin/env bash
# A GGUF model file wherever a model dir is accepted, on the real SmolLM2-135M-Instruct.Q4_1.gguf ($FT_ASSETS;
# skipped without it), against tests/fixtures/gguf_model/smollm2.json (transformers' GGUF loader):
# generate --greedy equals transformers' 16 greedy tokens and answers the France prompt through the
# template from the metadata; info checks its tensors; `finetune convert` writes an HF dir that our loader
# reads with identical log-probs (and, with FT_PYTHON set to a Python with transformers,
# tests/reference/check_gguf_convert.py loads it as transformers does); NF4 quantization (QLoRA's base) of the
# .gguf equals that of the converted dir; a truncated file and an unknown tensor
# type exit 2 naming the file, and convert never leaves a half-written OUT_DIR.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/lib.bash"
large_asset models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf "the real SmolLM2 GGUF is absent"
G=$LARGE_ASSET
T=$(mktemp -d "${PWD:-/tmp}/gguf_model.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
FX=$SRC/tests/fixtures/gguf_model/smollm2.json

# fixture fields as comma lists (python3 without packages, as the other CLI tests use it)
field() { python3 -c "import json,sys; d=json.load(open('$FX')); print(','.join(map(str, $1)))"; }
PROMPT=$(field "d['greedy']['prompt_ids']")
WANT=$(field "d['greedy']['ids']")
LPIDS=$(field "d['logprobs']['ids']")

out=$("$FT" generate "$G" --prompt-ids "$PROMPT" --greedy --ignore-eos --max-new 16 2> err.txt)
check "generate --greedy on the .gguf equals transformers' greedy tokens" \
  '[ "$(echo "$out" | tr -d "[] \n")" = "$WANT" ] || { echo "got $out, want [$WANT]"; cat err.txt; false; }'

out=$("$FT" generate "$G" --prompt "What is the capital of France?" --greedy --max-new 24 2> err.txt)
check "generate --prompt uses the GGUF's tokenizer and chat template: Paris" \
  'echo "$out" | grep -q "The capital of France is Paris." || { echo "got: $out"; cat err.txt; false; }'

"$FT" info "$G" > info.txt 2>&1
check "info checks the GGUF's tensors" 'grep -q "weights checked: 272 tensors with the shapes its GGUF metadata implies" info.txt || cat info.txt'

"$FT" convert "$G" hf > conv.txt 2>&1
check "convert writes an HF dir" '[ -f hf/config.json ] && [ -f hf/model.safetensors ] && [ -f hf/tokenizer.json ] && [ -f hf/tokenizer_config.json ] && [ -f hf/generation_config.json ] || cat conv.txt'
check "the converted config is the GGUF's" 'grep -q "\"num_hidden_layers\":	30" hf/config.json && grep -q "\"tie_word_embeddings\":	true" hf/config.json && grep -q "chat_template" hf/tokenizer_config.json'
a=$("$FT" score "$G" --ids "$LPIDS" 2> err.txt)
b=$("$FT" score hf --ids "$LPIDS" 2>> err.txt)
check "score of the .gguf and of its converted dir are identical" '[ -n "$a" ] && [ "$a" = "$b" ] || { cat err.txt; false; }'
check "score of the .gguf matches transformers within 1e-4" "python3 -c \"
import json; d=json.load(open('$FX')); a=json.loads('''$a''')
w=max(abs(x-r)/max(1,abs(r)) for x,r in zip(a, d['logprobs']['logprobs'])); assert len(a)==len(d['logprobs']['logprobs']) and w<=1e-4, w\""
out=$("$FT" generate hf --prompt "What is the capital of France?" --greedy --max-new 24 2> err.txt)
check "the converted dir answers the same" 'echo "$out" | grep -q "The capital of France is Paris." || { echo "got: $out"; cat err.txt; false; }'
# NF4 (QLoRA's base) of the dequantized weights: quantizing the .gguf equals quantizing its converted dir
"$FT" quantize "$G" --out nf4a > q1.txt 2>&1
"$FT" quantize hf --out nf4b > q2.txt 2>&1
check "quantize (NF4) of the .gguf equals that of its converted dir" \
  '[ -f nf4a/model.safetensors ] && cmp -s nf4a/model.safetensors nf4b/model.safetensors || cat q1.txt q2.txt'
rm -rf nf4a nf4b
if [ -n "${FT_PYTHON:-}" ]; then
  check "transformers loads the converted dir as the GGUF (check_gguf_convert.py)" \
    '"$FT_PYTHON" "$SRC/tests/reference/check_gguf_convert.py" hf'
fi

# refusals: existing non-empty OUT_DIR, output over the input, not a GGUF
"$FT" convert "$G" hf > err.txt 2>&1
st=$?
check "convert refuses a non-empty OUT_DIR (exit 2)" '[ $st = 2 ] && grep -q "not empty" err.txt || cat err.txt'
"$FT" convert hf/config.json out2 > err.txt 2>&1
st=$?
check "convert of a non-GGUF file is an input error naming it" '[ $st = 2 ] && grep -q "hf/config.json: not a GGUF file" err.txt || cat err.txt'

# corrupt files: truncated, and a tensor type ggml does not have
head -c 4000000 "$G" > trunc.gguf
"$FT" generate trunc.gguf --prompt-ids 1,2 --max-new 1 > out.txt 2> err.txt
st=$?
check "a truncated GGUF exits 2 naming the file" '[ $st = 2 ] && grep -q "trunc.gguf" err.txt || { echo "exit $st"; cat err.txt; false; }'
"$FT" convert trunc.gguf out3 > /dev/null 2> err.txt
st=$?
check "convert of a truncated GGUF exits 2 and leaves no OUT_DIR" '[ $st = 2 ] && [ ! -e out3 ] && ! ls -d out3.tmp-* > /dev/null 2>&1'
cp "$G" badtype.gguf
chmod u+w badtype.gguf
python3 - badtype.gguf << 'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
name = b'token_embd.weight'
i = b.index(len(name).to_bytes(8, 'little') + name) + 8 + len(name)
nd = int.from_bytes(b[i:i + 4], 'little')
at = i + 4 + 8 * nd
b[at:at + 4] = (99).to_bytes(4, 'little')  # no ggml type 99
open(p, 'wb').write(b)
EOF
"$FT" generate badtype.gguf --prompt-ids 1,2 --max-new 1 > out.txt 2> err.txt
st=$?
check "an unknown tensor type exits 2 naming the file and tensor" \
  '[ $st = 2 ] && grep -q "badtype.gguf" err.txt && grep -q "token_embd.weight" err.txt || { echo "exit $st"; cat err.txt; false; }'
exit $fail
