"""Classification data fixtures (tests/fixtures/classify), for test_classify_data.

The LMSYS Chatbot Arena CSV (Kaggle "LMSYS - Chatbot Arena Human Preference Predictions") cannot be
downloaded here, so lmsys-sample.csv and test.csv are HAND-WRITTEN rows in its published schema
(train.csv: id, model_a, model_b, prompt, response_a, response_b, winner_model_a, winner_model_b,
winner_tie; test.csv: id, prompt, response_a, response_b), with prompt/response_* holding JSON-encoded
lists of turns as the competition's files do (json.dumps, ASCII escapes or raw UTF-8, null for a
missing turn). The rows exercise what the real file holds: multi-turn prompts, null turns, quotes,
commas, code, unicode (raw and \\u-escaped, an emoji surrogate pair, one lone surrogate), a quoted field
spanning lines, a long response. The CSV is written as pandas' to_csv writes it (minimal quoting, "").

expected.json: for each tokenizer in tests/fixtures/assets/tokenizers, the ids HF `tokenizers` gives for
the WHOLE rendered text of each row, tokenizer.encode(text).ids + [eos] (add_special_tokens=True: BOS
for the SentencePiece ones), with the default pair template and the turns joined by "\\n"; and the same
for text.jsonl's texts. The C reader tokenizes the template's pieces and the parts separately; the test
checks that, untruncated, the pieces concatenate to exactly these ids.

Run from the repository root:  /work/venv/bin/python tests/reference/make_classify_fixtures.py
"""
import csv, io, json, os

from tokenizers import Tokenizer

OUT = "tests/fixtures/classify"
TOKS = "tests/fixtures/assets/tokenizers"
os.makedirs(OUT, exist_ok=True)

TEMPLATE = "<prompt>: {prompt}\n\n<response_a>: {response_a}\n\n<response_b>: {response_b}"


def jl(turns, ascii=True):
    return json.dumps(turns, ensure_ascii=ascii)


LONG = ("The mitochondrion is the powerhouse of the cell. " * 12).strip()
CODE = 'def add(a, b):\n    """Add two numbers, e.g. add(1, 2) == 3."""\n    return a + b\n\nprint(add(2, 3))'

# (id, model_a, model_b, prompt turns, response_a turns, response_b turns, winner: 0 a, 1 b, 2 tie)
ROWS = [
    (30192, "gpt-4-1106-preview", "gpt-4-0613",
     ["Is it morally right to try to have a certain percentage of females on managerial positions?",
      "OK, does pineapple belong on a pizza? Relax and give me fun answer."],
     ["The question of whether it is morally right to aim for a certain percentage of women in management "
      "is complex.", "Ah, the age-old culinary conundrum! Pineapple on pizza is a matter of taste."],
     ["As an AI, I don't have personal beliefs or opinions.", "As an AI, I don't have personal preferences."],
     0),
    (53567, "koala-13b", "gpt-4-0613",
     ["What is the difference between marriage license and marriage certificate?"],
     ["A marriage license is a legal document that allows a couple to get married."],
     ["A marriage license and a marriage certificate are two different documents."],
     1),
    (65089, "gpt-3.5-turbo-0613", "mistral-medium",
     ["explain function calling. how would you call a function?"],
     ["Function calling is the process of invoking a function:\n\n```python\n" + CODE + "\n```"],
     ["Function calling means executing a function, for example `add(1, 2)`."],
     2),
    (96401, "llama-2-13b-chat", "mistral-7b-instruct",
     ["How can I create a test set for a very rare category? I want to build a classifier."],
     ["Creating a test set for a very rare category can be challenging, but here are some strategies: "
      "oversample, stratify, and use \"synthetic\" data."],
     [None],
     0),
    (198779, "koala-13b", "gpt-3.5-turbo-0314",
     ["What is the best way to travel from Tel-Aviv to Jerusalem? Car? Bus? Plane?"],
     ["The best way to travel from Tel Aviv to Jerusalem depends on your personal preferences."],
     ["The best way to travel from Tel-Aviv to Jerusalem is by train, which is fast, \"comfortable\", and cheap."],
     1),
    (292873, "vicuna-13b", "gpt-4-0314",
     ["Translate to French: I'd like a caf\u00e9 au lait, please.", "And to Chinese?"],
     ["Je voudrais un caf\u00e9 au lait, s'il vous pla\u00eet.", "\u6211\u60f3\u8981\u4e00\u676f\u62ff\u94c1\u3002"],
     ["J'aimerais un caf\u00e9 au lait, s'il te pla\u00eet.", None],
     0),
    (313413, "mixtral-8x7b-instruct-v0.1", "vicuna-13b",
     ["Write a haiku about the sea \U0001F30A"],
     ["Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time \U0001F30A"],
     ["Blue water, deep and wide,\nwhispers of the ocean tide."],
     2),
    (370945, "gemini-pro", "gpt-4-0613",
     ["Summarize: " + LONG],
     [LONG],
     ["Mitochondria make the cell's energy."],
     1),
    (441448, "gpt-4-1106-preview", "claude-2.1",
     ["Quote Hamlet, with the quotes: \"To be, or not to be\""],
     ["\"To be, or not to be, that is the question\" \u2014 Hamlet, Act 3, Scene 1."],
     ["'To be, or not to be: that is the question.'"],
     0),
    (481524, "claude-instant-1", "llama-2-70b-chat",
     ["What does <s> mean in HTML? And </s>?"],
     ["In HTML, <s> marks text that is no longer accurate; </s> closes it."],
     ["The <s> tag renders a strikethrough."],
     1),
    (524543, "gpt-3.5-turbo-1106", "openchat-3.5",
     ["Reply with just: ok", "again"],
     ["ok", "ok"],
     ["ok", "ok"],
     2),
    (612005, "zephyr-7b-beta", "gpt-4-0125-preview",
     ["Tabs\tand  double  spaces, trailing space "],
     ["  leading spaces and a trailing newline\n"],
     ["Stra\u00dfe, na\u00efve, \u00c5ngstr\u00f6m, \u0394x"],
     0),
]


def lmsys_fields(r, i):
    rid, ma, mb, p, a, b, w = r
    fp, fa, fb = jl(p), jl(a, ascii=(i % 2 == 0)), jl(b)
    if rid == 96401:  # a quoted CSV field spanning lines: JSON whitespace between the list's elements
        fa = '[\n  ' + json.dumps(a[0]) + '\n]'
    if rid == 313413:  # an emoji as a \u surrogate pair in the JSON (as json.dumps' ensure_ascii writes it)
        fa = jl(a, ascii=True)
    return rid, ma, mb, fp, fa, fb, w


def write_csv(path, header, rows, crlf=False, bom=False):
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    wr.writerow(header)
    for r in rows:
        wr.writerow(r)
    data = buf.getvalue().encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    open(path, "wb").write(data)


H = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b",
     "winner_tie"]
train = []
for i, r in enumerate(ROWS):
    rid, ma, mb, fp, fa, fb, w = lmsys_fields(r, i)
    train.append([rid, ma, mb, fp, fa, fb, int(w == 0), int(w == 1), int(w == 2)])
write_csv(f"{OUT}/lmsys-sample.csv", H, train)
# the same rows with CRLF line ends and a UTF-8 BOM (as Excel writes them)
write_csv(f"{OUT}/lmsys-crlf-bom.csv", H, train, crlf=True, bom=True)
# test.csv: no model or winner columns (the competition's test file)
write_csv(f"{OUT}/test.csv", ["id", "prompt", "response_a", "response_b"], [[r[0], r[3], r[4], r[5]] for r in train[:4]])

# one lone surrogate (\ud83d without its pair): Python's json writes such strings; read as U+FFFD
lone = [[777001, "a", "b", '["Smile \\ud83d please"]', '["Sure \\ud83d\\ude00"]', '["No."]', 1, 0, 0]]
write_csv(f"{OUT}/lmsys-surrogate.csv", H, lone)

# bad rows, one per kind, between good ones (line numbers are asserted by the test)
bad = [
    train[1],                                                                   # line 2: good
    [9001, "a", "b", '["unclosed list"', '["x"]', '["y"]', 1, 0, 0],            # line 3: unparsable JSON list
    [9002, "a", "b", '["p"]', '["x"]', '["y"]', 1, 1, 0],                       # line 4: not one-hot
    [9003, "a", "b", '["p"]', '["x"]', '["y"]', 1, 0],                          # line 5: a field short
    [9004, "a", "b", '["p"]', '[1, "x"]', '["y"]', 0, 0, 1],                    # line 6: a turn not a string
    [9005, "a", "b", '["p"]', '["x"]', '["y"]', 0, 0, 0],                       # line 7: no winner
    train[2],                                                                   # line 8: good
]
write_csv(f"{OUT}/lmsys-bad.csv", H, bad)
write_csv(f"{OUT}/lmsys-missing-col.csv", H[:-1], [r[:-1] for r in train[:2]])
# malformed quoting: text after a closing quote (line 3, the 4th field starts at column 11)
open(f"{OUT}/lmsys-badquote.csv", "w").write(
    ",".join(H) + "\n" + "1,a,b,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,0\n" +
    "2,a,b,\"[\"\"p\"\"]\"x,\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,0\n")
# a quote left open at the end of the file (the field starts at line 3, column 5)
open(f"{OUT}/lmsys-unclosed.csv", "w").write(
    ",".join(H) + "\n" + "1,a,b,\"[\"\"p\"\"]\",\"[\"\"x\"\"]\",\"[\"\"y\"\"]\",1,0,0\n" +
    "2,\"a,b,[\"\"p\"\"],[\"\"x\"\"],[\"\"y\"\"],1,0,0\n")

# the same LMSYS rows as JSONL, lists as real JSON arrays (and one as a JSON-encoded string)
with open(f"{OUT}/lmsys-sample.jsonl", "w") as f:
    for i, r in enumerate(ROWS):
        rid, ma, mb, p, a, b, w = r
        rec = {"id": rid, "prompt": p if i != 3 else jl(p), "response_a": a, "response_b": b,
               "winner_model_a": int(w == 0), "winner_model_b": int(w == 1), "winner_tie": int(w == 2)}
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")

# text classification rows: labels by name, by index (number and string), soft
TEXT = [
    ("The movie was wonderful, I loved every minute.", "pos"),
    ("Terrible plot and worse acting.", "neg"),
    ("It was fine, I guess.", [0.3, 0.7]),
    ("Caf\u00e9 food: na\u00efve but tasty \U0001F600", 1),
    ("Two  spaces and a tab\there.", "0"),
]
with open(f"{OUT}/text.jsonl", "w") as f:
    for i, (t, l) in enumerate(TEXT):
        f.write(json.dumps({"id": f"t{i}", "text": t, "label": l}, ensure_ascii=False) + "\n")
write_csv(f"{OUT}/text.csv", ["sentence", "y"],
          [[t, l if not isinstance(l, list) else json.dumps(l)] for t, l in TEXT])
with open(f"{OUT}/regression.jsonl", "w") as f:
    for t, v in [("one", 1.5), ("two", -0.25), ("three", "2e1")]:
        f.write(json.dumps({"text": t, "label": v}) + "\n")
with open(f"{OUT}/text-bad.jsonl", "w") as f:
    f.write(json.dumps({"text": "good", "label": "pos"}) + "\n")        # 1
    f.write(json.dumps({"text": "unknown label", "label": "meh"}) + "\n")  # 2
    f.write("{not json\n")                                               # 3
    f.write(json.dumps({"label": "pos"}) + "\n")                          # 4: no text
    f.write(json.dumps({"text": "index", "label": 2}) + "\n")             # 5: index out of range
    f.write(json.dumps({"text": "soft", "label": [0.5, 0.6]}) + "\n")     # 6: sums to 1.1
    f.write(json.dumps({"text": "good too", "label": 0}) + "\n")          # 7

# expected ids of the whole rendered texts
def joined(turns):
    return "\n".join("" if t is None else t for t in turns)


# a custom template: literal text after the last part, no space after the colons, a tab
CUSTOM = "Question:\t{prompt}\nAnswer A:{response_a}\nAnswer B: {response_b}\n\nWhich answer is better?"


def render(p, a, b, template=TEMPLATE):
    return template.replace("{prompt}", joined(p)).replace("{response_a}", joined(a)).replace(
        "{response_b}", joined(b))


def fix_lone(s):
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


exp = {}
for name in sorted(os.listdir(TOKS)):
    tok = Tokenizer.from_file(f"{TOKS}/{name}/tokenizer.json")
    cfg = json.load(open(f"{TOKS}/{name}/tokenizer_config.json"))
    eos = cfg["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    eos_id = tok.token_to_id(eos)
    e = {"eos": eos_id, "lmsys": [], "lmsys_swapped": [], "custom": [], "text": []}
    for r in ROWS:
        _, _, _, p, a, b, _ = r
        e["lmsys"].append(tok.encode(render(p, a, b)).ids + [eos_id])
        e["custom"].append(tok.encode(render(p, a, b, CUSTOM)).ids + [eos_id])
        e["lmsys_swapped"].append(tok.encode(render(p, b, a)).ids + [eos_id])
    for t, _ in TEXT:
        e["text"].append(tok.encode(t).ids + [eos_id])
    e["surrogate"] = tok.encode(render(["Smile \ufffd please"], ["Sure \U0001F600"], ["No."])).ids + [eos_id]
    exp[name] = e
json.dump(exp, open(f"{OUT}/expected.json", "w"))
print("wrote", OUT)
