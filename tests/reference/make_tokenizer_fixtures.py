#!/usr/bin/env python3
"""Make tests/fixtures/tokenizer/<name>.jsonl with Hugging Face `tokenizers`.

Each line: {"text", "special", "ids", "decoded", "decoded_skip"} where ids is
Tokenizer.encode(text, add_special_tokens=special).ids, decoded is
decode(ids, skip_special_tokens=False) and decoded_skip the same with True.

Run: /work/venv/bin/python tests/reference/make_tokenizer_fixtures.py [ASSETS_DIR]
(ASSETS_DIR defaults to ../shared/assets beside the checkout).
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ASSETS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "assets")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
NAMES = ["mistral-7b-v0.1", "llama-2", "smollm-135m"]

CORPUS = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "a", "A", " a", "a ", " a ", "  a  ",
    "Hello world", "Hello  world", "Hello   world   ", "   leading spaces", "trailing spaces   ",
    "Hello, world! How are you today?", "The quick brown fox jumps over the lazy dog.",
    "line one\nline two\n\nline four", "tabs\tand\t\tmore tabs", "windows\r\nline\r\nendings\r\n",
    "mixed \t \n whitespace \r\n\t end", "I'm sure you're right, they've said we'll see; it's Bob's.",
    "DON'T SHOUT, IT'S RUDE", "'s 't 're 've 'm 'll 'd", "don''t", "x'y", "rock 'n' roll",
    "12345", "3.14159", "1,000,000 and 42 and 007", "phone: +1 (555) 123-4567", "2024-01-31T12:34:56Z",
    "0x1F600 0b1010 1e-9", "version 1.2.3-rc4", "١٢٣ ٤٥٦ arabic digits", "Ⅻ roman ½ fractions ²³",
    "def f(x):\n    return x ** 2  # square\n", "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "if x != y && z >= 3 || !w: pass",
    "<html><body class=\"x\">text</body></html>", "SELECT * FROM t WHERE id = 1;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "path/to/file.txt C:\\Windows\\System32",
    "https://example.com/a?b=c&d=e#frag", "user@example.org", "snake_case_name camelCaseName",
    "    indented code\n        more indented", "::: ... --- *** ### !!! ???", "¡Hola! ¿Qué tal?",
    "Ünïcödé àccénts façade naïve", "Straße groß", "ﬁ ligature ﬀ", "e\u0301 combining acute",
    "你好，世界！", "日本語のテキストです。", "한국어 텍스트", "中文 mixed with English 和 数字123",
    "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "עברית ו-English מעורבב",
    "مرحبا 123 hello", "हिन्दी पाठ", "ภาษาไทย", "Tiếng Việt có dấu", "ᚠᛇᚻ runic",
    "😀", "😀😃😄", "👍🏽 thumbs", "👩\u200d👩\u200d👧\u200d👦 family", "🏳️\u200d🌈 flag", "❤️ heart",
    "emoji😀inside", " 🚀 rocket ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "𓀀𓀁 hieroglyphs", "\U0001F9EC dna",
    "\uE000 private use", "\U000E0041 tag", "\u2028 line sep \u2029 para", "\u00a0nbsp\u00a0",
    "\u3000ideographic space", "zero\u200bwidth", "\u200f rtl mark", "\ufeffBOM", "\x01\x02 control \x7f",
    "\u0085 next line", "\x1c\x1d\x1e\x1f separators", "\x0b vertical \x0c formfeed",
    "<s>", "</s>", "<unk>", "<s>hello</s>", " <s> spaced </s> ", "<s><s></s></s>", "a<s>b",
    "text </s> more", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there.<|im_end|>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>", "[INST] hi [/INST]", "<<SYS>>\nsys\n<</SYS>>",
    "<|system|>Be nice</s><|prompt|>Why?</s><|answer|>Because.</s>", "< s >", "<s", "s>", "<|im_start",
    "▁ already metaspace ▁▁", "Ġ Ċ byte level chars", "<0x0A> literal", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ab" * 40, "the the the the the the", "hello" + " " * 20 + "world", "\n" * 10 + "x", " " * 33,
    "a\n\n\n\nb", "end with newline\n", "end with spaces  \n  ", "  \t  \n", "x \ty", ".\n.", "?!",
    "Mr. Smith's 3rd car—a '99 Ford—cost $4,500.50 (≈€4k).", "«guillemets» „quotes“ “curly” ‘single’",
    "a\u2013b\u2014c\u2026", "100% of 50°C ± 2", "x² + y² = z²", "∀x ∈ ℝ: x ≥ 0 → √x ∈ ℝ",
]

LONG = [
    ("The history of natural language processing generally started in the 1950s. " * 12).strip(),
    "\n".join("%d: %s" % (i, "word " * (i % 7)) for i in range(40)),
    "".join(chr(0x4E00 + (i * 37) % 2000) for i in range(300)),
    "def tokenize(text):\n" + "".join("    x%d = text[%d:%d]  # slice\n" % (i, i, i + 3) for i in range(25)),
    ("Ein längerer deutscher Text über Übungen, Größen und Straßen. " * 8).strip(),
    ("مرحبا بالعالم، هذا نص طويل. " * 10).strip(),
    "word" * 200,
    " ".join(str(i * 7919) for i in range(150)),
]

PIECES = [
    "hello", "world", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "42", "3.14", "007", "你好", "世界",
    "😀", "👩\u200d💻", "🏽", "مرحبا", "שלום", "\u200d", "𓀀", "\U0001F9EC", "\uE000", "<s>", "</s>",
    "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "'s", "'ll", "don't", "x_y", "()", "{}",
    "==", "->", "#", "//", "\"", "'", ",", ".", "!", "?", "-", "Ünï", "ß", "é", "e\u0301", "▁", "Ġ",
    "The", "the", "QUICK", "fn", "return", "\u00a0", "\u3000", "\u2028", "12345678901234567890",
]


def stress(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 25)
        out.append("".join(rng.choice(PIECES) for _ in range(k)))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20240531)
    texts = CORPUS + LONG + stress(rng, 100)
    for name in NAMES:
        tok = Tokenizer.from_file(os.path.join(ASSETS, "tokenizers", name, "tokenizer.json"))
        path = os.path.join(OUT, name + ".jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for text in texts:
                for special in (False, True):
                    ids = tok.encode(text, add_special_tokens=special).ids
                    rec = {
                        "text": text,
                        "special": special,
                        "ids": ids,
                        "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip": tok.decode(ids, skip_special_tokens=True),
                    }
                    f.write(json.dumps(rec, ensure_ascii=True) + "\n")
        print(path, len(texts) * 2, "lines", os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
