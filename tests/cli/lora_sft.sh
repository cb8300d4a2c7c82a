#!/usr/bin/env bash
# finetune sft with a lora / qlora recipe section: the output dir is a PEFT adapter (adapter_config.json +
# adapter_model.safetensors + tokenizer + chat template, no full weights); the loss falls; training continues
# from an adapter (lora.init_from); QLoRA trains on an NF4 base; bad LoRA keys are refused clearly.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/lora_sft.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"

cat > "$T/tiny.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
EOF
"$FT" init --config "$T/tiny.json" --out "$T/base" --seed 3 --std 0.2 > /dev/null 2>&1 || { echo "FAIL: init"; exit 1; }
head -20 "$SRC/recipes/quickstart/openorca-sample.jsonl" > "$T/data.jsonl"
recipe() { # $1 = file, $2 = extra JSON members
  cat > "$T/$1" << EOF
{"model": "base", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl", "format": "openorca",
 "template": "danube", "max_length": 64, "packing": true, "batch_size": 1, "grad_accum": 1, "max_steps": 12,
 "lr": 1e-2, "schedule": "constant", "log_every": 1, "device": "cpu", "seed": 5, $2}
EOF
}
# mean loss of the first 3 and of the last 3 steps
first_last() {
  grep -o '"loss":[0-9.e+-]*' "$1" | sed 's/"loss"://' |
    awk '{v[NR]=$1} END{n=NR<3?NR:3; for(i=1;i<=n;i++){a+=v[i]; b+=v[NR-i+1]} printf "%.6f %.6f", a/n, b/n}'
}

recipe lora.json '"output_dir": "run_lora", "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}'
"$FT" sft "$T/lora.json" > "$T/lora.log" 2>&1
check "lora sft runs" '[ $? -eq 0 ] || { cat "$T/lora.log"; false; }'
R=$T/run_lora
check "adapter files" '[ -f "$R/adapter_config.json" ] && [ -f "$R/adapter_model.safetensors" ]'
check "no full weights" '[ ! -f "$R/model.safetensors" ]'
check "tokenizer + chat template" '[ -f "$R/tokenizer.json" ] && grep -q chat_template "$R/tokenizer_config.json"'
check "PEFT config" 'grep -q "\"peft_type\": \"LORA\"" "$R/adapter_config.json" && grep -q "\"r\": 4," "$R/adapter_config.json"'
check "adapter keys" 'grep -aq "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" "$R/adapter_model.safetensors"'
read -r l0 l1 <<< "$(first_last "$R/metrics.jsonl")"
check "loss falls ($l0 -> $l1)" 'awk -v a="$l0" -v b="$l1" "BEGIN{exit !(b < a)}"'

# continue from the adapter: the first loss is already the trained one, lower than a fresh adapter's
recipe cont.json '"output_dir": "run_cont", "lora": {"r": 4, "alpha": 8, "init_from": "run_lora"}'
"$FT" sft "$T/cont.json" max_steps=2 > "$T/cont.log" 2>&1
check "init_from runs" '[ $? -eq 0 ] || { cat "$T/cont.log"; false; }'
read -r c0 c1 <<< "$(first_last "$T/run_cont/metrics.jsonl")"
check "continued loss ($c0) below the fresh start ($l0)" 'awk -v a="$l0" -v b="$c0" "BEGIN{exit !(b < a)}"'

recipe q.json '"output_dir": "run_q", "qlora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}'
"$FT" sft "$T/q.json" > "$T/q.log" 2>&1
check "qlora sft runs" '[ $? -eq 0 ] || { cat "$T/q.log"; false; }'
check "qlora adapter" '[ -f "$T/run_q/adapter_model.safetensors" ] && ! grep -aq "o_proj" "$T/run_q/adapter_model.safetensors"'
read -r q0 q1 <<< "$(first_last "$T/run_q/metrics.jsonl")"
check "qlora loss falls ($q0 -> $q1)" 'awk -v a="$q0" -v b="$q1" "BEGIN{exit !(b < a)}"'

# DoRA (use_dora): the adapter holds the magnitude vectors, the config says so, the loss falls, and a
# resumed run ends with the same adapter bytes
recipe dora.json '"output_dir": "run_dora", "save_every": 4, "keep_last": 10, "lora": {"r": 4, "alpha": 8, "use_dora": true, "target_modules": ["q_proj", "v_proj", "down_proj"]}'
"$FT" sft "$T/dora.json" > "$T/dora.log" 2>&1
check "dora sft runs" '[ $? -eq 0 ] || { cat "$T/dora.log"; false; }'
check "dora config" 'grep -q "\"use_dora\": true" "$T/run_dora/adapter_config.json"'
check "dora magnitudes" 'grep -aq "layers.1.mlp.down_proj.lora_magnitude_vector" "$T/run_dora/adapter_model.safetensors"'
read -r d0 d1 <<< "$(first_last "$T/run_dora/metrics.jsonl")"
check "dora loss falls ($d0 -> $d1)" 'awk -v a="$d0" -v b="$d1" "BEGIN{exit !(b < a)}"'
cp "$T/run_dora/adapter_model.safetensors" "$T/dora_full.safetensors"
rm -rf "$T/run_dora/checkpoints/step-000012" "$T/run_dora/checkpoints/step-000008"
"$FT" sft "$T/dora.json" --resume > "$T/dora_resume.log" 2>&1
check "dora resume runs" '[ $? -eq 0 ] || { cat "$T/dora_resume.log"; false; }'
check "dora resume: same adapter bytes" 'cmp -s "$T/dora_full.safetensors" "$T/run_dora/adapter_model.safetensors"'

bad() { # $1 = name, $2 = lora section, $3 = expected message
  recipe bad.json "\"output_dir\": \"run_bad\", \"lora\": $2"
  "$FT" sft "$T/bad.json" > "$T/bad.log" 2>&1
  local rc=$? want=$3
  check "$1: exit 2 (got $rc)" '[ $rc -eq 2 ]'
  check "$1: message" 'grep -qF "$want" "$T/bad.log" || { cat "$T/bad.log"; false; }'
}
bad "r = 0" '{"r": 0}' 'r = 0'
bad "dora with dropout" '{"use_dora": true, "dropout": 0.1}' 'use_dora'
bad "target" '{"target_modules": ["qkv"]}' 'target_modules entry "qkv"'
bad "layers" '{"layers_to_transform": [5]}' 'layer 5'
bad "init_from peft_type" '{"init_from": "nowhere"}' 'nowhere/adapter_config.json'
exit $fail
