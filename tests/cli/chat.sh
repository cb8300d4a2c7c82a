#!/usr/bin/env bash
# finetune chat: user lines from a pipe, the whole history (system, earlier turns with the model's own
# answers) re-rendered with the chat template every turn; /reset forgets, /exit (or EOF) leaves.
# Every answer is checked against the independent path: the expected danube text of the
# conversation tokenized by `finetune tokenize`, `generate --prompt-ids --greedy`, decoded.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/chat.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
TOK=$SRC/recipes/quickstart/tokenizer

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 16,
 "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
# std 0.5: a random model whose answers depend on the whole history, so a dropped turn shows
"$FT" init --config "$T/tiny.json" --out "$T/m" --seed 9 --std 0.5 > /dev/null 2>&1
cp "$TOK"/*.json "$T/m/"
check "init" '[ -s "$T/m/model.safetensors" ]'

json_quote() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' | awk 'BEGIN{ORS=""} NR>1{print "\\n"} {print}' | sed 's/^/"/; s/$/"/'; }
ids_of() { printf '{"text": %s}\n' "$(json_quote "$1")" | "$FT" tokenize --tokenizer "$TOK" | sed -E 's/.*\[(.*)\].*/\1/; s/ //g'; }
text_of() {
  printf '{"ids": %s}\n' "$1" | "$FT" tokenize --tokenizer "$TOK" --decode --skip-special |
    sed -E 's/^\{"text":"(.*)"\}$/\1/; s/\\"/"/g; s/\\\//\//g' | { IFS= read -r l; printf '%b' "$l"; }
}
answer() { text_of "$("$FT" generate "$T/m" --prompt-ids "$(ids_of "$1")" --max-new 12 --greedy 2> /dev/null)"; }

SYS="<|system|>Be brief.</s>"
A1=$(answer "$SYS<|prompt|>Hi there</s><|answer|>")
A2=$(answer "$SYS<|prompt|>Hi there</s><|answer|>$A1</s><|prompt|>What is \"2+2\"?</s><|answer|>")
A3=$(answer "$SYS<|prompt|>Hello again</s><|answer|>")
check "reference answers ($A1 | $A2 | $A3)" '[ -n "$A1" ] && [ -n "$A2" ] && [ -n "$A3" ]'
printf '%s\n' "$A1" "$A2" "$A3" > "$T/want"

printf 'Hi there\n\nWhat is "2+2"?\n/reset\nHello again\n/exit\nnever read\n' |
  "$FT" chat "$T/m" --template danube --system "Be brief." --max-new 12 --greedy > "$T/got" 2> "$T/err"
rc=$?
check "chat exits 0 ($(cat "$T/err"))" '[ $rc = 0 ]'
check "three answers, each equal to the reference (got: $(cat "$T/got"); want: $(cat "$T/want"))" 'cmp -s "$T/got" "$T/want"'
check "no prompt or banner on a pipe" '! grep -q "^> " "$T/err"'

# EOF ends the chat like /exit; the last line without a newline still counts; CRLF is accepted.
printf 'Hello again\r' | "$FT" chat "$T/m" --template danube --system "Be brief." --max-new 12 --greedy > "$T/got" 2> "$T/err"
rc=$?
check "EOF: exit 0 ($(cat "$T/err"))" '[ $rc = 0 ]'
check "EOF: the unterminated last line is answered" '[ "$(cat "$T/got")" = "$A3" ]'

# --tokenizer DIR is used instead of the model's; sampling with a seed is reproducible.
rm "$T/m"/tokenizer*.json "$T/m/special_tokens_map.json"
printf 'Hi there\n' | "$FT" chat "$T/m" --template danube --tokenizer "$TOK" --system "Be brief." --max-new 12 --greedy > "$T/got" 2> "$T/err"
check "--tokenizer: same first answer ($(cat "$T/err"))" '[ "$(cat "$T/got")" = "$A1" ]'
s1=$(printf 'Hi\nAgain\n' | "$FT" chat "$T/m" --template danube --tokenizer "$TOK" --seed 4 --max-new 8 2> /dev/null)
s2=$(printf 'Hi\nAgain\n' | "$FT" chat "$T/m" --template danube --tokenizer "$TOK" --seed 4 --max-new 8 2> /dev/null)
check "sampled chat with --seed is reproducible" '[ -n "$s1" ] && [ "$s1" = "$s2" ]'

# Errors.
"$FT" chat "$T/m" < /dev/null > "$T/out" 2>&1
rc=$?
check "missing --template: exit 2 (got $rc)" '[ $rc = 2 ]'
check "missing --template: lists the templates ($(cat "$T/out"))" 'grep -q "missing --template.*danube" "$T/out"'
"$FT" chat "$T/m" --template danube < /dev/null > "$T/out" 2>&1
rc=$?
check "no tokenizer in MODEL_DIR: non-zero (got $rc)" '[ $rc != 0 ]'
check "no tokenizer in MODEL_DIR: names it ($(cat "$T/out"))" 'grep -q "tokenizer" "$T/out"'
"$FT" chat "$T/m" --template danube --tokenizer "$TOK" --temperature 0 < /dev/null > "$T/out" 2>&1
rc=$?
check "--temperature 0: exit 2 (got $rc)" '[ $rc = 2 ]'
"$FT" chat --help > "$T/out" 2>&1
check "--help" 'grep -q "usage: finetune chat" "$T/out"'

[ $fail = 0 ] && echo "chat: all checks passed"
exit $fail
