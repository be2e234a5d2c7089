r"""The lab's renderers: one template per sentence kind and language, and their inverse.

Every sentence of a lab problem or solution comes from a template here, so any lab text can be
*parsed back* into its plan (`parse_text`) and rendered in another language (`translate_text`):
that is how the programmatic teacher translates questions and fragments. One sentence a line; the
arithmetic is LaTeX math (``$9 - 4 = 5$``), which the segmenter protects and the verifier checks.

Example:
    >>> render_text([("start", {"name": 0, "item": 0, "a": 7})], "zh")
    '米娅有7个苹果。'
    >>> translate_text("Mia has 7 apples.\nSecond, Mia gets 3 more apples.", "de")
    'Mia hat 7 Äpfel.\nZweitens bekommt Mia noch 3 Äpfel.'
"""

from __future__ import annotations

import re
import string
from functools import cache

from l2ray.errors import L2rayError
from l2ray.lab.config import LAB_LANGUAGES
from l2ray.lab.tasks import Sentence

NUMBER = r"-?\d+"

NAMES = {
    "en": ("Mia", "Leo", "Anna", "Tom", "Eva", "Max"),
    "de": ("Mia", "Leo", "Anna", "Tom", "Eva", "Max"),
    "fr": ("Mia", "Léo", "Anna", "Tom", "Eva", "Max"),
    "zh": ("米娅", "里奥", "安娜", "汤姆", "伊娃", "马克斯"),
    "ja": ("ミア", "レオ", "アンナ", "トム", "エヴァ", "マックス"),
    "ru": ("Мия", "Лео", "Анна", "Том", "Ева", "Макс"),
}
ITEMS = {
    "en": ("apples", "books", "coins", "stamps", "pencils", "cards"),
    "de": ("Äpfel", "Bücher", "Münzen", "Briefmarken", "Stifte", "Karten"),
    "fr": ("pommes", "livres", "pièces", "timbres", "crayons", "cartes"),
    "zh": ("苹果", "书", "硬币", "邮票", "铅笔", "卡片"),
    "ja": ("りんご", "本", "コイン", "切手", "鉛筆", "カード"),
    "ru": ("яблок", "книг", "монет", "марок", "карандашей", "карточек"),
}
ORDINALS = {
    "en": ("First", "Second", "Third", "Fourth", "Fifth", "Sixth"),
    "zh": ("第一", "第二", "第三", "第四", "第五", "第六"),
    "ja": ("一回目に", "二回目に", "三回目に", "四回目に", "五回目に", "六回目に"),
    "de": ("Erstens", "Zweitens", "Drittens", "Viertens", "Fünftens", "Sechstens"),
    "fr": ("Premièrement", "Deuxièmement", "Troisièmement", "Quatrièmement", "Cinquièmement", "Sixièmement"),
    "ru": ("Во-первых", "Во-вторых", "В-третьих", "В-четвёртых", "В-пятых", "В-шестых"),
}
"""``{O}``: the ordinal that opens the s-th operation, in the question and in the solution alike, so
the step that works on an operation names it with the same words the question used."""
STEP_ORDINALS = {
    "en": ("first", "second", "third", "fourth", "fifth", "sixth"),
    "zh": ("第一", "第二", "第三", "第四", "第五", "第六"),
    "ja": ("一回目", "二回目", "三回目", "四回目", "五回目", "六回目"),
    "de": ("ersten", "zweiten", "dritten", "vierten", "fünften", "sechsten"),
    "fr": ("première", "deuxième", "troisième", "quatrième", "cinquième", "sixième"),
    "ru": ("первый", "второй", "третий", "четвёртый", "пятый", "шестой"),
}
"""``{o}``: "the s-th step" inside a reflection turn."""
TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "start": "{name} has {a} {item}.",
        "add": "{O}, {name} gets {b} more {item}.",
        "sub": "{O}, {name} gives away {b} {item}.",
        "ask": "How many {item} does {name} have now?",
        "cot_start": "{name} starts with {a} {item}.",
        "cot_add": "{O}, {name} gets {b} more, so ${a} + {b} = {c}$.",
        "cot_sub": "{O}, {name} gives away {b}, so ${a} - {b} = {c}$.",
        "check_add": "Wait, let me check the {o} step: ${c} - {b} = {a}$, so it is right.",
        "check_sub": "Wait, let me check the {o} step: ${c} + {b} = {a}$, so it is right.",
        "cot_end": "So {name} has {c} {item} now.",
        "resp": "The answer is $\\boxed{{{c}}}$.",
    },
    "zh": {
        "start": "{name}有{a}个{item}。",
        "add": "{O}，{name}又得到了{b}个{item}。",
        "sub": "{O}，{name}送出了{b}个{item}。",
        "ask": "{name}现在有多少个{item}？",
        "cot_start": "{name}一开始有{a}个{item}。",
        "cot_add": "{O}，{name}又得到{b}个，所以${a} + {b} = {c}$。",
        "cot_sub": "{O}，{name}送出{b}个，所以${a} - {b} = {c}$。",
        "check_add": "等等，让我检查{o}步：${c} - {b} = {a}$，所以这一步是对的。",
        "check_sub": "等等，让我检查{o}步：${c} + {b} = {a}$，所以这一步是对的。",
        "cot_end": "所以{name}现在有{c}个{item}。",
        "resp": "答案是 $\\boxed{{{c}}}$。",
    },
    "ja": {
        "start": "{name}は{item}を{a}個持っています。",
        "add": "{O}、{name}は{item}をさらに{b}個もらいます。",
        "sub": "{O}、{name}は{item}を{b}個あげます。",
        "ask": "{name}は今{item}を何個持っていますか？",
        "cot_start": "{name}は最初に{item}を{a}個持っています。",
        "cot_add": "{O}、{name}はさらに{b}個もらうので、${a} + {b} = {c}$です。",
        "cot_sub": "{O}、{name}は{b}個あげるので、${a} - {b} = {c}$です。",
        "check_add": "待って、{o}のステップを確認します：${c} - {b} = {a}$なので、正しいです。",
        "check_sub": "待って、{o}のステップを確認します：${c} + {b} = {a}$なので、正しいです。",
        "cot_end": "だから{name}は今{item}を{c}個持っています。",
        "resp": "答えは $\\boxed{{{c}}}$ です。",
    },
    "de": {
        "start": "{name} hat {a} {item}.",
        "add": "{O} bekommt {name} noch {b} {item}.",
        "sub": "{O} verschenkt {name} {b} {item}.",
        "ask": "Wie viele {item} hat {name} jetzt?",
        "cot_start": "Am Anfang hat {name} {a} {item}.",
        "cot_add": "{O} bekommt {name} noch {b} dazu, also ${a} + {b} = {c}$.",
        "cot_sub": "{O} verschenkt {name} {b}, also ${a} - {b} = {c}$.",
        "check_add": "Moment, prüfen wir den {o} Schritt: ${c} - {b} = {a}$, also stimmt er.",
        "check_sub": "Moment, prüfen wir den {o} Schritt: ${c} + {b} = {a}$, also stimmt er.",
        "cot_end": "Also hat {name} jetzt {c} {item}.",
        "resp": "Die Antwort ist $\\boxed{{{c}}}$.",
    },
    "fr": {
        "start": "{name} a {a} {item}.",
        "add": "{O}, {name} reçoit encore {b} {item}.",
        "sub": "{O}, {name} donne {b} {item}.",
        "ask": "Combien de {item} {name} a-t-il maintenant ?",
        "cot_start": "Au début, {name} a {a} {item}.",
        "cot_add": "{O}, {name} reçoit encore {b}, donc ${a} + {b} = {c}$.",
        "cot_sub": "{O}, {name} donne {b}, donc ${a} - {b} = {c}$.",
        "check_add": "Attendez, vérifions la {o} étape : ${c} - {b} = {a}$, donc elle est juste.",
        "check_sub": "Attendez, vérifions la {o} étape : ${c} + {b} = {a}$, donc elle est juste.",
        "cot_end": "Donc {name} a maintenant {c} {item}.",
        "resp": "La réponse est $\\boxed{{{c}}}$.",
    },
    "ru": {
        "start": "{name} имеет {a} {item}.",
        "add": "{O}, {name} получает ещё {b} {item}.",
        "sub": "{O}, {name} отдаёт {b} {item}.",
        "ask": "Сколько {item} теперь имеет {name}?",
        "cot_start": "Сначала {name} имеет {a} {item}.",
        "cot_add": "{O}, {name} получает ещё {b}, значит ${a} + {b} = {c}$.",
        "cot_sub": "{O}, {name} отдаёт {b}, значит ${a} - {b} = {c}$.",
        "check_add": "Подождите, проверим {o} шаг: ${c} - {b} = {a}$, значит он верен.",
        "check_sub": "Подождите, проверим {o} шаг: ${c} + {b} = {a}$, значит он верен.",
        "cot_end": "Итак, {name} теперь имеет {c} {item}.",
        "resp": "Ответ: $\\boxed{{{c}}}$.",
    },
}
PARAPHRASES: dict[str, dict[str, str]] = {
    "en-p1": {
        "cot_start": "At first {name} has {a} {item}.",
        "cot_add": "{O}, {name} receives {b}, which gives ${a} + {b} = {c}$.",
        "cot_sub": "{O}, {name} hands over {b}, which leaves ${a} - {b} = {c}$.",
        "check_add": "Wait, let me verify the {o} step backwards: ${c} - {b} = {a}$, which matches.",
        "check_sub": "Wait, let me verify the {o} step backwards: ${c} + {b} = {a}$, which matches.",
        "cot_end": "Therefore {name} now holds {c} {item}.",
        "resp": "The final answer is $\\boxed{{{c}}}$.",
    },
    "en-p2": {
        "cot_start": "{name} begins with {a} {item}.",
        "cot_add": "{O}: adding {b} gives ${a} + {b} = {c}$.",
        "cot_sub": "{O}: taking away {b} gives ${a} - {b} = {c}$.",
        "check_add": "Hmm, let me check the {o} step again: ${c} - {b} = {a}$, so it holds.",
        "check_sub": "Hmm, let me check the {o} step again: ${c} + {b} = {a}$, so it holds.",
        "cot_end": "In total {name} ends with {c} {item}.",
        "resp": "So the answer is $\\boxed{{{c}}}$.",
    },
}
"""English rewordings of the solution sentences: the paraphrase baseline's extra English rows."""


class LabTextError(L2rayError, ValueError):
    """Text the lab's templates did not write (so the programmatic teacher cannot translate it)."""


def render_sentence(sentence: Sentence, lang: str) -> str:
    """One sentence in ``lang`` (names and items localised); ``lang`` may name an English
    paraphrase (`PARAPHRASES`)."""
    key, slots = sentence
    templates = PARAPHRASES.get(lang) or TEMPLATES[lang]
    lang = "en" if lang in PARAPHRASES else lang
    words: dict[str, object] = dict(slots)
    for field, table in _WORDS.items():
        index = slots.get(_SLOT_OF.get(field, field))
        if index is not None:
            words[field] = table[lang][index - 1 if field in _SLOT_OF else index]
    return templates[key].format(**words)


def render_text(plan: list[Sentence], lang: str) -> str:
    """The sentences of ``plan`` in ``lang``, one a line."""
    return "\n".join(render_sentence(sentence, lang) for sentence in plan)


def parse_sentence(text: str, lang: str | None = None) -> tuple[str, Sentence]:
    """``(language, sentence)`` of one rendered sentence; raises `LabTextError` when no template of
    ``lang`` (default: any lab language) wrote it."""
    for code in (lang,) if lang else LAB_LANGUAGES:
        for key, pattern in _patterns(code).items():
            match = pattern.fullmatch(text.strip())
            if match:
                return code, (key, _slots(match, code))
    raise LabTextError(f"not a lab sentence{f' in {lang}' if lang else ''}: {text.strip()[:80]!r}")


def parse_text(text: str, lang: str | None = None) -> tuple[str, list[Sentence]]:
    """``(language of the first line, plan)`` of a lab text, one sentence a non-empty line."""
    parsed = [parse_sentence(line, lang) for line in text.splitlines() if line.strip()]
    if not parsed:
        raise LabTextError("empty lab text: nothing to parse")
    return parsed[0][0], [sentence for _, sentence in parsed]


def translate_text(text: str, lang: str) -> str:
    """``text`` (lab sentences, one a line) in ``lang``; blank lines and line breaks kept."""
    lines = []
    for line in text.split("\n"):
        lines.append(render_sentence(parse_sentence(line)[1], lang) if line.strip() else line)
    return "\n".join(lines)


@cache
def _patterns(lang: str) -> dict[str, re.Pattern[str]]:
    """One regex per template: literal text escaped, slots as named groups (a repeated slot as a
    back-reference), names and items as alternations of the language's words."""
    alternatives = {
        field: "|".join(map(re.escape, sorted(table[lang], key=len, reverse=True)))
        for field, table in _WORDS.items()
    }
    compiled = {}
    for key, template in TEMPLATES[lang].items():
        parts, seen = [], set()
        for literal, field, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(literal))
            if field is None:
                continue
            if field in seen:
                parts.append(f"(?P={field})")
            else:
                parts.append(f"(?P<{field}>{alternatives.get(field, NUMBER)})")
                seen.add(field)
        compiled[key] = re.compile("".join(parts))
    return compiled


def _slots(match: re.Match[str], lang: str) -> dict[str, int]:
    slots = {}
    for field, value in match.groupdict().items():
        if field in _SLOT_OF:  # an ordinal word: the step number it stands for
            slots[_SLOT_OF[field]] = _WORDS[field][lang].index(value) + 1
        elif field in _WORDS:
            slots[field] = _WORDS[field][lang].index(value)
        else:
            slots[field] = int(value)
    return slots


_WORDS = {"name": NAMES, "item": ITEMS, "O": ORDINALS, "o": STEP_ORDINALS}
"""Template fields filled with a language's words (the slot holds an index, or a step for ordinals)."""
_SLOT_OF = {"O": "s", "o": "s"}
"""Ordinal fields and the slot (1-based step) they render."""


__all__ = [
    "ITEMS",
    "LAB_LANGUAGES",
    "NAMES",
    "ORDINALS",
    "PARAPHRASES",
    "STEP_ORDINALS",
    "TEMPLATES",
    "LabTextError",
    "parse_sentence",
    "parse_text",
    "render_sentence",
    "render_text",
    "translate_text",
]
