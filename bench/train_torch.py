"""The Python side of bench/train_cpu.sh and bench/train_gpu.sh: the same training job as `finetune sft`
in a plain PyTorch + transformers (+ PEFT) loop.

  python train_torch.py train --model DIR --batches FILE --steps N --out METRICS.jsonl [options]
  python train_torch.py init-lora --model DIR --out ADAPTER_DIR --r R --alpha A   (PEFT's init, saved)

`train` reads the micro-batches that bench_sft_batches printed (the exact packed rows `finetune sft`
trains on: ids, next-token targets, position ids restarting per packed sample, doc_start), builds the
block-diagonal causal mask from doc_start so packed samples do not see each other, and trains with
AdamW (torch.optim.AdamW, weight decay on matrices only), transformers' cosine/linear/constant schedule
with warmup and clip_grad_norm_, one micro-batch per step. The loss is the mean cross-entropy over the
step's trained tokens (targets >= 0), as ours with loss_normalization=tokens. With --lora-init DIR the
base is frozen and the PEFT adapter saved by `init-lora` is trained (the same start as ours with
lora.init_from=DIR). Each step's loss, grad norm and wall time go to --out; peak memory is the caller's
job on the CPU (/usr/bin/time -v) and torch.cuda.max_memory_allocated on the GPU.
"""
import argparse
import json
import sys
import time


def die(msg):
    print(f"train_torch.py: {msg}", file=sys.stderr)
    sys.exit(2)


try:
    import torch
    import torch.nn.functional as F
except ImportError as ex:  # the shell scripts check first; this is the fallback message
    die(f"PyTorch is not importable ({ex}); install torch or point the script at a venv that has it")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_model(path, device, dtype=None, qlora=False):
    from transformers import AutoModelForCausalLM
    kw = {}
    if qlora:  # bitsandbytes NF4 with double quantization, as QLoRA (and our qlora section) does
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, attn_implementation="sdpa", **kw)
    return model if qlora else model.to(device)


def init_lora(a):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(a.seed)
    model = load_model(a.model, "cpu")
    cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                     task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(a.out)


def read_batches(path, steps):
    out = []
    with open(path) as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == steps:
                break
    if len(out) < steps:
        die(f"{path}: {len(out)} micro-batches, {steps} steps asked (dump more epochs)")
    return out


def to_tensors(b, device):
    rows, L = b["rows"], b["row_len"]
    ids = torch.tensor(b["ids"], dtype=torch.long).view(rows, L)
    tgt = torch.tensor(b["targets"], dtype=torch.long).view(rows, L)
    pos = torch.tensor(b["pos"], dtype=torch.long).view(rows, L)
    doc = torch.tensor(b["doc_start"], dtype=torch.long).view(rows, L)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal  # same packed sample and not in the future
    return ids.to(device), tgt.to(device), pos.to(device), allowed[:, None].to(device)


def train(a):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, \
        get_linear_schedule_with_warmup
    torch.set_num_threads(a.threads)
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        die("--device cuda but torch.cuda.is_available() is False")
    # frozen bases in bf16 (LoRA) or NF4 (QLoRA, bitsandbytes); the trainable adapter stays fp32 (PEFT's
    # autocast_adapter_dtype), the full fine-tune keeps fp32 weights under bf16 autocast
    if a.qlora and not a.lora_init:
        die("--qlora needs --lora-init (the adapter to train)")
    model = load_model(a.model, dev, torch.bfloat16 if (a.bf16_base and a.lora_init) or a.qlora else None, a.qlora)
    if a.grad_checkpointing:  # recompute each layer in backward, as we do
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if a.lora_init:
        from peft import PeftModel
        if a.qlora:
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.grad_checkpointing)
        model = PeftModel.from_pretrained(model, a.lora_init, is_trainable=True)
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.data = p.data.float()
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_train = sum(p.numel() for _, p in params)
    opt = torch.optim.AdamW([{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": a.wd},
                             {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8,  # torch defaults (as the HF Trainer)
                            **({"fused": True} if a.fused_adamw and dev == "cuda" else {}))
    make = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}
    sched = (make[a.schedule](opt, a.warmup, a.steps) if a.schedule in make
             else get_constant_schedule_with_warmup(opt, a.warmup))
    batches = [to_tensors(b, dev) for b in read_batches(a.batches, a.steps)]
    base = model.get_base_model() if a.lora_init else model
    head = base.lm_head
    amp = torch.autocast(dev, dtype=torch.bfloat16) if a.dtype == "bf16" else torch.autocast(dev, enabled=False)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = open(a.out, "w")
    for step, (ids, tgt, pos, mask) in enumerate(batches):
        if a.sdpa_flash and bool(mask[:, :, :, 0].all()):
            # every row one sample (doc_start all 0): plain causal attention, which SDPA runs with its flash
            # backend (a block-diagonal mask of packed samples forces the mem-efficient or math backend)
            mask = None
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp:
            h = base.model(input_ids=ids, position_ids=pos, attention_mask=mask).last_hidden_state
            logits = head(h).float()
        n = int((tgt >= 0).sum())
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), ignore_index=-1,
                               reduction="sum") / max(n, 1)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([p for _, p in params], a.clip if a.clip > 0 else float("inf"))
        opt.step()
        sched.step()
        lv = loss.item()
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rec = {"step": step + 1, "loss": lv, "grad_norm": float(gn), "time_s": dt, "tokens": ids.numel()}
        if dev == "cuda":
            rec["mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out.write(json.dumps(rec) + "\n")
        out.flush()
    out.close()
    print(f"torch: {a.steps} steps, {n_train} trainable parameters, threads {torch.get_num_threads()}",
          file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "init-lora"])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batches")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--lora-init")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute each decoder layer in backward")
    p.add_argument("--fused-adamw", action="store_true", help="torch.optim.AdamW(fused=True) (CUDA)")
    p.add_argument("--bf16-base", action="store_true", help="LoRA: load the frozen base in bf16")
    p.add_argument("--qlora", action="store_true", help="LoRA on a bitsandbytes NF4 base (double quant, bf16 compute)")
    p.add_argument("--sdpa-flash", action="store_true",
                   help="rows that are one sample each get no mask (is_causal): SDPA's flash backend")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.mode == "init-lora":
        init_lora(a)
    else:
        if not a.batches:
            die("train needs --batches FILE (from bench_sft_batches)")
        train(a)


if __name__ == "__main__":
    main()
