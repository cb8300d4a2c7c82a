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
