#!/usr/bin/env bash
# Greedy text of an f16 `finetune export-gguf` in llama.cpp against `finetune generate --greedy` on the HF model.
#
#   bash tests/reference/compare_llama_cpp.sh build/finetune /path/to/llama-simple
#
# llama-cpp-python has no wheel on PyPI (its sdist builds llama.cpp: not done in 20 minutes on this 2-core
# machine), so this uses llama.cpp's own greedy example, examples/simple (llama-simple), built from the llama.cpp
# that llama-cpp-python's sdist vendors (pip download llama-cpp-python --no-binary :all:; cmake -B b -S
# vendor/llama.cpp -DLLAMA_BUILD_EXAMPLES=ON; cmake --build b --target llama-simple).
# Models: `finetune init` checkpoints stored in float16 (so the f16 GGUF holds exactly the HF weights), one with
# the Llama-2 tokenizer (tokenizer.ggml.model "llama") and one with SmolLM's (gpt2 / smollm), no chat template
# (raw text). Ours prints the generated text; llama-simple prints the prompt's pieces then the generated text, so
# its output must end with ours. Prints one line per prompt and "ok" at the end; exits 1 on a difference.
set -u
FT=$(realpath "${1:?usage: compare_llama_cpp.sh FINETUNE LLAMA_SIMPLE}")
LS=$(realpath "${2:?usage: compare_llama_cpp.sh FINETUNE LLAMA_SIMPLE}")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
A=$SRC/tests/fixtures/assets
T=$(mktemp -d /tmp/compare_llama_cpp.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
N=${N_NEW:-24}

mk() { # mk NAME VOCAB TOKENIZER BOS EOS
  cat > "$T/$1.json" << EOF
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": $2, "hidden_size": 128,
 "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": $4, "eos_token_id": $5, "torch_dtype": "float16"}
EOF
  "$FT" init --config "$T/$1.json" --out "$T/$1" --seed 7 --std 0.2 --dtype f16 > /dev/null || exit 1
  cp "$A/tokenizers/$3/tokenizer.json" "$T/$1/"
  python3 - "$A/tokenizers/$3/tokenizer_config.json" "$T/$1/tokenizer_config.json" << 'EOF'
import json, sys
c = json.load(open(sys.argv[1])); c.pop("chat_template", None); json.dump(c, open(sys.argv[2], "w"))
EOF
  "$FT" export-gguf "$T/$1" --type f16 -o "$T/$1.gguf" > /dev/null || exit 1
}
mk llama2 32000 llama-2 1 2
mk smol 49152 smollm-135m 0 0

for m in llama2 smol; do
  for p in "The capital of France is" "Once upon a time, there was a little" "def fibonacci(n):"; do
    ours=$("$FT" generate "$T/$m" --prompt "$p" --template none --greedy --max-new "$N" 2> "$T/err") || { cat "$T/err"; exit 1; }
    theirs=$("$LS" -m "$T/$m.gguf" -n "$N" "$p" 2> "$T/lerr") || { tail -5 "$T/lerr"; exit 1; }
    if [ -n "$ours" ] && [ "${theirs%"$ours"}" != "$theirs" ]; then
      echo "ok   $m: \"$p\" -> $(printf %q "$ours")"
    else
      echo "DIFF $m: \"$p\""
      echo "  finetune:  $(printf %q "$ours")"
      echo "  llama.cpp: $(printf %q "$theirs")"
      fail=1
    fi
  done
done
[ $fail = 0 ] && echo ok
exit $fail
