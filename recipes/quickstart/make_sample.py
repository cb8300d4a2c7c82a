"""Writes openorca-sample.jsonl: small synthetic rows in the OpenOrca schema
(id, system_prompt, question, response) for the quick start. Deterministic.
The rows are simple and repetitive on purpose, so that a tiny model's loss
visibly falls within a minute of CPU training."""
import json
import random

rng = random.Random(7)
SYSTEMS = ["", "You are a helpful assistant.", "You are an AI assistant. Answer briefly."]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Germany", "Berlin"), ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Peru", "Lima")]
COLORS = [("grass", "green"), ("the sky", "blue"), ("snow", "white"), ("coal", "black"),
          ("a banana", "yellow"), ("a tomato", "red")]
rows = []
for i in range(96):
    kind = i % 3
    if kind == 0:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        q, r = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    elif kind == 1:
        c, cap = CAPITALS[rng.randrange(len(CAPITALS))]
        q, r = f"What is the capital of {c}?", f"The capital of {c} is {cap}."
    else:
        thing, col = COLORS[rng.randrange(len(COLORS))]
        q, r = f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {col}."
    rows.append({"id": f"quickstart.{i}", "system_prompt": SYSTEMS[i % len(SYSTEMS)], "question": q, "response": r})
with open("openorca-sample.jsonl", "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")

# Preference pairs in the orca_dpo_pairs schema (system, question, chosen, rejected): the chosen reply
# answers, the rejected one is wrong (capitals) or unhelpful (sums), so that DPO's reward accuracy on
# them rises well above chance within a minute even for a tiny model.
WRONG = {"Paris": "Rome", "Tokyo": "Lima", "Rome": "Cairo", "Madrid": "Berlin", "Berlin": "Tokyo",
         "Ottawa": "Madrid", "Cairo": "Paris", "Lima": "Ottawa"}
pairs = []
for i in range(64):
    kind = i % 2
    if kind == 0:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        q = f"What is {a} plus {b}?"
        chosen, rejected = f"{a} plus {b} is {a + b}.", "I do not know."
    else:
        c, cap = CAPITALS[rng.randrange(len(CAPITALS))]
        q = f"What is the capital of {c}?"
        chosen, rejected = f"The capital of {c} is {cap}.", f"The capital of {c} is {WRONG[cap]}."
    pairs.append({"system": SYSTEMS[i % len(SYSTEMS)], "question": q, "chosen": chosen, "rejected": rejected})
with open("pairs-sample.jsonl", "w") as f:
    for row in pairs:
        f.write(json.dumps(row) + "\n")

# Pairwise preference rows for sequence classification, in the Kaggle LMSYS Chatbot Arena train.csv layout
# (id, model_a, model_b, prompt, response_a, response_b, winner_model_a, winner_model_b, winner_tie; the
# prompt and the responses JSON-encoded lists of turns): a right and a wrong (or unhelpful) answer in a
# random order, the winner being the right one; both right is a tie. Learnable from the text alone, so a
# tiny classifier's accuracy rises above chance (1/3) quickly. arena-test.csv: the competition's test.csv
# layout (no model or winner columns), for `finetune predict`. Its own RNG: the files above stay as they were.
import csv

rng2 = random.Random(11)
RIGHT2 = {"sum": lambda a, b: [f"{a} plus {b} is {a + b}.", f"The answer is {a + b}."],
          "capital": lambda c, cap: [f"The capital of {c} is {cap}.", f"It is {cap}."]}


def arena_row(i):
    if i % 2 == 0:
        a, b = rng2.randint(1, 9), rng2.randint(1, 9)
        q = f"What is {a} plus {b}?"
        good = RIGHT2["sum"](a, b)
        bad = ["I do not know.", f"{a} plus {b} is {a + b + rng2.choice([-2, -1, 1, 2])}."]
    else:
        c, cap = CAPITALS[rng2.randrange(len(CAPITALS))]
        q = f"What is the capital of {c}?"
        good = RIGHT2["capital"](c, cap)
        bad = [f"The capital of {c} is {WRONG[cap]}.", "I do not know."]
    if rng2.random() < 0.2:  # both right: a tie
        ra, rb, w = good[0], good[1], 2
        if rng2.random() < 0.5:
            ra, rb = rb, ra
    elif rng2.random() < 0.5:
        ra, rb, w = rng2.choice(good), rng2.choice(bad), 0
    else:
        ra, rb, w = rng2.choice(bad), rng2.choice(good), 1
    return [str(100000 + i), "quickstart-a", "quickstart-b", json.dumps([q]), json.dumps([ra]), json.dumps([rb]),
            int(w == 0), int(w == 1), int(w == 2)]


with open("arena-sample.csv", "w", newline="") as f:
    wr = csv.writer(f, lineterminator="\n")
    wr.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a",
                 "winner_model_b", "winner_tie"])
    for i in range(160):
        wr.writerow(arena_row(i))
with open("arena-test.csv", "w", newline="") as f:
    wr = csv.writer(f, lineterminator="\n")
    wr.writerow(["id", "prompt", "response_a", "response_b"])
    for i in range(160, 176):
        r = arena_row(i)
        wr.writerow([r[0], r[3], r[4], r[5]])
