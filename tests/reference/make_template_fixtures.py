"""Chat template fixtures: for each built-in template, render conversations
with transformers' apply_chat_template using (a) a reference Jinja string
(the Llama-2 tokenizer_config's own for llama2; the published form of the
others, adapted only where docs/datasets.md says so) and (b) OUR Jinja
(`finetune render --template T --jinja`), assert both give the same text,
then record the text, the ids of tokenizer(text, add_special_tokens=False)
and the reference loss mask (a token is trained when its character span
overlaps an assistant content + end-marker span).
Run from the repo root:
  /work/venv/bin/python tests/reference/make_template_fixtures.py build-x/finetune tests/fixtures/assets
"""
import json, os, subprocess, sys
from transformers import AutoTokenizer

ft_bin = sys.argv[1]
assets = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/assets"
TOK = os.path.join(assets, "tokenizers")
llama2_ref = json.load(open(os.path.join(TOK, "llama-2", "tokenizer_config.json")))["chat_template"]

REF = {
    "danube": "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + eos_token }}"
              "{% elif message['role'] == 'user' %}{{ '<|prompt|>' + message['content'] + eos_token }}"
              "{% elif message['role'] == 'assistant' %}{{ '<|answer|>' + message['content'] + eos_token }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|answer|>' }}{% endif %}",
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "llama2": llama2_ref,
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = '<|begin_of_text|>' + content %}"
              "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    # Mistral-Instruct v0.2; it has no system role: callers merge it (see mistral_msgs)
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
               "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
               "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
              "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
              "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
              "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "alpaca": "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
              "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
              "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}",
}
# per template: assistant (prefix, end marker, trailer, strip) as docs/datasets.md defines the trained span
SHAPE = {
    "danube": ("<|answer|>", "{eos}", "", False), "chatml": ("<|im_start|>assistant\n", "<|im_end|>", "\n", False),
    "llama2": (" ", " {eos}", "", True), "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "", True),
    "mistral": ("", "{eos}", "", False), "zephyr": ("<|assistant|>\n", "{eos}", "\n", False),
    "alpaca": ("### Response:\n", "{eos}", "\n\n", False),
}

def M(*turns):
    return [{"role": r, "content": c} for r, c in turns]

CONVS = [
    (M(("system", "You are a helpful assistant."), ("user", "What is 2+2?"), ("assistant", "2+2 is 4.")), False),
    (M(("user", "Hi there"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke."), ("assistant", "Why did the chicken cross the road?\nTo get to the other side.")), False),
    (M(("system", "Answer briefly."), ("user", "  Translate 'café' to English, please.\n"), ("assistant", " Coffee ☕ (or café). \n"), ("user", "日本語で？"), ("assistant", "コーヒー")), False),
    (M(("user", "Line one\nLine two"), ("assistant", "   leading spaces and trailing newline\n")), False),
    (M(("system", "Be terse."), ("user", "Name a color.")), True),
]

def mistral_msgs(msgs):
    if msgs and msgs[0]["role"] == "system":
        rest = [dict(m) for m in msgs[1:]]
        rest[0]["content"] = msgs[0]["content"] + "\n\n" + rest[0]["content"]
        return rest
    return msgs

def render(tok, jinja, msgs, gen, name=None):
    if name == "mistral":
        msgs = mistral_msgs(msgs)
    return tok.apply_chat_template(msgs, chat_template=jinja, tokenize=False, add_generation_prompt=gen)

def trained_spans(tok, name, jinja_ours, msgs, text):
    pre, end, trail, strip = SHAPE[name]
    end = end.replace("{eos}", tok.eos_token).replace("{bos}", tok.bos_token)
    spans = []
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        part = render(tok, jinja_ours, msgs[:k + 1], False)
        assert text.startswith(part)
        content = m["content"].strip() if strip else m["content"]
        e = len(part) - len(trail)
        spans.append((e - len(end) - len(content), e))
    return spans

out = {}
for tokname, names in [("mistral-7b-v0.1", list(REF)), ("smollm-135m", ["chatml", "danube"])]:
    tok = AutoTokenizer.from_pretrained(os.path.join(TOK, tokname))
    for name in names:
        ours = subprocess.run([ft_bin, "render", "--template", name, "--jinja"], check=True, capture_output=True, text=True).stdout.rstrip("\n")
        key = f"{name}@{tokname}"
        cases = []
        for msgs, gen in CONVS:
            t_ref = render(tok, REF[name], msgs, gen, name)
            t_ours = render(tok, ours, msgs, gen)
            assert t_ref == t_ours, f"{key}: reference and our Jinja differ:\n{t_ref!r}\n{t_ours!r}"
            enc = tok(t_ours, add_special_tokens=False, return_offsets_mapping=True)
            spans = trained_spans(tok, name, ours, msgs, t_ours) if not gen else []
            mask = []
            for s, e in enc["offset_mapping"]:
                if s == e:
                    mask.append(int(any(a <= s < b for a, b in spans)))
                else:
                    mask.append(int(any(s < b and e > a for a, b in spans)))
            if tok.bos_token_id != tok.eos_token_id and name != "llama2":  # llama2 has BOS before every [INST]
                assert tok.bos_token_id not in enc["input_ids"][1:], f"{key}: BOS inside the text"
            assert enc["input_ids"][:2] != [tok.bos_token_id] * 2, f"{key}: double BOS"
            cases.append({"messages": msgs, "generation_prompt": gen, "text": t_ours, "ids": enc["input_ids"], "trained": mask})
        out[key] = {"template": name, "tokenizer": tokname, "jinja": ours, "cases": cases}
        print(key, "ok:", sum(len(c["ids"]) for c in cases), "tokens")
json.dump(out, open("tests/fixtures/templates/templates.json", "w"), ensure_ascii=False, indent=0)
