"""Registry of the languages l2ray reasons in.

Every language has one special *tag token* (``<|lang:xx|>``) that marks the start of a thinking trace
and every switch inside it, the phrase used to ask a teacher to reason in it, the reflection markers
the segmenter splits on, and the anchors that introduce a final answer (used by grading).

Example:
    >>> from l2ray.languages import get_language, tag_token
    >>> get_language("zh").name
    'Chinese'
    >>> tag_token("fr")
    '<|lang:fr|>'
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from l2ray.errors import L2rayError

Script = Literal["Latin", "Han", "Japanese", "Hangul", "Cyrillic", "Arabic"]

TAG_OPEN = "<|lang:"
"""How every language tag starts (text that holds it carries l2ray markup)."""
TAG_PATTERN = re.compile(r"<\|lang:([a-z]{2,3})\|>")
"""Matches one language tag and captures its ISO 639-1 code."""


@dataclass(frozen=True)
class Language:
    """One registered language.

    Attributes:
        code: ISO 639-1 code, e.g. ``"zh"``.
        name: English name.
        native_name: the language's own name for itself.
        script: the writing system, used by language-mix measurement before any detector runs.
        reasoning_instruction: the request, written in the language, to think and answer in it.
        reflection_markers: words that open a reflection turn ("Wait", "等等"); the segmenter
            splits before them.
        answer_anchors: phrases that introduce a final answer in prose ("the answer is", "答案是").
    """

    code: str
    name: str
    native_name: str
    script: Script
    reasoning_instruction: str
    reflection_markers: tuple[str, ...]
    answer_anchors: tuple[str, ...]

    @property
    def tag(self) -> str:
        """The language's special tag token, e.g. ``<|lang:de|>``."""
        return tag_token(self.code)


def tag_token(code: str) -> str:
    """Return the tag token for a language code (the code is not checked; see `get_language`)."""
    return f"{TAG_OPEN}{code}|>"


def get_language(code: str) -> Language:
    """Look a language up by ISO code; unknown codes raise `UnknownLanguageError` with suggestions."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise UnknownLanguageError(code) from None


def validate_codes(codes: list[str] | tuple[str, ...]) -> list[str]:
    """Return ``codes`` unchanged when all are registered, else raise for the first unknown one."""
    for code in codes:
        get_language(code)
    return list(codes)


def all_tags() -> list[str]:
    """Tag tokens of every registered language, in registry order."""
    return [lang.tag for lang in LANGUAGES.values()]


class UnknownLanguageError(L2rayError, ValueError):
    """A language code that is not in the registry."""

    def __init__(self, code: str) -> None:
        close = difflib.get_close_matches(code, list(LANGUAGES), n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown language code {code!r}; use one of the registered codes: {', '.join(LANGUAGES)}.{hint}"
        )
        self.code = code


_ENGLISH_MARKERS = ("But wait", "Wait", "Hmm", "Alternatively", "Let me check", "Actually")

LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language(
            "en",
            "English",
            "English",
            "Latin",
            "Please reason step by step in English, and put your final answer within \\boxed{}.",
            _ENGLISH_MARKERS,
            ("the answer is", "final answer", "answer:"),
        ),
        Language(
            "zh",
            "Chinese",
            "中文",
            "Han",
            "请用中文逐步推理，并将最终答案放在 \\boxed{} 中。",
            ("等等", "嗯", "或者", "不过", "让我检查", "实际上"),
            ("答案是", "最终答案", "答案："),
        ),
        Language(
            "ja",
            "Japanese",
            "日本語",
            "Japanese",
            "日本語で段階的に考え、最終的な答えを \\boxed{} の中に書いてください。",
            ("待って", "うーん", "あるいは", "確認すると", "実は"),
            ("答えは", "最終的な答え", "答え："),
        ),
        Language(
            "ko",
            "Korean",
            "한국어",
            "Hangul",
            "한국어로 단계별로 추론하고, 최종 답을 \\boxed{} 안에 넣어 주세요.",
            ("잠깐", "음", "아니면", "확인해 보면", "사실은"),
            ("답은", "최종 답", "정답은"),
        ),
        Language(
            "fr",
            "French",
            "Français",
            "Latin",
            "Raisonne étape par étape en français et mets ta réponse finale dans \\boxed{}.",
            ("Attendez", "Hmm", "Sinon", "Vérifions", "En fait"),
            ("la réponse est", "réponse finale", "réponse :"),
        ),
        Language(
            "de",
            "German",
            "Deutsch",
            "Latin",
            "Denke Schritt für Schritt auf Deutsch nach und schreibe die endgültige Antwort in \\boxed{}.",
            ("Moment", "Warte", "Hmm", "Alternativ", "Prüfen wir", "Eigentlich"),
            ("die antwort ist", "endgültige antwort", "antwort:"),
        ),
        Language(
            "es",
            "Spanish",
            "Español",
            "Latin",
            "Razona paso a paso en español y escribe la respuesta final dentro de \\boxed{}.",
            ("Espera", "Hmm", "Alternativamente", "Comprobemos", "En realidad"),
            ("la respuesta es", "respuesta final", "respuesta:"),
        ),
        Language(
            "ru",
            "Russian",
            "Русский",
            "Cyrillic",
            "Рассуждай шаг за шагом на русском языке и запиши окончательный ответ в \\boxed{}.",
            ("Подождите", "Подожди", "Хм", "Или", "Проверим", "На самом деле"),
            ("ответ", "окончательный ответ", "ответ:"),
        ),
        Language(
            "ar",
            "Arabic",
            "العربية",
            "Arabic",
            "فكّر خطوة بخطوة باللغة العربية، وضع الإجابة النهائية داخل \\boxed{}.",
            ("انتظر", "همم", "بدلاً من ذلك", "لنتحقق", "في الواقع"),
            ("الإجابة هي", "الجواب هو", "الإجابة النهائية"),
        ),
        Language(
            "pt",
            "Portuguese",
            "Português",
            "Latin",
            "Raciocine passo a passo em português e coloque a resposta final dentro de \\boxed{}.",
            ("Espere", "Hmm", "Alternativamente", "Vamos verificar", "Na verdade"),
            ("a resposta é", "resposta final", "resposta:"),
        ),
        Language(
            "it",
            "Italian",
            "Italiano",
            "Latin",
            "Ragiona passo dopo passo in italiano e scrivi la risposta finale dentro \\boxed{}.",
            ("Aspetta", "Hmm", "In alternativa", "Verifichiamo", "In realtà"),
            ("la risposta è", "risposta finale", "risposta:"),
        ),
        Language(
            "vi",
            "Vietnamese",
            "Tiếng Việt",
            "Latin",
            "Hãy suy luận từng bước bằng tiếng Việt và đặt đáp án cuối cùng trong \\boxed{}.",
            ("Khoan đã", "Chờ đã", "Hmm", "Hoặc là", "Kiểm tra lại", "Thực ra"),
            ("đáp án là", "đáp án cuối cùng", "câu trả lời là"),
        ),
    )
}
