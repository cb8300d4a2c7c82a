#!/usr/bin/env bash
# Regression checks for two gaps found in `finetune sft`: a missing data file is bad input (exit 2,
# naming the file and why), and --dry-run prints the memory estimate for a model_init recipe too.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/sft_dry_run.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1
head -4 "$SRC/recipes/quickstart/openorca-sample.jsonl" > data.jsonl
cat > r.json << EOF
{"model_init": "$SRC/recipes/models/tiny-llama.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer",
 "data": "data.jsonl", "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64,
 "device": "cpu"}
EOF

# 1. A data file that does not exist is bad user input: exit 2 (FT_EINPUT), naming the file and why.
"$FT" sft r.json data=missing.jsonl > out 2>&1
rc=$?
check "missing data file: exit 2 (got $rc: $(cat out))" '[ $rc = 2 ]'
check "missing data file: says why ($(cat out))" 'grep -qi "no such file" out'

# 2. --dry-run prints the memory estimate also for a model_init recipe (the quick start's).
"$FT" sft r.json --dry-run > out 2>&1
check "dry run with model_init: memory estimate ($(cat out))" 'grep -q "memory estimate" out'
check "dry run with model_init: nothing written" '[ ! -e run ]'

[ $fail = 0 ] && echo "sft_dry_run: all checks passed"
exit $fail
