"""Helpers shared by the serve tests' fixtures and tests (a module name no other folder uses)."""

from __future__ import annotations

from typing import Any

from trained_student import LANGS

from l2ray.decode.engine import DecodeEngine
from l2ray.decode.types import DecodeRequest, TokenStep
from l2ray.languages import tag_token

API_KEY = "sk-l2ray-test-7f3a9c2e51"
MODEL_NAME = "l2ray-serve-test"


def first_tag(text: str) -> str | None:
    """The language of the first tag in ``text``."""
    positions = {code: text.find(tag_token(code)) for code in LANGS}
    found = {code: pos for code, pos in positions.items() if pos >= 0}
    return min(found, key=found.get) if found else None


def a_stop_string_from(text: str) -> tuple[str, str]:
    """A 3-character stop string from the second half of ``text``, and the text a stop there leaves."""
    candidates = (text[i : i + 3] for i in range(len(text) // 2, len(text) - 2))
    stop = next((c for c in candidates if c.isprintable() and c.strip()), None)
    assert stop, f"no printable stop string in {text!r}"
    return stop, text[: text.index(stop)]


class GeneratorCall:
    """One streaming call of the stand-in handle: the real engine, one step per group."""

    def __init__(self, engine: DecodeEngine, request: DecodeRequest) -> None:
        self.request = request
        self.events = engine.stream([request])  # the last step carries the usage counters
        self.steps = 0
        self.cancelled = False

    def __aiter__(self) -> GeneratorCall:
        return self

    async def __anext__(self) -> list[TokenStep]:
        steps = next(self.events, None)
        if steps is None or steps[0] is None:
            raise StopAsyncIteration
        self.steps += 1
        return [steps[0]]

    def cancel(self) -> None:
        self.cancelled = True
        self.request.cancelled = True  # what the Generator replica does when its call is cancelled


class ReadyMethod:
    """``ready.remote()`` of the stand-in handle: the replica is up."""

    def remote(self) -> Any:
        async def answer() -> dict[str, Any]:
            return {"model": "in-process"}

        return answer()


class InProcessGenerator:
    """Stands in for the Generator deployment handle (``options(stream=True).generate.remote``)."""

    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine
        self.calls: list[GeneratorCall] = []
        self.generate = self
        self.ready = ReadyMethod()

    def options(self, stream: bool) -> InProcessGenerator:
        assert stream
        return self

    def remote(self, request: DecodeRequest) -> GeneratorCall:
        self.calls.append(GeneratorCall(self.engine, request))
        return self.calls[-1]
