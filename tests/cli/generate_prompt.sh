#!/usr/bin/env bash
# finetune generate --prompt TEXT [--template T] [--tokenizer DIR]: the text is rendered with the
# chat template (one user turn + the generation prompt) and the answer printed as text. Checked
# against the independent path: the template's text tokenized by `finetune tokenize`, generated
# with --prompt-ids, decoded by `finetune tokenize --decode`. Plus the error paths.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/generate_prompt.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
TOK=$SRC/recipes/quickstart/tokenizer

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 16,
 "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
"$FT" init --config "$T/tiny.json" --out "$T/m" --seed 5 > /dev/null 2>&1
check "init" '[ -s "$T/m/model.safetensors" ]'

# ids of a JSON-quoted text ($1) with the shipped tokenizer; $2 = --special or empty
ids_of() { printf '{"text": %s}\n' "$1" | "$FT" tokenize --tokenizer "$TOK" $2 | sed -E 's/.*\[(.*)\].*/\1/; s/ //g'; }
# text of a JSON array of ids, special tokens dropped, JSON escapes undone
text_of() {
  printf '{"ids": %s}\n' "$1" | "$FT" tokenize --tokenizer "$TOK" --decode --skip-special |
    sed -E 's/^\{"text":"(.*)"\}$/\1/; s/\\"/"/g; s/\\\//\//g' | { IFS= read -r l; printf '%b' "$l"; }
}

Q='What is the capital of France?'
# The danube template (H2O LLM Studio): <|prompt|>{user}</s><|answer|>
P=$(ids_of '"<|prompt|>What is the capital of France?</s><|answer|>"' "")
check "prompt ids ($P)" '[ -n "$P" ]'
for opts in "--greedy" "--seed 11 --temperature 0.9 --top-p 0.8"; do
  G=$("$FT" generate "$T/m" --prompt-ids "$P" --max-new 16 $opts 2> "$T/err")
  check "generate --prompt-ids $opts ($(cat "$T/err"))" '[ -n "$G" ]'
  want=$(text_of "$G")
  got=$("$FT" generate "$T/m" --prompt "$Q" --template danube --tokenizer "$TOK" --max-new 16 $opts 2> "$T/err")
  rc=$?
  check "generate --prompt --template danube $opts: exit 0 ($(cat "$T/err"))" '[ $rc = 0 ]'
  check "--prompt --template danube $opts equals the --prompt-ids path: [$got] vs [$want]" '[ "$got" = "$want" ]'
done

# Without a template: the raw text after BOS (as tokenizer(text) encodes it).
P=$(ids_of '"Once upon a time"' --special)
check "raw prompt starts with BOS ($P)" '[ "${P%%,*}" = 1 ]'
want=$(text_of "$("$FT" generate "$T/m" --prompt-ids "$P" --max-new 10 --greedy 2> /dev/null)")
got=$("$FT" generate "$T/m" --prompt "Once upon a time" --tokenizer "$TOK" --max-new 10 --greedy 2> "$T/err")
check "raw --prompt equals the --prompt-ids path: [$got] vs [$want] ($(cat "$T/err"))" '[ "$got" = "$want" ]'

# The tokenizer defaults to the model directory's.
cp "$TOK"/*.json "$T/m/"
got2=$("$FT" generate "$T/m" --prompt "Once upon a time" --max-new 10 --greedy 2> "$T/err")
check "tokenizer from MODEL_DIR by default ($(cat "$T/err"))" '[ "$got2" = "$got" ]'

# Errors: exit 2 and a message naming the problem.
expect_err() { # name, pattern, command...
  local name=$1 pat=$2
  shift 2
  "$@" > "$T/out" 2>&1
  local rc=$?
  check "$name: exit 2 (got $rc)" '[ $rc = 2 ]'
  check "$name: message matches '$pat' ($(cat "$T/out"))" 'grep -q -- "$pat" "$T/out"'
}
expect_err "both --prompt and --prompt-ids" "not both" "$FT" generate "$T/m" --prompt hi --prompt-ids 1,2
expect_err "neither prompt" "missing --prompt" "$FT" generate "$T/m"
expect_err "unknown template" "nosuch" "$FT" generate "$T/m" --prompt hi --template nosuch
expect_err "--template with --prompt-ids" "go with --prompt" "$FT" generate "$T/m" --prompt-ids 1 --template danube
expect_err "--prompt without a value" "needs a value" "$FT" generate "$T/m" --prompt
expect_err "bad --top-p" "top-p" "$FT" generate "$T/m" --prompt hi --top-p 2
"$FT" generate "$T/m" --prompt hi --tokenizer "$T/nowhere" > "$T/out" 2>&1
rc=$?
check "missing tokenizer dir: non-zero (got $rc)" '[ $rc != 0 ]'
check "missing tokenizer dir: named ($(cat "$T/out"))" 'grep -q "nowhere" "$T/out"'

[ $fail = 0 ] && echo "generate_prompt: all checks passed"
exit $fail
