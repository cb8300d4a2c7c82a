#!/usr/bin/env bash
# Bad checkpoints stay clear (issue 14). `finetune info` reads the safetensors headers, not just config.json:
# a truncated file, a tensor of the wrong shape or dtype, a missing tensor, a broken shard of an index all
# exit 2 naming the file, the tensor and the reason; config.json alone is described with the weights "not
# checked". Weights holding NaN/Inf are named with their counts at load: sft and dpo refuse them unless
# allow_nonfinite_weights=true; generate and score warn. A NaN loss at step 1 says what it can.
# The checkpoints are the tiny Llama of recipes/models (finetune init), broken by editing bytes with python3.
set -u
FT=${FT_BIN:?FT_BIN must point at the finetune binary}
SRC=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${PWD:-/tmp}/bad_inputs.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1

# st.py: edit a safetensors file in place, keeping its header length (the header is re-padded with spaces).
#   st.py FILE header TENSOR KEY JSON    set a header field of TENSOR (shape, dtype; name renames it)
#   st.py FILE poke TENSOR INDEX VALUE [COUNT]   overwrite COUNT F32 elements from INDEX with VALUE (nan, inf)
#   st.py FILE split DIR                 write DIR/model-0000{1,2}-of-00002.safetensors + the index
cat > st.py << 'EOF'
import json, struct, sys
path, op = sys.argv[1], sys.argv[2]
with open(path, 'rb') as f:
    blob = f.read()
n = struct.unpack('<Q', blob[:8])[0]
h = json.loads(blob[8:8 + n])
data = blob[8 + n:]
def write(p, hdr, body):
    text = json.dumps(hdr, separators=(',', ':')).encode()
    text += b' ' * ((8 - len(text) % 8) % 8)
    with open(p, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + body)
if op == 'header':
    name, key, val = sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    if key == 'name':
        h[val] = h.pop(name)
    else:
        h[name][key] = val
    text = json.dumps(h, separators=(',', ':')).encode()
    assert len(text) <= n
    with open(path, 'wb') as f:
        f.write(blob[:8] + text + b' ' * (n - len(text)) + data)
elif op == 'poke':
    name, idx, val = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    count = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    t = h[name]
    assert t['dtype'] == 'F32'
    off = 8 + n + t['data_offsets'][0] + 4 * idx
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack('<f', val) * count)
elif op == 'split':
    out = sys.argv[3]
    names = sorted(k for k in h if k != '__metadata__')
    halves = [names[:len(names) // 2], names[len(names) // 2:]]
    wmap = {}
    for i, part in enumerate(halves):
        shard = 'model-%05d-of-00002.safetensors' % (i + 1)
        hdr, body = {}, b''
        for k in part:
            b, e = h[k]['data_offsets']
            hdr[k] = dict(h[k], data_offsets=[len(body), len(body) + e - b])
            body += data[b:e]
            wmap[k] = shard
        write(out + '/' + shard, hdr, body)
    with open(out + '/model.safetensors.index.json', 'w') as f:
        json.dump({'metadata': {'total_size': len(data)}, 'weight_map': wmap}, f)
EOF
st() { python3 st.py "$@"; }
# run CODE NAME CMD...: run it (stdout+stderr in out), check the exit code
run() {
  local want=$1 name=$2
  shift 2
  "$@" > out 2>&1
  local rc=$?
  check "$name: exit $want (got $rc)" '[ $rc = '"$want"' ] || { head -c 600 out; false; }'
}
has() {
  pat=$2
  check "$1: says '$2'" 'grep -q -- "$pat" out || { head -c 600 out; false; }'
}

"$FT" init --config "$SRC/recipes/models/tiny-llama.json" --out m --seed 3 > /dev/null 2>&1
check "init wrote the tiny checkpoint" '[ -f m/model.safetensors ]'
copy() { rm -rf "$1" && cp -r m "$1"; }

# ---- info checks the weights ----
run 0 "info on a good checkpoint" "$FT" info m
has "info on a good checkpoint" "weights checked: 21 tensors"
mkdir cfgonly && cp m/config.json cfgonly/
run 0 "info on config.json alone" "$FT" info cfgonly
has "info on config.json alone" "weights not checked"
has "info on config.json alone" "parameters    4186944"

copy trunc && truncate -s 100000 trunc/model.safetensors
run 2 "info on a truncated model.safetensors" "$FT" info trunc
has "info on a truncated model.safetensors" "trunc/model.safetensors: tensor '.*'.*outside the data section.*truncated"
truncate -s 6 trunc/model.safetensors
run 2 "info on a 6-byte model.safetensors" "$FT" info trunc
has "info on a 6-byte model.safetensors" "trunc/model.safetensors: file is 6 bytes.*truncated"

copy shape && st shape/model.safetensors header model.layers.1.mlp.up_proj.weight shape '[64, 172]'
run 2 "info on a wrong-shape tensor" "$FT" info shape
has "info on a wrong-shape tensor" \
  "shape/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' has shape \[64, 172\], config.json implies \[172, 64\]"
run 2 "score on the same wrong-shape tensor (the same check)" "$FT" score shape --ids 1,2
has "score on the same wrong-shape tensor (the same check)" "model.layers.1.mlp.up_proj.weight' has shape \[64, 172\]"

copy missing && st missing/model.safetensors header model.layers.0.self_attn.k_proj.weight name '"model.layers.0.self_attn.k_proj.weighx"'
run 2 "info on a missing tensor" "$FT" info missing
has "info on a missing tensor" "missing: tensor 'model.layers.0.self_attn.k_proj.weight' is missing from the checkpoint"

copy dtype && st dtype/model.safetensors header model.norm.weight dtype '"I32"'
run 2 "info on an integer tensor" "$FT" info dtype
has "info on an integer tensor" "dtype/model.safetensors: tensor 'model.norm.weight' has dtype I32"

copy overlap && st overlap/model.safetensors header model.norm.weight data_offsets '[0, 256]'
run 2 "info on overlapping tensors" "$FT" info overlap
has "info on overlapping tensors" "overlap/model.safetensors: tensors '.*' and '.*' overlap"

# sharded: every shard's header is read through the index
mkdir shards && cp m/config.json shards/ && st m/model.safetensors split shards
run 0 "info on a sharded checkpoint" "$FT" info shards
has "info on a sharded checkpoint" "weights checked: 21 tensors"
cp -r shards shards_trunc && truncate -s 50000 shards_trunc/model-00002-of-00002.safetensors
run 2 "info on a truncated second shard" "$FT" info shards_trunc
has "info on a truncated second shard" "shards_trunc/model-00002-of-00002.safetensors: .*truncated"
cp -r shards shards_shape && st shards_shape/model-00002-of-00002.safetensors header model.norm.weight shape '[32, 2]'
run 2 "info on a wrong shape in a shard" "$FT" info shards_shape
has "info on a wrong shape in a shard" "model-00002-of-00002.safetensors: tensor 'model.norm.weight' has shape \[32, 2\]"
cp -r shards shards_gone && rm shards_gone/model-00001-of-00002.safetensors
run 2 "info on a missing shard" "$FT" info shards_gone
has "info on a missing shard" "shard 'model-00001-of-00002.safetensors'.*is missing"

# a bitsandbytes 4-bit checkpoint (QLoRA's base): U8 linears with their quant state pass
run 0 "info on a bitsandbytes NF4 checkpoint" "$FT" info "$SRC/tests/fixtures/lora/bnb4/f32"
has "info on a bitsandbytes NF4 checkpoint" "weights checked: 21 tensors with the shapes config.json implies$"

# ---- non-finite weights ----
copy nan
st nan/model.safetensors poke model.norm.weight 3 nan 2
st nan/model.safetensors poke model.layers.1.mlp.up_proj.weight 100 inf
run 0 "generate on NaN weights runs" "$FT" generate nan --prompt-ids 1,5,9 --max-new 3 --greedy --ignore-eos
has "generate on NaN weights warns" "warning: nan: the weights hold 3 non-finite values (NaN/Inf) in 2 tensors"
has "generate on NaN weights names the tensors and counts" \
  "model.layers.1.mlp.up_proj.weight (1 of 11008), model.norm.weight (2 of 64)"
run 0 "score on NaN weights runs" "$FT" score nan --ids 1,5,9
has "score on NaN weights warns" "warning: nan: the weights hold 3 non-finite values"
run 0 "info does not read the values" "$FT" info nan

head -12 "$SRC/recipes/quickstart/openorca-sample.jsonl" > data.jsonl
cat > r.json << EOF
{"model": "nan", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "data.jsonl",
 "format": "openorca", "template": "danube", "output_dir": "run", "max_length": 64, "packing": true,
 "batch_size": 1, "max_steps": 2, "lr": 1e-3, "warmup_steps": 0, "log_every": 1, "device": "cpu", "seed": 7,
 "max_bad_steps": 2}
EOF
run 2 "sft refuses NaN weights" "$FT" sft r.json
has "sft refuses NaN weights: names the tensors and counts" \
  "nan: the model's weights hold 3 non-finite values (NaN/Inf) in 2 tensors: model.layers.1.mlp.up_proj.weight (1 of 11008), model.norm.weight (2 of 64)"
has "sft refuses NaN weights: names the override" "allow_nonfinite_weights=true"
check "sft refuses NaN weights: no output written" '[ ! -e run/model.safetensors ] && [ ! -e run/metrics.jsonl ]'
run 2 "sft refuses them with LoRA too" "$FT" sft r.json 'lora={"r": 2}'
has "sft refuses them with LoRA too" "model.norm.weight (2 of 64)"

# allowed: NaN in the embedding row of a token the data never uses trains as usual
copy nanrow && st nanrow/model.safetensors poke model.embed_tokens.weight $((31999 * 64)) nan 64
run 0 "sft with allow_nonfinite_weights=true trains" "$FT" sft r.json model=nanrow allow_nonfinite_weights=true
has "sft with allow_nonfinite_weights=true warns" "warning: nanrow: the model's weights hold 64 non-finite values.*model.embed_tokens.weight (64 of 2048000)"
check "sft with allow_nonfinite_weights=true: finite losses" 'grep -q "\"loss\":1" run/metrics.jsonl'
rm -rf run
# allowed, and the NaN reaches the loss: step 1 says it was the weights, in which micro-batch and example
run 2 "sft with NaN norm weights allowed: stops after max_bad_steps" "$FT" sft r.json allow_nonfinite_weights=true
has "step-1 NaN loss: before any training, which micro-batch and example" \
  "step 1: loss -*nan before any training, from micro-batch 1 of 1, first example data.jsonl:[0-9]*"
has "step-1 NaN loss: the log-probs and the weights" \
  "non-finite log-probs; the weights held 3 non-finite values.*when loaded"
rm -rf run

# dpo: the policy and a separate reference model are checked alike
cat > d.json << EOF
{"model": "m", "tokenizer": "$SRC/recipes/quickstart/tokenizer", "data": "$SRC/recipes/quickstart/pairs-sample.jsonl",
 "format": "orca_dpo", "template": "danube", "output_dir": "drun", "max_length": 64, "batch_size": 2,
 "max_steps": 1, "lr": 1e-3, "device": "cpu", "seed": 1, "lora": {"r": 2}}
EOF
run 2 "dpo refuses a NaN policy" "$FT" dpo d.json model=nan
has "dpo refuses a NaN policy" "nan: the model's weights hold 3 non-finite values"
run 2 "dpo refuses a NaN reference model" "$FT" dpo d.json dpo.reference=model dpo.reference_model=nan
has "dpo refuses a NaN reference model" "nan: the reference model's weights hold 3 non-finite values"

exit $fail
