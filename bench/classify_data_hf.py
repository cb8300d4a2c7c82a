"""The Python side of bench_classify_data: an LMSYS-layout CSV read the way the Kaggle notebooks did it.

  classify_data_hf.py make N OUT.csv           write N synthetic rows in the Kaggle train.csv layout
                                               (lengths near the competition's averages: a 1-2 turn prompt
                                               of ~350 characters, responses of ~1,400), seeded
  classify_data_hf.py run TOKENIZER_DIR FILE [--max-length N] [--repeat N]
                                               pandas.read_csv, json.loads of each list (null -> ""), the
                                               turns joined with "\\n", then one HF tokenizers call per part
                                               ("<prompt>: " + p, "\\n\\n<response_a>: " + a, ...), truncated
                                               to 20/40/40% of max_length, concatenated with BOS/EOS.

Threads: HF tokenizers' batch encoding is multi-threaded (Rust, rayon); RAYON_NUM_THREADS=1 makes it one
thread like bench_classify_data. Prints rows/s and tokens/s of the best pass.
"""
import csv
import json
import random
import sys
import time


def make(n, out):
    rng = random.Random(5)
    words = ("the of and to in is that for it as with was on be by this are or from at which an have not "
             "model answer question data function python code value error example list number because "
             "however therefore first second result user system time file write read table image").split()

    def text(chars):
        s, line = [], 0
        while sum(len(w) + 1 for w in s) < chars:
            w = rng.choice(words)
            line += len(w) + 1
            if line > 80 and rng.random() < 0.1:
                w += rng.choice([".\n", ",\n", ".\n\n"])
                line = 0
            s.append(w)
        return " ".join(s).replace("\n ", "\n")

    def turns(chars):
        k = 1 if rng.random() < 0.8 else 2
        return [text(chars // k) if rng.random() > 0.01 else None for _ in range(k)]

    with open(out, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a",
                     "winner_model_b", "winner_tie"])
        for i in range(n):
            w = rng.randrange(3)
            wr.writerow([i, "a", "b", json.dumps(turns(350)), json.dumps(turns(1400)), json.dumps(turns(1400)),
                         int(w == 0), int(w == 1), int(w == 2)])


def run(tokdir, path, max_length, repeat):
    import pandas as pd
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{tokdir}/tokenizer.json")
    cfg = json.load(open(f"{tokdir}/tokenizer_config.json"))
    name = lambda k: cfg[k]["content"] if isinstance(cfg.get(k), dict) else cfg.get(k)
    bos = tok.token_to_id(name("bos_token")) if name("bos_token") else None
    eos = tok.token_to_id(name("eos_token"))
    best, ntok, rows = 1e30, 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        df = pd.read_csv(path)
        parts = {}
        for col, prefix in (("prompt", "<prompt>: "), ("response_a", "\n\n<response_a>: "),
                            ("response_b", "\n\n<response_b>: ")):
            texts = [prefix + "\n".join("" if t is None else t for t in json.loads(x)) for x in df[col]]
            parts[col] = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        shares = {"prompt": 0.2, "response_a": 0.4, "response_b": 0.4}
        ntok = 0
        for i in range(len(df)):
            ids = [bos] if bos is not None else []
            for col in ("prompt", "response_a", "response_b"):
                p = parts[col][i]
                ids += p[:int(max_length * shares[col])] if max_length > 0 else p
            ids.append(eos)
            ntok += len(ids)
        s = time.perf_counter() - t0
        best = min(best, s)
        rows = len(df)
    print(f"rows {rows} tokens {ntok} best {best:.3f} s: {rows / best:.0f} rows/s, {ntok / best / 1e6:.2f} M tokens/s")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "make":
        make(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        args = sys.argv[4:]
        ml = int(args[args.index("--max-length") + 1]) if "--max-length" in args else 0
        rep = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 3
        run(sys.argv[2], sys.argv[3], ml, rep)
    else:
        print(__doc__)
        sys.exit(2)
