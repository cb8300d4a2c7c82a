#!/usr/bin/env bash
# CLI test for `finetune tokenize`: encode/decode round trip against ids from HF tokenizers
# (taken from tests/fixtures/tokenizer), error paths and exit codes.
set -u
BIN=${FT_BIN:?FT_BIN not set}
. "$(dirname "$0")/lib.bash"
M=$ASSETS_DIR/tokenizers/mistral-7b-v0.1
S=$ASSETS_DIR/tokenizers/smollm-135m
[ -f "$M/tokenizer.json" ] && [ -f "$S/tokenizer.json" ] || { echo "FAIL: committed tokenizers missing under $ASSETS_DIR"; exit 1; }
fail=0
check() { # name expected actual
    if [ "$2" != "$3" ]; then echo "FAIL $1: expected [$2] got [$3]"; fail=1; else echo "ok   $1"; fi
}
# HF: Tokenizer.encode("Hello world", add_special_tokens=True).ids == [1, 22557, 1526] (mistral)
out=$(printf '{"text": "Hello world"}\n{"text": ""}\n' | "$BIN" tokenize --tokenizer "$M" --special)
check "encode special" '{"ids": [1, 22557, 1526]}
{"ids": [1]}' "$out"
out=$(printf '{"text": "Hello world"}\n' | "$BIN" tokenize --tokenizer "$M")
check "encode plain" '{"ids": [22557, 1526]}' "$out"
# smollm: "<|im_start|>user\nHi" -> [1, 4093, 198, 26843]
out=$(printf '{"text": "<|im_start|>user\\nHi"}\n' | "$BIN" tokenize --tokenizer "$S")
check "encode byte-level" '{"ids": [1, 4093, 198, 26843]}' "$out"
out=$(printf '{"ids": [1, 22557, 1526]}\n' | "$BIN" tokenize --tokenizer "$M" --decode)
check "decode" '{"text":"<s> Hello world"}' "$out"
out=$(printf '{"ids": [1, 22557, 1526]}\n' | "$BIN" tokenize --tokenizer "$M" --decode --skip-special)
check "decode skip" '{"text":"Hello world"}' "$out"
# errors: bad line names stdin:LINE and the field, exit 2
err=$(printf '{"text": "ok"}\n{"text": 5}\n' | "$BIN" tokenize --tokenizer "$M" 2>&1 >/dev/null); rc=$?
check "bad field rc" 2 "$rc"
case "$err" in *"stdin:2"*'"text"'*) echo "ok   bad field msg";; *) echo "FAIL bad field msg: $err"; fail=1;; esac
err=$(printf 'not json\n' | "$BIN" tokenize --tokenizer "$M" 2>&1 >/dev/null); rc=$?
check "bad json rc" 2 "$rc"
case "$err" in *"stdin:1"*) echo "ok   bad json msg";; *) echo "FAIL bad json msg: $err"; fail=1;; esac
err=$(printf '{"ids": [1, -3]}\n' | "$BIN" tokenize --tokenizer "$M" --decode 2>&1 >/dev/null); rc=$?
check "bad ids rc" 2 "$rc"
case "$err" in *"stdin:1"*'"ids"'*) echo "ok   bad ids msg";; *) echo "FAIL bad ids msg: $err"; fail=1;; esac
"$BIN" tokenize --frobnicate >/dev/null 2>&1; check "unknown option rc" 2 $?
"$BIN" tokenize --tokenizer /nonexistent/dir </dev/null >/dev/null 2>&1; check "missing dir rc" 2 $?
"$BIN" tokenize --help | grep -q -- "--tokenizer DIR"; check "help" 0 $?
exit $fail
