"""Helpers shared by the serve tests' fixtures and tests (a module name no other folder uses)."""

from __future__ import annotations

from pathlib import Path
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
    """One ``generate`` call of the stand-in link: the real engine, one step per group."""

    def __init__(self, engine: DecodeEngine, request: DecodeRequest) -> None:
        self.request = request
        self.events = engine.stream([request])  # the last step carries the usage counters
        self.steps = 0
        self.finished = False
        self.cancelled = False

    def __aiter__(self) -> GeneratorCall:
        return self

    async def __anext__(self) -> list[TokenStep]:
        steps = next(self.events, None)
        if steps is None or steps[0] is None:
            raise StopAsyncIteration
        self.steps += 1
        self.finished = steps[0].finish_reason is not None
        return [steps[0]]

    async def aclose(self) -> None:
        """Closed before its last step: the row is dropped, as a Generator replica drops it."""
        if not self.finished:
            self.cancelled = True
            self.request.cancelled = True


class InProcessGenerator:
    """Stands in for the controller's model link (`l2ray.serve.links.ModelLink`) over the real engine,
    recording its calls."""

    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine
        self.calls: list[GeneratorCall] = []

    async def ready(self) -> dict[str, Any]:
        return {"model": "in-process"}

    async def info(self) -> Any:
        return self.engine.codec.info("in-process")

    def generate(self, request: DecodeRequest) -> GeneratorCall:
        self.calls.append(GeneratorCall(self.engine, request))
        return self.calls[-1]

    async def check_health(self) -> None:
        """The engine is in this process: alive while the test runs."""


def processes_named(prefix: str) -> list[int]:
    """Processes whose command line starts with ``prefix`` (Ray names a replica
    ``ray::ServeReplica:<app>:<deployment>``; vLLM its engine ``VLLM::EngineCore``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and command.startswith(prefix):
            found.append(int(entry.name))
    return found


def ancestors(pid: int) -> list[int]:
    """The parents of ``pid`` up to init."""
    chain = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        chain.append(pid)
    return chain
