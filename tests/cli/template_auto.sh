#!/usr/bin/env bash
# --template auto (the default): the tokenizer's own chat template (here chat_template.jinja) is
# rendered by our Jinja interpreter for sft, render and generate; the SFT output's
# generation_config.json lists the template's end-of-turn id beside EOS, and its
# tokenizer_config.json carries the template text.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/template_auto.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

mkdir "$T/tok"
cp "$SRC/recipes/quickstart/tokenizer/"* "$T/tok/"
# a chatml-like template whose end of turn is a special token that is not EOS (<unk>, id 0)
cat > "$T/tok/chat_template.jinja" << 'EOF'
{% for m in messages %}
{{- '<|' + m.role + '|>\n' + m.content | trim }}{% if m.role == 'assistant' %}{{ '<unk>' }}{% endif %}
{{- '\n' }}
{% endfor %}
{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}
EOF
cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
head -8 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"

# render: no --template needed; the trained spans are the answers and their <unk>
"$FT" render --data "$T/data.jsonl" --tokenizer "$T/tok" -n 1 > "$T/render" 2>&1
rc=$?
check "render with the tokenizer's own template exits 0 ($(head -3 "$T/render"))" '[ $rc = 0 ]'
check "render uses chat_template.jinja" 'grep -q "chat_template.jinja" "$T/render"'
check "render shows the template's turns" 'grep -q "<|assistant|>" "$T/render"'

cat > "$T/r.json" << EOF
{"model_init": "tiny.json", "tokenizer": "$T/tok", "data": "data.jsonl", "format": "openorca",
 "output_dir": "run", "max_length": 64, "batch_size": 2, "epochs": 1, "lr": 1e-3, "save_every": 0,
 "log_every": 5, "device": "cpu", "seed": 3}
EOF
"$FT" sft "$T/r.json" > "$T/log" 2>&1
rc=$?
check "sft with the default template (auto) exits 0 ($(tail -3 "$T/log"))" '[ $rc = 0 ]'
G=$T/run/generation_config.json
check "generation_config.json lists EOS and the end-of-turn id: $(tr -d ' \n' < "$G" 2> /dev/null)" \
  'tr -d " \n\t" < "$G" | grep -q "\"eos_token_id\":\[2,0\]"'
check "the output's tokenizer_config.json carries the template" 'grep -q "m.role == '"'"'assistant'"'"'" "$T/run/tokenizer_config.json"'

# generate picks the output's own template (now in its tokenizer_config.json) and stops at <unk>
"$FT" generate "$T/run" --prompt "Hi" --max-new 4 --greedy > "$T/gen" 2>&1
rc=$?
check "generate with the output's own template exits 0 ($(cat "$T/gen"))" '[ $rc = 0 ]'

# a template we cannot run names the construct, its line, and the built-in fallback
printf '{%% macro x() %%}{%% endmacro %%}' > "$T/tok/chat_template.jinja"
"$FT" render --data "$T/data.jsonl" --tokenizer "$T/tok" -n 1 > "$T/out" 2>&1
rc=$?
check "unsupported construct: exit 2 (got $rc)" '[ $rc = 2 ]'
check "unsupported construct: named with line and built-ins ($(cat "$T/out"))" \
  'grep -q "macro" "$T/out" && grep -q "line 1" "$T/out" && grep -q "chatml" "$T/out"'

[ $fail = 0 ] && echo "template_auto: all checks passed"
exit $fail
