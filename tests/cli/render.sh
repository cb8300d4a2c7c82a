#!/bin/bash
# finetune render: examples with trained spans in [[...]], whole-file statistics,
# bad records under fail/skip, --help, unknown options.
set -u
BIN=${FT_BIN:-./finetune}
SRC=${FT_SOURCE_DIR:-.}
. "$(dirname "$0")/lib.bash"
A=$ASSETS_DIR
TOK=$A/tokenizers/mistral-7b-v0.1
[ -f "$TOK/tokenizer.json" ] && [ -f "$A/datasets/alpaca.jsonl" ] || { echo "FAIL: committed assets missing under $A"; exit 1; }
fail() { echo "FAIL: $*"; exit 1; }
out=$("$BIN" render --data "$A/datasets/alpaca.jsonl" --template danube --tokenizer "$TOK" -n 2) || fail "render alpaca"
echo "$out" | grep -q "format alpaca" || fail "format not reported"
[ "$(echo "$out" | grep -c '^--- example')" = 2 ] || fail "expected 2 examples"
echo "$out" | grep -q '<|prompt|>.*</s><|answer|>\[\[' || fail "trained span not marked after <|answer|>"
echo "$out" | grep -q '</s>\]\]' || fail "EOS not inside the trained span"
echo "$out" | grep -Eq 'examples: +400$' || fail "statistics over the whole file: $out"
out=$("$BIN" render --data "$A/datasets/openai-messages.jsonl" --template chatml --tokenizer "$TOK" -n 1 --max-length 64) || fail "max-length"
echo "$out" | grep -Eq 'truncated: +[1-9]' || fail "truncation not counted"
out=$("$BIN" render --data "$A/datasets/sharegpt-preference.jsonl" --template llama2 --tokenizer "$TOK" -n 1) || fail "preference"
echo "$out" | grep -q '^chosen:' || fail "preference pair not shown"
bad=$SRC/tests/fixtures/datasets/bad_alpaca.jsonl
"$BIN" render --data "$bad" --template alpaca --tokenizer "$TOK" >/dev/null 2>err.txt; rc=$?
[ $rc = 2 ] || fail "bad record under fail: rc $rc"
grep -q 'bad_alpaca.jsonl:2' err.txt || fail "error does not name file:line: $(cat err.txt)"
out=$("$BIN" render --data "$bad" --template alpaca --tokenizer "$TOK" --on-bad-record skip) || fail "skip"
echo "$out" | grep -Eq 'skipped records: +5$' || fail "skips not counted: $out"
echo "$out" | grep -Eq 'malformed JSON +1$' || fail "skip reason missing"
"$BIN" render --help | grep -q -- '--on-bad-record' || fail "--help"
"$BIN" render --data x --bogus 1 2>/dev/null; [ $? = 2 ] || fail "unknown option accepted"
"$BIN" render --data x --template nope --tokenizer "$TOK" 2>/dev/null; [ $? = 2 ] || fail "unknown template accepted"
rm -f err.txt
echo "render: ok"
