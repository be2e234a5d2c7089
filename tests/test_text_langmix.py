import json
from pathlib import Path

from l2ray.text import detect_segment_language, insert_tags, measure_language_mix

FIXTURES = Path(__file__).parent / "fixtures"
TRACES = json.loads((FIXTURES / "langmix_traces.json").read_text(encoding="utf-8"))


def test_fragment_accuracy_on_labelled_mixed_traces_is_at_least_95_percent():
    fragments = [f for trace in TRACES for f in trace["fragments"]]
    assert len({f["lang"] for f in fragments}) >= 6
    wrong = [(f["lang"], detect_segment_language(f["text"]), f["text"]) for f in fragments]
    wrong = [w for w in wrong if w[0] != w[1]]
    accuracy = 1 - len(wrong) / len(fragments)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}; misses: {wrong}"


def test_trace_level_mix_counts_switches_and_languages():
    hits = 0
    for trace in TRACES:
        pairs = [(f["lang"], f["text"] + " ") for f in trace["fragments"]]
        mix = measure_language_mix(insert_tags(pairs))
        expected = {f["lang"] for f in trace["fragments"]}
        assert mix.tag_switches == len(trace["fragments"]) - 1
        assert abs(sum(mix.char_share.values()) - 1) < 1e-3
        hits += set(mix.char_share) == expected
    assert hits >= 0.9 * len(TRACES)


def test_math_and_tiny_fragments_are_ignored_and_tokens_counted():
    assert detect_segment_language("$x = 3$ and $$y^2 = 9$$") is None
    assert detect_segment_language("Ok.") is None
    text = "Let me compute $\\frac{1}{2} + \\frac{1}{3}$ step by step now. 等等，我需要通分。"
    mix = measure_language_mix(text, tokenizer=lambda s: s.split())
    assert mix.dominant == "en"
    assert set(mix.char_share) == {"en", "zh"}
    assert mix.switches == 1
    assert set(mix.token_share) == {"en", "zh"}
    assert measure_language_mix("$1+1=2$").dominant is None
