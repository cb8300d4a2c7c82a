#!/usr/bin/env python3
"""Make tests/fixtures/tokenizer/<name>.jsonl with Hugging Face `tokenizers`.

Each line: {"text", "special", "ids", "decoded", "decoded_skip"} where ids is
Tokenizer.encode(text, add_special_tokens=special).ids, decoded is
decode(ids, skip_special_tokens=False) and decoded_skip the same with True.

Run: /work/venv/bin/python tests/reference/make_tokenizer_fixtures.py [ASSETS_DIR]
(ASSETS_DIR defaults to tests/fixtures/assets in the checkout).
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ASSETS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "assets")
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


RX_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
RX_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
RX_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def added(id_, content, **kw):
    d = {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": False}
    d.update(kw)
    return d


def split(rx):
    return {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False}


BL_NOREGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

# Variants of the real tokenizers: {"patch": top-level keys replaced, "model_patch": model keys
# replaced, "extra_added": appended to added_tokens}. The C golden test applies the same patch.
VARIANTS = [
    ("mistral-split-always", "mistral-7b-v0.1", {
        "patch": {"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                    "split": True},
                  "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                              "split": True}}}),
    ("mistral-never", "mistral-7b-v0.1", {
        "patch": {"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never",
                                    "split": False},
                  "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never",
                              "split": False}}}),
    ("mistral-added", "mistral-7b-v0.1", {
        "extra_added": [added(32000, "<tool>", lstrip=True, rstrip=True, special=True),
                        added(32001, "hello", single_word=True),
                        added(32002, "[SEP]", rstrip=True, special=True),
                        added(32003, "ab", lstrip=True),
                        added(32004, "<tool>x")]}),
    ("mistral-unk", "mistral-7b-v0.1", {"model_patch": {"byte_fallback": False}}),
    ("mistral-unk-nofuse", "mistral-7b-v0.1", {"model_patch": {"byte_fallback": False, "fuse_unk": False}}),
    ("llama2-eos", "llama-2", {
        "patch": {"post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}},
        "extra_added": [added(32000, "hello", normalized=True), added(32001, "wor", normalized=True)]}),
    ("smollm-llama3", "smollm-135m", {
        "patch": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(RX_LLAMA3), BL_NOREGEX]}},
        "model_patch": {"ignore_merges": True}}),
    ("smollm-qwen2", "smollm-135m", {
        "patch": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(RX_QWEN2), BL_NOREGEX]}}}),
    ("smollm-gpt2split-prefix", "smollm-135m", {
        "patch": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": False}, split(RX_GPT2),
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "RobertaProcessing", "sep": ["<|im_end|>", 2], "cls": ["<|im_start|>", 1],
                               "trim_offsets": True, "add_prefix_space": True}}}),
    ("smollm-nfc", "smollm-135m", {"patch": {"normalizer": {"type": "NFC"}}}),
]

VARIANT_TEXTS = [
    "", " ", "Hello world", "Hello  world   ", "  leading", "a\n\n\nb", "x \n\n y", "a\r\n\r\nb  \n",
    "I'M SURE IT'S FINE, WE'LL SEE", "don't 's 'S 'Ll", "1234567 89 x1y22z333", "3.14159, 2.71828",
    "def f(x):\n    return x  # c\n", "tabs\tand\t\tmore", "   \t\n  \n", "!!!??? ...",
    "<tool>", " <tool> x", "a  <tool>  b", "<tool>x <tool>xy", "say hello there", "sayhello hello_x (hello)",
    "hello", "x [SEP]   y", "ab ab", "  ab", "cab", "<s>hi</s>", "<|im_start|>user\nhi<|im_end|>",
    "world wor word", "Straße naïve café", "\u00a0nbsp", "ÀÉÎõü ÿ",
    "你好，世界！", "مرحبا بالعالم", "😀 👩\u200d👩\u200d👧", "\uE000 \U0001F9EC rare", "a\u2028b",
]


def patched(base, spec):
    with open(os.path.join(ASSETS, "tokenizers", base, "tokenizer.json"), encoding="utf-8") as f:
        d = json.load(f)
    for k, v in spec.get("patch", {}).items():
        d[k] = v
    for k, v in spec.get("model_patch", {}).items():
        d["model"][k] = v
    d["added_tokens"] = d["added_tokens"] + spec.get("extra_added", [])
    return Tokenizer.from_str(json.dumps(d))


def make_variants():
    out = []
    for name, base, spec in VARIANTS:
        tok = patched(base, spec)
        cases = []
        for text in VARIANT_TEXTS:
            if name == "smollm-nfc" and any(ord(c) >= 0x300 for c in text):
                continue  # our NFC is only the identity below U+0300
            for special in (False, True):
                ids = tok.encode(text, add_special_tokens=special).ids
                cases.append({"text": text, "special": special, "ids": ids,
                              "decoded": tok.decode(ids, skip_special_tokens=False),
                              "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
        out.append({"name": name, "base": base, "spec": spec, "cases": cases})
    path = os.path.join(OUT, "variants.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True)
    print(path, os.path.getsize(path), "bytes")


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
    make_variants()


if __name__ == "__main__":
    main()
