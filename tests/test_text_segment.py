import json
from pathlib import Path

import pytest

from l2ray.languages import LANGUAGES
from l2ray.text import math_segments, protected_spans, reflection_boundaries, segment

FIXTURES = Path(__file__).parent / "fixtures"
CASES = json.loads((FIXTURES / "segment_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c["lang"] for c in CASES])
def test_fixture_round_trips_and_splits_only_at_markers_outside_math(case):
    text = case["text"]
    fragments = segment(text)
    assert "".join(fragments) == text
    assert len(fragments) >= 3, "each fixture has several reflection turns"
    markers = LANGUAGES[case["lang"]].reflection_markers + LANGUAGES["en"].reflection_markers
    spans = protected_spans(text)
    for cut in reflection_boundaries(text):
        assert text.startswith(markers, cut) or any(text.startswith(m, cut) for m in _all_markers())
        assert not any(a < cut < b for a, b in spans), f"cut at {cut} is inside math"
    # every math span survives whole inside exactly one fragment
    assert [m for f in fragments for m in math_segments(f)] == math_segments(text)


def test_fixtures_cover_five_languages():
    assert len({c["lang"] for c in CASES}) >= 5


def test_splits_before_markers_that_open_sentences():
    text = "So $x = 2$. Wait, $x$ can be negative.\nHmm, then $x=-2$. Alternatively, square both sides."
    assert segment(text) == [
        "So $x = 2$. ",
        "Wait, $x$ can be negative.\n",
        "Hmm, then $x=-2$. ",
        "Alternatively, square both sides.",
    ]


def test_does_not_split_mid_sentence_inside_words_or_inside_math():
    text = (
        "We keep waiting. Waiting is fine. I said Wait here mid-sentence. "
        "Then $$ \\text{x}. Wait = 3 $$ and \\[ y. Hmm \\] and \\( z. Actually \\) "
        "and \\boxed{1. But wait 2}. ```\nprint(1). Wait\n``` done."
    )
    assert segment(text) == [text]


def test_cjk_markers_split_without_spaces():
    text = "所以 $x=2$。等等，$x$ 也可以是负数。嗯，那么 $x=-2$。"
    assert segment(text) == ["所以 $x=2$。", "等等，$x$ 也可以是负数。", "嗯，那么 $x=-2$。"]
    assert segment("答えは $3$ です。待って、確認します。") == ["答えは $3$ です。", "待って、確認します。"]


def test_custom_markers_and_edge_cases():
    assert segment("") == []
    assert segment("Wait at the start. Only one.") == ["Wait at the start. Only one."]
    assert segment("A. Ok then. Ok now.", markers=["Ok"]) == ["A. ", "Ok then. ", "Ok now."]
    unclosed = "Start $x = 1. Wait, this math never closes"
    assert segment(unclosed) == [unclosed]
    escaped = "It costs \\$5. Wait, \\$6."
    assert segment(escaped) == ["It costs \\$5. ", "Wait, \\$6."]


def _all_markers():
    return [m for lang in LANGUAGES.values() for m in lang.reflection_markers]
