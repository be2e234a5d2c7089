"""What a person sees while a run works: a line per stage, one progress bar, each warning once.

`RunDisplay` draws the run on a rich console: while a stage runs, one live line (spinner, the stage's
bar with its counts and ETA when the stage reports one through `progress`, elapsed time); when it
ends, one permanent line with its key figure. `run_display` puts everything else the process writes
into the run's log file (`l2ray.capture.captured_output`) and prints each warning or error line the
capture hands it once. `LineDisplay` is the plain form (Ray jobs, logs, tests): one line per stage event.

Example:
    >>> lines = []
    >>> display = LineDisplay(lines.append)
    >>> display.started("train", "309c6b79")
    >>> display.finished("train", 60.2, "loss 8.127 · 3 steps")
    >>> lines
    ['[train] running (fingerprint 309c6b79)', '[train] done in 60.2 s: loss 8.127 · 3 steps']
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from l2ray.capture import captured_output

WIDTH = 100
"""The terminal width the closing summary is laid out for."""


class StageDisplay(Protocol):
    """What `l2ray.pipeline.run_pipeline` tells about its stages."""

    def started(self, stage: str, fingerprint: str) -> None: ...
    def skipped(self, stage: str, fingerprint: str) -> None: ...
    def finished(self, stage: str, wall_s: float, figure: str) -> None: ...
    def failed(self, stage: str, wall_s: float, error: BaseException) -> None: ...


class LineDisplay:
    """One plain line per stage event, handed to ``write`` (``print`` by default)."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write

    def started(self, stage: str, fingerprint: str) -> None:
        self.write(f"[{stage}] running" + (f" (fingerprint {fingerprint})" if fingerprint else ""))

    def skipped(self, stage: str, fingerprint: str) -> None:
        self.write(f"[{stage}] skipped: done before with the same fingerprint {fingerprint}")

    def finished(self, stage: str, wall_s: float, figure: str) -> None:
        self.write(f"[{stage}] done in {wall_s:.1f} s" + (f": {figure}" if figure else ""))

    def failed(self, stage: str, wall_s: float, error: BaseException) -> None:
        self.write(f"[{stage}] failed after {wall_s:.1f} s: {type(error).__name__}")


class ProgressBar:
    """One stage's counted work (rows, steps, samples); `advance` as parts finish."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, done: int, note: str = "") -> None:
        """Count ``done`` more parts; ``note`` (e.g. ``"11 ok · 1 rejected"``) replaces the last one."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=done, note=note)

    def set(self, done: int, note: str = "") -> None:
        """``done`` parts in all so far (what a poll of someone else's counter reads)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, note=note)


class RunDisplay:
    """The rich display of one run (see the module doc); ``live=False`` prints the permanent lines only."""

    def __init__(self, console: Console, live: bool = True, stage_width: int = 13) -> None:
        self.console = console
        self.live = live and console.is_terminal
        self.stage_width = stage_width  # the stage-name column: 13 fits a run's stages
        self.notes: dict[str, tuple[str, str]] = {}  # (level, message) by message with ids blanked
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._lock = threading.Lock()

    def started(self, stage: str, fingerprint: str) -> None:
        if not self.live:
            return
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(f"{stage:<{self.stage_width}}"),
            BarColumn(bar_width=30),
            _Count(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            _Remaining(),
            console=self.console,
            transient=True,
            redirect_stdout=False,  # captured_output owns the streams; a proxy would print Ray's logs here
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(stage, total=None, note="")
        self._progress.start()

    def skipped(self, stage: str, fingerprint: str) -> None:
        self._line("[dim]-[/]", stage, "", f"[dim]skipped: done before (fingerprint {fingerprint})[/]")

    def finished(self, stage: str, wall_s: float, figure: str) -> None:
        self._stop()
        room = WIDTH - len(f"✓ {stage:<{self.stage_width}} {'':>8}  ")  # one line: cut, never wrapped
        self._line("[green]✓[/]", stage, f"{wall_s:.1f} s", escape(clip(figure, room)))

    def failed(self, stage: str, wall_s: float, error: BaseException) -> None:
        self._stop()
        self._line("[red]✗[/]", stage, f"{wall_s:.1f} s", f"[red]failed: {type(error).__name__}[/]")

    def bar(self, total: int) -> ProgressBar:
        """The running stage's bar, now counting to ``total``."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, completed=0)
        return ProgressBar(self._progress, self._task)

    def note(self, level: str, message: str) -> None:
        """Print a warning or error line once per distinct message (the log watcher calls it, a thread)."""
        key = re.sub(r"[0-9a-f]{6,}|\d+", "#", message)  # the same message about another actor, pid, id
        with self._lock:
            if key in self.notes:
                return
            self.notes[key] = (level, message)
        colour = "red" if level == "error" else "yellow"
        self.console.print(
            f"[{colour}]{level}[/] {escape(clip(message, WIDTH - len(level) - 1))}", highlight=False
        )

    def _line(self, mark: str, stage: str, wall: str, figure: str) -> None:
        self.console.print(f"{mark} {stage:<{self.stage_width}} {wall:>8}  {figure}", highlight=False)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._task = None


_active: RunDisplay | None = None


@contextmanager
def progress(total: int, label: str, enabled: bool = True) -> Iterator[ProgressBar]:
    """A bar for ``total`` parts of work: inside a run's display when one is active, else its own
    rich bar labelled ``label`` (nothing when not ``enabled``). What a stage calls for rows/steps/samples."""
    if _active is not None:
        yield _active.bar(total)
        return
    if not enabled:
        yield ProgressBar(None, None)
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        _Count(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        _Remaining(),
    )
    with bar:
        yield ProgressBar(bar, bar.add_task(label, total=total, note=""))


@contextmanager
def polled_progress(
    total: int, label: str, read: Callable[[], tuple[int, str]], every_s: float = 2.0
) -> Iterator[ProgressBar]:
    """`progress` for work counted elsewhere (Ray Train workers logging steps to MLflow): a thread
    calls ``read() -> (done, note)`` every ``every_s`` seconds while the block runs."""
    stopped = threading.Event()
    with progress(total, label) as bar:

        def poll() -> None:
            while not stopped.wait(every_s):
                try:
                    bar.set(*read())
                except Exception as exc:  # a failed poll (a busy store) only skips one update
                    logging.getLogger(__name__).debug("progress poll failed: %s", exc)

        thread = threading.Thread(target=poll, name=f"l2ray-progress-{label}", daemon=True)
        thread.start()
        try:
            yield bar
        finally:
            stopped.set()
            thread.join()


@contextmanager
def run_display(
    log_file: Path, *, verbose: bool = False, stderr: bool = False, stage_width: int = 13
) -> Iterator[RunDisplay]:
    """The display of one run. Unless ``verbose``, everything else written goes to ``log_file`` and
    warnings and errors reach the display once each. ``stderr`` draws on stderr (stdout keeps ``--json``);
    ``stage_width`` is the stage-name column's width."""
    global _active
    stream = sys.stderr if stderr else sys.stdout
    terminal = _terminal(stream)
    width = None if terminal.isatty() else WIDTH  # a file or a pipe gets the 100 columns laid out for
    console = Console(file=terminal, highlight=False, width=width)
    display = RunDisplay(console, live=not verbose, stage_width=stage_width)
    _active = display
    try:
        if verbose:
            yield display
        else:
            with captured_output(log_file, display.note):
                yield display
    finally:
        display._stop()
        _active = None
        if terminal is not stream:
            terminal.close()


def clip(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` characters (``…`` where it was cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Count(ProgressColumn):
    """``7/12`` once a stage has said how much work it has; nothing before."""

    def render(self, task: Task) -> Text:
        return Text("" if task.total is None else f"{task.completed:.0f}/{task.total:.0f}")


class _Remaining(TimeRemainingColumn):
    """The ETA once there is a total to count to."""

    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else Text.assemble("ETA ", super().render(task))


def _terminal(stream: TextIO) -> TextIO:
    """A stream to the terminal that outlives the fd redirection: a copy of ``stream``'s descriptor,
    or ``stream`` itself when it has none (a test runner's capture)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream
    stream.flush()
    return open(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


__all__ = [
    "WIDTH",
    "LineDisplay",
    "ProgressBar",
    "RunDisplay",
    "StageDisplay",
    "clip",
    "polled_progress",
    "progress",
    "run_display",
]
