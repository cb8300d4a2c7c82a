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
