"""Table of a bench/train_cpu.sh work dir: python summarize_cpu.py WORK STEPS REPS "MODES".

Per mode and run: tokens/s over steps 3..STEPS (ours: metrics.jsonl's tokens_per_s is cumulative since
the first step, so elapsed(k) = tokens of steps 1..k / tokens_per_s(k); torch: the loop's own per-step
times), the best single step's tokens/s (other processes on a shared machine only ever slow a step down,
so the fastest step is the least disturbed figure), peak RSS (/usr/bin/time -v) and per-step losses.
The table keeps the best run of each side and the spread (best - worst) / best over the runs.
"""
import json
import sys

work, steps, reps, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()


def rows(path):
    return [json.loads(line) for line in open(path) if line.strip()]


bt = []  # tokens of each step (rows x row_len, padding included, as ours counts them)
for line, _ in zip(open(f"{work}/batches.jsonl"), range(steps)):
    b = json.loads(line)
    bt.append(b["rows"] * b["row_len"])


def ours(d):
    m = {r["step"]: r for r in rows(f"{d}/metrics.jsonl") if "tokens_per_s" in r}
    el = [0.0] + [sum(bt[:k]) / m[k]["tokens_per_s"] for k in range(1, steps + 1)]
    dt = [el[k] - el[k - 1] for k in range(3, steps + 1)]
    return {"tps": sum(bt[2:steps]) / (el[steps] - el[2]), "step": max(bt[k - 1] / d_ for k, d_ in zip(range(3, steps + 1), dt)),
            "rss": int(open(f"{d}/rss_kib").read()) / 1024, "loss": [m[k]["loss"] for k in range(1, steps + 1)]}


def torch(d):
    tm = rows(f"{d}/metrics.jsonl")
    return {"tps": sum(r["tokens"] for r in tm[2:]) / sum(r["time_s"] for r in tm[2:]),
            "step": max(r["tokens"] / r["time_s"] for r in tm[2:]),
            "rss": int(open(f"{d}/rss_kib").read()) / 1024, "loss": [r["loss"] for r in tm]}


def best(runs, key):
    v = [r[key] for r in runs]
    return max(v), (max(v) - min(v)) / max(v) * 100


print("| mode | ours tok/s (spread) | torch tok/s (spread) | ratio | best step: ours / torch tok/s | ratio | "
      "peak RSS MiB: ours / torch | ratio | loss, step 1 → last (ours / torch) | max abs loss diff |")
print("|---|---|---|---|---|---|---|---|---|---|")
for mode in modes:
    o = [ours(f"{work}/ours-{mode}-{r}") for r in range(1, reps + 1)]
    t = [torch(f"{work}/torch-{mode}-{r}") for r in range(1, reps + 1)]
    (ot, os_), (tt, ts) = best(o, "tps"), best(t, "tps")
    obs, tbs = best(o, "step")[0], best(t, "step")[0]
    orss, trss = min(r["rss"] for r in o), min(r["rss"] for r in t)
    dl = max(abs(a - b) for x, y in zip(o, t) for a, b in zip(x["loss"], y["loss"]))
    print(f"| {mode} | {ot:,.0f} ({os_:.0f}%) | {tt:,.0f} ({ts:.0f}%) | {ot / tt:.2f} | {obs:,.0f} / {tbs:,.0f} | "
          f"{obs / tbs:.2f} | {orss:,.0f} / {trss:,.0f} | {orss / trss:.2f} | "
          f"{o[0]['loss'][0]:.4f} → {o[0]['loss'][-1]:.4f} / {t[0]['loss'][-1]:.4f} | {dl:.1e} |")
