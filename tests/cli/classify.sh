#!/usr/bin/env bash
# finetune classify / predict / merge end to end on the CPU:
# - a tiny random Llama learns a real-row task (tests/fixtures/cls/alpaca-period.jsonl: does the alpaca answer end
#   with a full stop?) and its eval log loss falls well below the prior's (0.50);
# - killed mid-step (FT_FAULT) and resumed, it reproduces the uninterrupted run exactly (metrics.jsonl,
#   model.safetensors byte for byte);
# - predict writes a valid submission (header id + labels, one row per input, probabilities summing to 1), prints
#   log loss and accuracy on labelled data, and matches the training run's own eval log loss;
# - LoRA on the LMSYS pairs (tests/fixtures/cls/pairs-lmsys.csv) writes a PEFT SEQ_CLS adapter; predict with
#   --adapter and with --tta swap gives Kaggle's columns; merge gives a classifier whose predictions equal the
#   adapter's; bad uses exit 2.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/classify.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
FIX=$SRC/tests/fixtures/cls

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
cat > "$T/recipe.json" << EOF
// classify.sh: full fine-tune of a tiny random Llama as a 2-label classifier
{"model_init": "tiny.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "$FIX/alpaca-period.jsonl",
 "layout": "text", "labels": ["period", "other"], "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 4, "epochs": 3, "lr": 1e-2, "warmup_steps": 5, "eval_fraction": 0.2, "eval_every": 20,
 "save_every": 10, "keep_last": 3, "log_every": 10, "device": "cpu", "seed": 1}
EOF
mkdir "$T/ref" "$T/kill"
cp "$T/recipe.json" "$T/tiny.json" "$T/ref/" && cp "$T/recipe.json" "$T/tiny.json" "$T/kill/"

"$FT" classify "$T/ref/recipe.json" --dry-run > "$T/dry.log" 2>&1
check "dry run exits 0 and plans memory ($(grep memory "$T/dry.log"))" 'grep -q "memory estimate" "$T/dry.log" && [ ! -e "$T/ref/run" ]'

"$FT" classify "$T/ref/recipe.json" > "$T/ref.log" 2>&1
rc=$?
check "classify exits 0 ($(tail -2 "$T/ref.log"))" '[ $rc = 0 ]'
check "a LlamaForSequenceClassification dir with its labels" \
  'grep -q LlamaForSequenceClassification "$T/ref/run/config.json" && grep -q "\"period\"" "$T/ref/run/config.json" && [ -s "$T/ref/run/classify.json" ]'
LAST=$(grep eval_log_loss "$T/ref/run/metrics.jsonl" | tail -1 | sed -E 's/.*"eval_log_loss":([^,}]*).*/\1/')
FIRST=$(grep eval_log_loss "$T/ref/run/metrics.jsonl" | head -1 | sed -E 's/.*"eval_log_loss":([^,}]*).*/\1/')
check "eval log loss falls well below the prior's 0.50 (first eval $FIRST, last $LAST)" \
  'awk -v l="$LAST" "BEGIN{exit !(l < 0.35)}"'
check "metrics carry loss, accuracy and eval accuracy" \
  'grep -q "\"accuracy\"" "$T/ref/run/metrics.jsonl" && grep -q "\"eval_accuracy\"" "$T/ref/run/metrics.jsonl"'

# killed in the middle of step 27 (after the step-20 checkpoint), then resumed
FT_FAULT=kill:train-mid-step:27 "$FT" classify "$T/kill/recipe.json" > "$T/kill.log" 2>&1
check "the run was killed (status $?)" '[ ! -e "$T/kill/run/model.safetensors" ]'
"$FT" classify "$T/kill/recipe.json" --resume >> "$T/kill.log" 2>&1
rc=$?
check "resumed run exits 0 ($(tail -1 "$T/kill.log"))" '[ $rc = 0 ] && grep -q "resuming from" "$T/kill.log"'
check "metrics.jsonl equals the uninterrupted run's" '[ "$(norm "$T/kill/run/metrics.jsonl")" = "$(norm "$T/ref/run/metrics.jsonl")" ]'
check "model.safetensors byte-identical" 'cmp "$T/kill/run/model.safetensors" "$T/ref/run/model.safetensors"'

# predict: the submission, and the metrics on labelled rows
"$FT" predict "$T/ref/run" --data "$FIX/alpaca-period.jsonl" --out "$T/pred.csv" > "$T/pred.out" 2> "$T/pred.log"
rc=$?
check "predict exits 0 ($(tail -1 "$T/pred.log"))" '[ $rc = 0 ]'
check "header id,period,other" '[ "$(head -1 "$T/pred.csv")" = "id,period,other" ]'
check "one row per input (401 lines)" '[ "$(wc -l < "$T/pred.csv")" = 401 ]'
check "ids in file order, probabilities summing to 1" \
  'awk -F, "NR>1{ if (\$1 != \"alpaca-\" NR-2 || (\$2+\$3-1)^2 > 1e-10) bad=1 } END{exit bad}" "$T/pred.csv"'
check "log loss and accuracy printed ($(cat "$T/pred.out"))" 'grep -q "400 labelled rows: log loss" "$T/pred.out"'
"$FT" predict "$T/ref/run" --data "$FIX/alpaca-period.jsonl" --out "$T/pred7.csv" --chunk-rows 7 --batch-tokens 100 > "$T/pred7.out" 2>&1
check "streamed in chunks of 7 rows and small batches: the same rows (to float rounding: batches differ)" \
  'paste -d, "$T/pred.csv" "$T/pred7.csv" | awk -F, "{ if (\$1 != \$4) bad=1; else if (NR>1 && (\$2-\$5)^2 > 1e-12) bad=1 } END{exit bad}"'
check "no temp file left" '[ -z "$(ls "$T" | grep "\.tmp\.")" ]'

# LoRA on the LMSYS pairs: a PEFT SEQ_CLS adapter, predict (with --tta swap), merge
cat > "$T/lora.json" << EOF
{"model": "$ASSETS_DIR/models/tiny-random-llama", "tokenizer": "$SRC/recipes/quickstart/tokenizer",
 "data": "$FIX/pairs-lmsys.csv", "layout": "lmsys", "output_dir": "lrun", "max_length": 96, "packing": false,
 "batch_size": 4, "max_steps": 4, "lr": 1e-2, "swap_augment": true, "label_smoothing": 0.05, "log_every": 1,
 "device": "cpu", "seed": 3, "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}}
EOF
"$FT" classify "$T/lora.json" > "$T/lora.log" 2>&1
rc=$?
check "LoRA classify exits 0 ($(tail -1 "$T/lora.log"))" '[ $rc = 0 ]'
check "adapter_config.json: task_type SEQ_CLS, score in modules_to_save" \
  'grep -q "\"task_type\": \"SEQ_CLS\"" "$T/lrun/adapter_config.json" && grep -q "\"score\"" "$T/lrun/adapter_config.json"'
BASE=$ASSETS_DIR/models/tiny-random-llama
"$FT" predict "$BASE" --adapter "$T/lrun" --tokenizer "$T/lrun" --data "$FIX/pairs-lmsys.csv" --out "$T/a.csv" > "$T/a.out" 2>&1
check "predict --adapter exits 0, Kaggle's header" '[ "$(head -1 "$T/a.csv")" = "id,winner_model_a,winner_model_b,winner_tie" ] && [ "$(wc -l < "$T/a.csv")" = 81 ]'
"$FT" predict "$BASE" --adapter "$T/lrun" --tokenizer "$T/lrun" --data "$FIX/pairs-lmsys.csv" --out "$T/s.csv" --tta swap > "$T/s.out" 2>&1
check "--tta swap: rows sum to 1 and differ from the plain prediction" \
  'awk -F, "NR>1{ if ((\$2+\$3+\$4-1)^2 > 1e-10) bad=1 } END{exit bad}" "$T/s.csv" && ! cmp -s "$T/a.csv" "$T/s.csv"'
"$FT" merge --base "$BASE" --adapter "$T/lrun" --out "$T/merged" --dtype fp32 > "$T/merge.log" 2>&1
check "merge of the SEQ_CLS adapter ($(tail -1 "$T/merge.log"))" 'grep -q LlamaForSequenceClassification "$T/merged/config.json"'
check "merge carries classify.json (how predict reads the data)" '[ -s "$T/merged/classify.json" ]'
"$FT" predict "$T/merged" --tokenizer "$T/lrun" --data "$FIX/pairs-lmsys.csv" --out "$T/m.csv" > "$T/m.out" 2>&1
check "the merged classifier predicts what the adapter does" \
  'paste -d, "$T/a.csv" "$T/m.csv" | awk -F, "NR>1{ for (i=2;i<=4;i++) if ((\$i-\$(i+4))^2 > 1e-10) bad=1 } END{exit bad}"'
# QLoRA: the same LMSYS run on an NF4 base (the adapter, its head and predict as with LoRA)
sed 's/"lora": {/"qlora": {/; s/"output_dir": "lrun"/"output_dir": "qrun"/' "$T/lora.json" > "$T/qlora.json"
"$FT" classify "$T/qlora.json" > "$T/qlora.log" 2>&1
rc=$?
check "QLoRA classify exits 0 ($(tail -1 "$T/qlora.log"))" '[ $rc = 0 ]'
"$FT" classify "$T/qlora.json" --dry-run > "$T/qdry.log" 2>&1
check "QLoRA: the plan is QLoRA's ($(grep "^memory" "$T/qdry.log"))" 'grep -q "^memory estimate (QLoRA" "$T/qdry.log"'
check "QLoRA: a SEQ_CLS adapter with the score head" \
  'grep -q "\"task_type\": \"SEQ_CLS\"" "$T/qrun/adapter_config.json" && grep -q "base_model.model.score.weight" "$T/qrun/adapter_model.safetensors"'
"$FT" predict "$BASE" --adapter "$T/qrun" --tokenizer "$T/qrun" --data "$FIX/pairs-lmsys.csv" --out "$T/q.csv" > "$T/q.out" 2>&1
check "QLoRA: predict gives Kaggle's columns for every row" \
  '[ "$(head -1 "$T/q.csv")" = "id,winner_model_a,winner_model_b,winner_tie" ] && [ "$(wc -l < "$T/q.csv")" = 81 ]'

# the LMSYS columns under other names (recipe keys): the same run, and predict reads them from classify.json
{ echo "id,model_a,model_b,question,answer_1,answer_2,win_1,win_2,draw"; tail -n +2 "$FIX/pairs-lmsys.csv"; } > "$T/renamed.csv"
"$FT" classify "$T/lora.json" data="$T/renamed.csv" output_dir="$T/lrun2" prompt_column=question response_a_column=answer_1 \
  response_b_column=answer_2 winner_columns='["win_1","win_2","draw"]' > "$T/lora2.log" 2>&1
rc=$?
check "classify with renamed columns exits 0 ($(tail -1 "$T/lora2.log"))" '[ $rc = 0 ]'
check "renamed columns: the same losses as Kaggle's names" \
  '[ "$(grep -o "\"loss\": *[0-9.e-]*" "$T/lrun/metrics.jsonl")" = "$(grep -o "\"loss\": *[0-9.e-]*" "$T/lrun2/metrics.jsonl")" ]'
"$FT" predict "$BASE" --adapter "$T/lrun2" --tokenizer "$T/lrun2" --data "$T/renamed.csv" --out "$T/r.csv" > "$T/r.out" 2>&1
check "predict reads the renamed columns from classify.json: the same submission" 'cmp -s "$T/a.csv" "$T/r.csv"'
"$FT" classify "$T/lora.json" output_dir="$T/lrun3" winner_columns='["a","b"]' > "$T/bad.log" 2>&1
rc=$?
check "winner_columns with 2 names: exit 2 ($(cat "$T/bad.log"))" '[ $rc = 2 ]'

# reward modelling on preference pairs (the quick start's orca_dpo-format pairs): TRL's pair loss falls
cat > "$T/reward.json" << EOF
{"model_init": "tiny.json", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "$SRC/recipes/quickstart/pairs-sample.jsonl",
 "format": "orca_dpo", "template": "danube", "task": "reward", "output_dir": "rrun", "max_length": 64,
 "batch_size": 4, "epochs": 2, "lr": 1e-2, "warmup_steps": 3, "eval_fraction": 0.2, "log_every": 1, "device": "cpu",
 "seed": 1}
EOF
"$FT" classify "$T/reward.json" > "$T/reward.log" 2>&1
rc=$?
check "reward model trains ($(tail -2 "$T/reward.log" | head -1))" '[ $rc = 0 ] && grep -q "LABEL_0" "$T/rrun/config.json"'
check "reward metrics: accuracy, margin, eval_margin" \
  'grep -q "\"margin\"" "$T/rrun/metrics.jsonl" && grep -q "\"eval_margin\"" "$T/rrun/metrics.jsonl"'
L1=$(grep -m1 '"loss"' "$T/rrun/metrics.jsonl" | sed -E 's/.*"loss":([^,}]*).*/\1/')
L2=$(grep '"loss"' "$T/rrun/metrics.jsonl" | tail -3 | sed -E 's/.*"loss":([^,}]*).*/\1/' | awk '{s+=$1} END{print s/NR}')
check "pair loss falls (first step $L1, mean of the last three $L2)" 'awk -v a="$L1" -v b="$L2" "BEGIN{exit !(b < a)}"'

# bad uses
"$FT" predict "$BASE" --tokenizer "$T/lrun" --data "$FIX/pairs-lmsys.csv" --out "$T/x.csv" > "$T/bad.log" 2>&1
rc=$?
check "predict on a causal LM without --adapter: exit 2 ($(cat "$T/bad.log"))" \
  '[ $rc = 2 ] && grep -q "not a sequence classifier" "$T/bad.log" && [ ! -e "$T/x.csv" ]'
"$FT" predict "$T/ref/run" --data "$FIX/alpaca-period.jsonl" --out "$FIX/alpaca-period.jsonl" > "$T/bad.log" 2>&1
rc=$?
check "--out over the data file refused: exit 2" '[ $rc = 2 ]'
"$FT" classify "$T/recipe.json" layout=lmsys labels='["a","b"]' > "$T/bad.log" 2>&1
rc=$?
check "lmsys with 2 labels: exit 2 ($(cat "$T/bad.log"))" '[ $rc = 2 ]'
exit $fail
