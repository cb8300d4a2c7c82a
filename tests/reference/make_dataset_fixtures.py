"""Expected values for the dataset reader tests, computed independently in
Python from the real rows (tests/fixtures/assets/datasets) (docs/datasets.md gives the rules):
  oasst: one SFT conversation per tree following the best-ranked reply
  (lowest rank; a lone unranked reply counts), preference pairs for every
  prompter message with >=2 assistant replies (chosen = lowest rank,
  rejected = highest), deleted subtrees and rows with a missing parent left
  out and counted.
Writes tests/fixtures/datasets/expected.json. Run from the repo root:
  /work/venv/bin/python tests/reference/make_dataset_fixtures.py tests/fixtures/assets
"""
import json, sys, os

assets = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/assets"
D = os.path.join(assets, "datasets")
out = {}

rows = [json.loads(l) for l in open(os.path.join(D, "oasst1.jsonl"))]
by_id = {r["message_id"]: r for r in rows}
kids = {}
for r in rows:
    if r["parent_id"] in by_id:
        kids.setdefault(r["parent_id"], []).append(r)

def subtree(r):
    yield r
    for k in kids.get(r["message_id"], []):
        if not k["deleted"]:
            yield from subtree(k)

usable = set()
deleted = missing = 0
for r in rows:
    if r["deleted"]:
        deleted += sum(1 for _ in subtree(r))
for r in rows:
    if not r["deleted"] and r["parent_id"] is None:
        usable |= {x["message_id"] for x in subtree(r)}
for r in rows:
    if not r["deleted"] and r["parent_id"] is not None and r["parent_id"] not in by_id:
        missing += sum(1 for _ in subtree(r))

def ukids(r, assistant):
    return [k for k in kids.get(r["message_id"], []) if k["message_id"] in usable and (k["role"] == "assistant") == assistant]

def best(cands, lowest=True):
    ranked = [c for c in cands if c["rank"] is not None]
    if not ranked:
        return cands[0] if cands else None
    return (min if lowest else max)(ranked, key=lambda c: c["rank"])

convs = []
for r in rows:
    if r["parent_id"] is None and r["message_id"] in usable:
        path, x = [], r
        while x is not None:
            path.append(x)
            x = best(ukids(x, x["role"] != "assistant"))
        while path and path[-1]["role"] != "assistant":
            path.pop()
        if path:
            convs.append([["user", "assistant"][p["role"] == "assistant"] for p in path] and
                         {"n": len(path), "last": path[-1]["text"]})

def to_root(x):
    p = []
    while x is not None:
        p.append(x)
        x = by_id.get(x["parent_id"]) if x["parent_id"] else None
    return p[::-1]

pairs = []
for r in rows:
    if r["message_id"] in usable and r["role"] == "prompter":
        a = ukids(r, True)
        if len([x for x in a if x["rank"] is not None]) >= 2:
            c, w = best(a, True), best(a, False)
            pairs.append({"prompt_turns": len(to_root(r)), "chosen": c["text"], "rejected": w["text"]})

out["oasst"] = {"rows": len(rows), "deleted": deleted, "missing_parent": missing,
                "convs": convs, "pairs": pairs}

def count(name):
    return sum(1 for l in open(os.path.join(D, name)) if l.strip())
for f in ["alpaca", "openai-messages", "openai-preference", "orca_dpo_pairs", "sharegpt-preference", "sharegpt-toolcall"]:
    out[f] = {"rows": count(f + ".jsonl")}
# spot values: alpaca row 2 user text (instruction + "\n\n" + input when input is non-empty)
al = [json.loads(l) for l in open(os.path.join(D, "alpaca.jsonl"))]
i = next(i for i, r in enumerate(al) if r["input"])
out["alpaca"]["first_with_input"] = {"index": i, "user": al[i]["instruction"] + "\n\n" + al[i]["input"], "assistant": al[i]["output"]}
tc = [json.loads(l) for l in open(os.path.join(D, "sharegpt-toolcall.jsonl"))]
rolemap = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "user", "system": "system"}
out["sharegpt-toolcall"]["roles0"] = [rolemap[m["from"]] for m in tc[0]["conversations"]]
json.dump(out, open("tests/fixtures/datasets/expected.json", "w"), indent=1, ensure_ascii=False)
print("oasst:", len(rows), "rows,", len(convs), "convs,", len(pairs), "pairs, deleted", deleted, "missing", missing)
