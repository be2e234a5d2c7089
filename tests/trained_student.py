"""A student briefly trained on tagged traces: it writes text and switches languages, in seconds on
CPU — for tests that need a model saying something (the random-init student mostly emits specials)."""

from __future__ import annotations

import random
from pathlib import Path

from l2ray.text import insert_tags

LANGS = ("en", "zh", "fr", "de")
FRAGMENTS = {
    "en": ("Let me add the numbers. ", "The sum is {c}. ", "Wait, check: {a} + {b} = {c}. "),
    "zh": ("我们把两个数相加。", "和是 {c}。", "等等，检查一下：{a} + {b} = {c}。"),
    "fr": ("Additionnons les nombres. ", "La somme est {c}. ", "Attendez, vérifions : {a} + {b} = {c}. "),
    "de": ("Addieren wir die Zahlen. ", "Die Summe ist {c}. ", "Moment, prüfen wir: {a} + {b} = {c}. "),
}


def tagged_conversation(rng: random.Random) -> list[dict[str, str]]:
    """A short arithmetic trace whose fragments are in random languages, tagged at every switch."""
    a, b = rng.randint(1, 50), rng.randint(1, 50)
    codes = [rng.choice(LANGS) for _ in FRAGMENTS["en"]]
    fragments = [(code, FRAGMENTS[code][i].format(a=a, b=b, c=a + b)) for i, code in enumerate(codes)]
    cot = insert_tags(fragments).strip()
    answer = f"The answer is $\\boxed{{{a + b}}}$."
    return [
        {"role": "user", "content": f"What is {a}+{b}?"},
        {"role": "assistant", "content": f"<think>\n{cot}\n</think>\n\n{answer}"},
    ]


def train_briefly(path: Path, steps: int = 60, seed: int = 0) -> None:
    """A few hundred AdamW steps of plain next-token training on tagged traces (seconds on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        texts = [tokenizer.apply_chat_template(tagged_conversation(rng), tokenize=False) for _ in range(16)]
        # The opening tags and first switches are what the tests look at: 64 tokens cover them.
        batch = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=64, add_special_tokens=False
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(path)
