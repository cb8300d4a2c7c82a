#!/usr/bin/env python3
"""HF `tokenizers` throughput on a text file, one thread; the twin of bench_tokenizer.c.

  python bench/tokenizer_hf.py TOKENIZER_DIR TEXT_FILE [--whole] [--repeat N]
  python bench/tokenizer_hf.py --make-corpus OUT.txt [DATASETS_DIR]

Encodes every line (or, with --whole, the whole file) N times with Tokenizer.encode(...,
add_special_tokens=False) and prints MB/s for the first and the best pass. --make-corpus writes
every string value of the real dataset rows (tests/fixtures/assets/datasets/*.jsonl) one per line
(newlines inside a string kept as "\\n" escapes so lines stay documents).
"""
import glob
import json
import os
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")


def strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)


def make_corpus(out, ddir):
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in sorted(glob.glob(os.path.join(ddir, "*.jsonl"))):
            with open(path, encoding="utf-8") as src:
                for line in src:
                    for s in strings(json.loads(line)):
                        if len(s) > 16:
                            f.write(s.replace("\n", "\\n") + "\n")
                            n += 1
    print(out, n, "lines", os.path.getsize(out), "bytes")


def main():
    args = sys.argv[1:]
    if args and args[0] == "--make-corpus":
        here = os.path.dirname(os.path.abspath(__file__))
        ddir = args[2] if len(args) > 2 else os.path.join(here, "..", "tests", "fixtures", "assets", "datasets")
        return make_corpus(args[1], ddir)
    from tokenizers import Tokenizer

    whole = "--whole" in args
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 3
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(os.path.join(args[0], "tokenizer.json"))
    load = time.perf_counter() - t0
    data = open(args[1], "rb").read()
    text = data.decode("utf-8")
    units = [text] if whole else text.split("\n")
    if not whole and units and units[-1] == "":
        units.pop()
    first, best, tokens = None, 1e30, 0
    for r in range(repeat):
        s = time.perf_counter()
        tokens = 0
        for u in units:
            tokens += len(tok.encode(u, add_special_tokens=False).ids)
        el = time.perf_counter() - s
        first = el if first is None else first
        best = min(best, el)
    mb = len(data) / 1e6
    print("hf    %-40s %8.2f MB %8d %s %9d tokens  load %.3f s  first %.3f s (%.2f MB/s)  best %.3f s (%.2f MB/s)"
          % (args[0], mb, len(units), "text " if whole else "lines", tokens, load, first, mb / first, best, mb / best))


if __name__ == "__main__":
    main()
