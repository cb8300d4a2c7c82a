"""Make the checkpoint I/O fixtures under tests/fixtures/ckpt/ (run with /work/venv/bin/python).

- all_dtypes.safetensors: written by the Python `safetensors` library (metadata {"format": "pt"});
  tensors follow formulas that tests/unit/test_safetensors.c recomputes, plus random F16/BF16 tensors
  with torch's own fp32 conversion stored beside them (<name>_f32).
- sharded/: a tiny LlamaForCausalLM saved by transformers' save_pretrained(max_shard_size="12KB"),
  and sharded_single.safetensors: the same weights in one file (the values the shards must give).
- configs/*.json: config.json inputs (HF spellings, both rope spellings), and configs/expected.txt:
  per config, what transformers makes of it and its num_parameters().
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ckpt")
os.makedirs(OUT, exist_ok=True)


def ar(n, dtype, scale=1.0, offset=0.0):
    return (torch.arange(n, dtype=torch.float64) * scale + offset).to(dtype)


def all_dtypes():
    g = torch.Generator().manual_seed(0)
    t = {
        # value i of each: i * scale + offset, exact in its dtype
        "f32": ar(24, torch.float32, 0.5, -3.0).reshape(2, 3, 4),
        "f16": ar(6, torch.float16, 0.25, -1.0).reshape(2, 3),
        "bf16": ar(8, torch.bfloat16, 2.0, -8.0).reshape(8),
        "f64": ar(5, torch.float64, 0.125, 1.0),
        "i64": ar(4, torch.int64, -1000000000000, 7),
        "i32": ar(3, torch.int32, -70000, 1),
        "i16": ar(4, torch.int16, -300, 2),
        "i8": ar(5, torch.int8, -3, 1),
        "u8": ar(6, torch.uint8, 40, 0),
        "bool": (torch.arange(7) % 3 == 0),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "model.layers.0.mlp.up_proj.weight": ar(8, torch.float32, 1.0, 0.0).reshape(2, 2, 2, 1),
    }
    rnd = torch.randn(64, generator=g) * 3
    rnd[:4] = torch.tensor([1e-7, -6e-8, 70000.0, float("inf")])  # subnormal, underflow, overflow, inf
    t["f16_rand"] = rnd.to(torch.float16)
    t["f16_rand_f32"] = t["f16_rand"].float()
    t["bf16_rand"] = (torch.randn(64, generator=g) * 1e3).to(torch.bfloat16)
    t["bf16_rand_f32"] = t["bf16_rand"].float()
    save_file(t, os.path.join(OUT, "all_dtypes.safetensors"), metadata={"format": "pt"})


def sharded():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    m = LlamaForCausalLM(cfg)
    d = os.path.join(OUT, "sharded")
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d, max_shard_size="12KB")
    os.remove(os.path.join(d, "generation_config.json"))
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(OUT, "sharded_single.safetensors"), metadata={"format": "pt"})


CONFIGS = {
    # Danube family, from the table in FACTS.md (HF spellings as published)
    "danube1_8b": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
                   "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 24,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 16384,
                   "sliding_window": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
                   "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                   "hidden_act": "silu", "torch_dtype": "bfloat16"},
    "danube2_1_8b": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
                     "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                     "sliding_window": None, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
                     "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                     "hidden_act": "silu", "torch_dtype": "bfloat16"},
    "danube3_4b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
                   "hidden_size": 3840, "intermediate_size": 10240, "num_hidden_layers": 24,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 120,
                   "max_position_embeddings": 8192, "rope_theta": 100000.0, "rope_scaling": None,
                   "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
                   "pad_token_id": 0, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
                   "torch_dtype": "bfloat16"},
    "danube3_500m": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
                     "hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16,
                     "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                     "rope_theta": 100000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
                     "torch_dtype": "bfloat16"},
    # Qwen2: tied embeddings, q/k/v biases, eos list, no kv heads key (class default 32)
    "qwen2_tiny": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1000,
                   "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3,
                   "num_attention_heads": 32, "max_position_embeddings": 4096,
                   "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
                   "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 21,
                   "bos_token_id": 151643, "eos_token_id": [151645, 151643], "torch_dtype": "float32"},
    # Mistral with defaults only (num_key_value_heads 8, sliding_window 4096 from the class)
    "mistral_defaults": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 100, "hidden_size": 64,
                         "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 16},
    # transformers 4 rope spelling
    "llama_rope_linear": {"architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 32,
                          "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "num_key_value_heads": 2, "rope_theta": 50000.0,
                          "rope_scaling": {"type": "linear", "factor": 4.0}},
    "llama_rope_dynamic": {"architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 32,
                           "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "attention_bias": True},
    "llama3_rope": {"architectures": ["LlamaForCausalLM"], "vocab_size": 256, "hidden_size": 64,
                    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 8,
                    "num_key_value_heads": 2, "max_position_embeddings": 131072, "rope_theta": 500000.0,
                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                    "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000,
                    "tie_word_embeddings": True},
}


def configs():
    from transformers import AutoConfig, AutoModelForCausalLM

    d = os.path.join(OUT, "configs")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfgs = dict(CONFIGS)
    # transformers 5 spelling: what LlamaConfig.to_json_file writes (rope_parameters, dtype)
    c5 = AutoConfig.for_model("llama", vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, dtype="bfloat16",
                              rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 2.0,
                                            "high_freq_factor": 8.0, "rope_theta": 123456.0},
                              max_position_embeddings=4096)
    c5.architectures = ["LlamaForCausalLM"]
    cfgs["llama_tf5_rope_parameters"] = json.loads(c5.to_json_string())
    lines = ["# name num_parameters head_dim num_kv_heads max_pos sliding_window rope_theta rope_type factor "
             "low high orig_max tie bias bos eos pad"]
    rope_ids = {"default": 0, "linear": 1, "dynamic": 2, "llama3": 3}
    mt = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
    for name, js in cfgs.items():
        js.setdefault("model_type", mt[js["architectures"][0]])  # AutoConfig needs it
        path = os.path.join(d, name + ".json")
        with open(path, "w") as f:
            json.dump(js, f, indent=2)
        cfg = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        n = model.num_parameters()
        rp = cfg.rope_parameters
        rt = rope_ids[rp.get("rope_type", "default")]
        eos = cfg.eos_token_id[0] if isinstance(cfg.eos_token_id, list) else cfg.eos_token_id
        sw = getattr(cfg, "sliding_window", None) or 0
        bias = 1 if (cfg.model_type == "qwen2" or getattr(cfg, "attention_bias", False)) else 0
        vals = [name, n, model.model.layers[0].self_attn.head_dim, cfg.num_key_value_heads,
                cfg.max_position_embeddings, sw, rp["rope_theta"], rt, rp.get("factor", 1.0),
                rp.get("low_freq_factor", 0), rp.get("high_freq_factor", 0),
                rp.get("original_max_position_embeddings", 0) if rt == 3 else 0, int(cfg.tie_word_embeddings), bias,
                -1 if cfg.bos_token_id is None else cfg.bos_token_id, -1 if eos is None else eos,
                -1 if cfg.pad_token_id is None else cfg.pad_token_id]
        lines.append(" ".join(str(v) for v in vals))
    with open(os.path.join(d, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    all_dtypes()
    sharded()
    configs()
