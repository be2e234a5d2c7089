"""`StopStrings`: the answer ends before the first stop string, and no stream ever shows a piece of one."""

from __future__ import annotations

import pytest

from l2ray.decode.detok import StopStrings


def stream(stops: list[str], deltas: list[str]) -> tuple[list[str], bool]:
    """What a client would see, delta by delta (a final flush when no stop string was hit)."""
    matcher = StopStrings(stops)
    shown = [matcher.feed(delta) for delta in deltas]
    if not matcher.hit:
        shown.append(matcher.flush())
    return shown, matcher.hit


@pytest.mark.parametrize(
    "stops, deltas, text",
    [
        (["END"], ["The answer is 4.", " END", " more"], "The answer is 4. "),
        (["END"], ["x E", "N", "D y"], "x "),  # split over three deltas
        (["\n\n"], ["one\n", "\ntwo"], "one"),
        (["b", "abc"], ["xxabc"], "xx"),  # the earliest stop wins, whichever is listed first
        (["stop"], ["stop now"], ""),
    ],
)
def test_text_ends_before_the_first_stop_string(stops, deltas, text):
    shown, hit = stream(stops, deltas)
    assert hit
    assert "".join(shown) == text
    assert not any(stop in "".join(shown) for stop in stops)


def test_a_possible_start_of_a_stop_string_is_held_back_then_released():
    matcher = StopStrings(["END"])
    assert matcher.feed("x E") == "x "  # "E" might begin "END"
    assert matcher.feed("N") == ""
    assert matcher.feed("x") == "ENx"  # it did not
    assert matcher.feed("E") == ""
    assert matcher.flush() == "E" and not matcher.hit


def test_nothing_after_the_stop_string_is_shown():
    matcher = StopStrings(["."])
    assert matcher.feed("a.b") == "a"
    assert matcher.feed("more") == "" and matcher.flush() == ""
