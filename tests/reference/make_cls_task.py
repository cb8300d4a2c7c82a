#!/usr/bin/env python3
"""Small classification tasks made of real rows, for tests/cli/classify.sh and the quick start (no Python
needed to run them: the outputs are committed). Deterministic.

- tests/fixtures/cls/alpaca-period.jsonl (text layout): the last ~100 characters (cut at a word) of each
  alpaca.jsonl output (tests/fixtures/assets/datasets, 400 real rows), labelled "period" when the answer ends
  with a full stop, else "other" (80/20: the prior's log loss is 0.50; the label is in the last token before
  EOS, which a tiny model learns in a few hundred steps).
- tests/fixtures/cls/pairs-lmsys.csv (Kaggle LMSYS layout): the 80 real openai-preference.jsonl pairs, the
  prompt as a JSON list of the user turns, the chosen and rejected answers as response_a/response_b in a
  seeded random order, one-hot winner columns (a tie every 8th row, both sides the chosen answer).
"""
import csv
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DS = os.path.join(ROOT, "tests", "fixtures", "assets", "datasets")
OUT = os.path.join(ROOT, "tests", "fixtures", "cls")


def crop(s, n=100):
    s = s.strip()
    if len(s) <= n:
        return s
    s = s[-n:]
    return s[s.find(" ") + 1:] if " " in s else s


def alpaca():
    with open(os.path.join(DS, "alpaca.jsonl")) as f, open(os.path.join(OUT, "alpaca-period.jsonl"), "w") as o:
        for i, line in enumerate(f):
            r = json.loads(line)
            out = r["output"].strip()
            o.write(json.dumps({"id": "alpaca-%d" % i, "text": crop(out),
                                "label": "period" if out.endswith(".") else "other"}) + "\n")


def lmsys():
    rng = random.Random(5)
    with open(os.path.join(DS, "openai-preference.jsonl")) as f, \
            open(os.path.join(OUT, "pairs-lmsys.csv"), "w", newline="") as o:
        w = csv.writer(o)
        w.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a",
                    "winner_model_b", "winner_tie"])
        for i, line in enumerate(f):
            r = json.loads(line)
            prompt = [m["content"] for m in r["input"]["messages"] if m["role"] == "user"]
            c, rj = r["preferred_output"][-1]["content"], r["non_preferred_output"][-1]["content"]
            if i % 8 == 7:
                a, b, win = c, c, (0, 0, 1)
            elif rng.random() < 0.5:
                a, b, win = c, rj, (1, 0, 0)
            else:
                a, b, win = rj, c, (0, 1, 0)
            w.writerow([str(1000 + i), "gpt-4", "llama-2-13b", json.dumps(prompt), json.dumps([a]), json.dumps([b])] +
                       list(win))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    alpaca()
    lmsys()
