#!/usr/bin/env bash
# finetune sft on bad input: unknown recipe keys, missing and bad data (fail / skip), --dry-run,
# and a diverging run (non-finite loss): steps skipped and logged, the run stops after
# max_bad_steps with exit 2, the last good checkpoint stays and a resume from it trains on.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/sft_errors.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

# A 1-layer random Llama of width 16 with the shipped tokenizer: ~10 steps take about a second.
cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 16,
 "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -12 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
cat > "$T/r.json" << EOF
{"model_init": "tiny.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 1, "epochs": 1, "lr": 1e-3, "warmup_steps": 0, "save_every": 2, "keep_last": 2,
 "log_every": 1, "device": "cpu", "seed": 7}
EOF
cd "$T" || exit 1
run() { "$FT" sft "$@" > "$T/out" 2>&1; }

# Unknown key (in the file and on the command line): exit 2 with a suggestion.
run r.json lrr=1e-3
rc=$?
check "unknown key on the command line: exit 2 (got $rc)" '[ $rc = 2 ]'
check "unknown key: did you mean 'lr' ($(cat out))" 'grep -q "unknown key '"'"'lrr'"'"'.*did you mean '"'"'lr'"'"'" out'
sed 's/"epochs": 1/"epoch": 1/' r.json > r_typo.json
run r_typo.json
rc=$?
check "unknown key in the recipe: exit 2 (got $rc)" '[ $rc = 2 ]'
check "unknown key in the recipe: names the recipe and suggests 'epochs' ($(cat out))" \
  'grep -q "r_typo.json: unknown key '"'"'epoch'"'"'.*did you mean '"'"'epochs'"'"'" out'
run r.json lr=fast
rc=$?
check "non-number lr: exit 2 (got $rc)" '[ $rc = 2 ]'
check "non-number lr: names the key ($(cat out))" 'grep -q "lr" out'
run r.json --frobnicate
rc=$?
check "unknown option: exit 2 (got $rc)" '[ $rc = 2 ]'
run nope-recipe.json
rc=$?
check "missing recipe: non-zero (got $rc)" '[ $rc != 0 ]'
check "missing recipe: names it ($(cat out))" 'grep -q "nope-recipe.json" out'

# Missing data file: bad input, exit 2, names the file and why.
run r.json data=missing.jsonl
rc=$?
check "missing data file: exit 2 (got $rc)" '[ $rc = 2 ]'
check "missing data file: names it and says why ($(cat out))" 'grep -q "missing.jsonl.*No such file" out'
check "missing data file: nothing written" '[ ! -e run ]'

# A bad record: line 4 has a number where a string belongs, line 5 is not JSON.
{ head -3 data.jsonl; echo '{"id": "x", "system_prompt": "", "question": 5, "response": "r"}'; echo 'not json {'
  tail -n +4 data.jsonl; } > bad.jsonl
run r.json data=bad.jsonl
rc=$?
check "bad record, on_bad_record=fail: exit 2 (got $rc)" '[ $rc = 2 ]'
check "bad record: names file:line and the field ($(cat out))" 'grep -q "bad.jsonl:4: .*question" out'
check "bad record: nothing trained" '[ ! -e run/model.safetensors ]'
rm -rf run
run r.json data=bad.jsonl on_bad_record=skip
rc=$?
check "bad records, on_bad_record=skip: exit 0 (got $rc; $(tail -3 out))" '[ $rc = 0 ]'
check "skip: the summary counts both skipped records ($(grep records out))" 'grep -q "14 records read, 2 skipped as bad" out'
check "skip: the summary shows the first skipped record" 'grep -q "first skipped record: .*bad.jsonl:4" out'
check "skip: all 12 good examples train" 'grep -q "train: 12 examples" out'
check "skip: model written" '[ -s run/model.safetensors ]'
rm -rf run

# --dry-run: the plan (examples, tokens, steps, memory) and nothing written.
"$FT" init --config tiny.json --out base > /dev/null 2>&1
check "init a base checkpoint" '[ -s base/model.safetensors ]'
sed 's/"model_init": "tiny.json", "tokenizer"/"model": "base", "tokenizer"/' r.json > r_base.json
run r_base.json --dry-run
rc=$?
check "dry run: exit 0 (got $rc; $(cat out))" '[ $rc = 0 ]'
check "dry run: examples and tokens" 'grep -Eq "train: 12 examples, [0-9]+ tokens, [0-9]+ trained tokens" out'
check "dry run: optimizer steps" 'grep -Eq "[0-9]+ optimizer steps" out'
check "dry run: memory estimate" 'grep -Eq "memory estimate.*[0-9.]+ GiB" out'
check "dry run: says nothing was trained" 'grep -q "dry run: nothing trained" out'
check "dry run: no output dir created" '[ ! -e run ]'
run r.json --dry-run
check "dry run with model_init: memory estimate ($(cat out))" 'grep -Eq "memory estimate.*[0-9.]+ GiB" out'
check "dry run with model_init: no output dir created" '[ ! -e run ]'

# Divergence. Phase 1 trains 4 good steps (checkpoints 2 and 4). Phase 2 resumes with lr=1e30:
# step 5's update blows the weights up, steps 6.. have a non-finite loss and are skipped and
# logged; after max_bad_steps=3 in a row the run stops with exit 2.
run r.json max_steps=4
check "phase 1 trains ($(tail -2 out))" '[ -d run/checkpoints/step-000004 ]'
run r.json --resume max_steps=10 lr=1e30 schedule=constant max_bad_steps=3
rc=$?
check "diverging run stops with exit 2 (got $rc)" '[ $rc = 2 ]'
check "skipped steps are logged on stderr ($(cat out))" '[ "$(grep -c "non-finite loss or gradients.*step skipped" out)" = 3 ]'
check "the stop names max_bad_steps' count and says what to do" 'grep -q "3 steps in a row had non-finite loss" out'
check "metrics.jsonl marks the skipped steps" '[ "$(grep -c "\"loss\":null.*\"skipped\":1" run/metrics.jsonl)" = 3 ]'
check "metrics.jsonl has no step after the stop" '! grep -q "\"step\":9" run/metrics.jsonl'
ls run/checkpoints > ckpts
check "no checkpoint written during the bad streak (got: $(tr '\n' ' ' < ckpts))" '! grep -q "step-000006" ckpts'
check "the last good checkpoint is still there" 'grep -q "step-000004" ckpts'
# Resume with a sane learning rate from the last good checkpoint: trains to the end.
run r.json --resume max_steps=10
rc=$?
check "resume after the stop: exit 0 (got $rc; $(tail -4 out))" '[ $rc = 0 ]'
check "resume after the stop: the losses are finite again" '! grep -q "\"loss\":null" run/metrics.jsonl'
check "resume after the stop: model written" '[ -s run/model.safetensors ]'

[ $fail = 0 ] && echo "sft_errors: all checks passed"
exit $fail
