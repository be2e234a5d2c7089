"""The run display: what reaches the terminal, what goes to the run's log, and how lines are told apart."""

from __future__ import annotations

import io
import logging
import os
import sys

import pytest
from rich.console import Console

from l2ray.capture import captured_output, classify
from l2ray.console import RunDisplay, progress

# Lines a real `l2ray run` printed before its output was captured (Ray 2.60, MLflow 3).
NOISE = [
    "2026-12-02 14:43:34,820\tINFO worker.py:2029 -- Started a local Ray instance. View the dashboard at x",
    "(TrainController pid=6955) Requesting resources: {'CPU': 0.5} * 2",
    "(RayTrainWorker pid=7184) Reporting training result 1: TrainingReport(checkpoint=None, metrics={})",
    "(RayTrainWorker pid=7215) ✔️  Dataset train_0357kss2h5ePcnXIHP9WR0_0 execution finished in 0.00 seconds",
    "2026/12/02 14:43:58 INFO mlflow.store.db.utils: Creating initial MLflow database tables...",
    "(PlacementGroupCleaner pid=7100) Traceback (most recent call last):",
    "(PlacementGroupCleaner pid=7100)     raise ConnectionError(",
    "Loading weights:   0%|          | 0/50 [00:00<?, ?it/s]",
    # Expected on every healthy run (l2ray.capture.EXPECTED): in the log, not on the terminal.
    "(TrainController pid=6955) [2026-12-02 14:44:21,082 E 6955 7055] core_worker.cc:2465: Actor with class"
    " name: 'PreemptionWatcher' and ID: '028e93b5' has constructor arguments in the object store and"
    " max_restarts > 0.",
    "2026/12/02 14:44:45 WARNING mlflow.transformers: Unable to find license information for this model.",
    "2026-12-02 14:43:37,439 WARNING __init__.py:28 -- Progress bars disabled. To enable, set `ray.data…`",
]
NOTES = {
    "(PlacementGroupCleaner pid=7100) ConnectionError: Found multiple active Ray instances": (
        "error",
        "ConnectionError: Found multiple active Ray instances (PlacementGroupCleaner)",
    ),
    "(TrainController pid=6955) [2026-12-02 14:44:21,082 E 6955 7055] core_worker.cc:2465: Actor lost": (
        "error",
        "core_worker.cc:2465: Actor lost (TrainController)",
    ),
    "2026/12/02 14:44:45 WARNING mlflow.store: Could not reach the artifact store": (
        "warning",
        "Could not reach the artifact store",
    ),
    "2026-12-02 14:43:37,439 WARNING __init__.py:28 -- Object spilling is slow.": (
        "warning",
        "Object spilling is slow.",
    ),
    "(DatasetManager pid=7332) /x/execution_options.py:436: RayDeprecationWarning: `limit` is deprecated": (
        "warning",
        "RayDeprecationWarning: `limit` is deprecated (DatasetManager)",
    ),
}


@pytest.mark.parametrize("line", NOISE)
def test_ray_chatter_is_not_a_note(line):
    assert classify(line) is None


@pytest.mark.parametrize(("line", "expected"), NOTES.items())
def test_warnings_and_errors_become_one_line_notes_naming_their_process(line, expected):
    assert classify(line) == expected


def test_captured_output_sends_everything_to_the_log_and_each_warning_once(tmp_path, capfd):
    log_file = tmp_path / "logs" / "run.log"
    notes: list[tuple[str, str]] = []
    with captured_output(log_file, lambda level, message: notes.append((level, message))):
        print("\x1b[36m(RayTrainWorker pid=1)\x1b[0m Moving model to device: cpu")
        os.write(2, b"[2026-12-02 14:44:21,082 E 1 2] core_worker.cc:1: lost an actor\n")  # C++, on fd 2
        logging.getLogger("l2ray.train.api").warning("1 trace(s) were cut")
        logging.getLogger("l2ray.train.api").info("step 3")
        sys.stderr.write("Traceback (most recent call last):\n  File x\nValueError: bad row\n")
    out, err = capfd.readouterr()
    assert out == err == ""  # nothing reached the terminal
    log = log_file.read_text()
    for text in ("(RayTrainWorker pid=1) Moving", "lost an actor", "were cut", "step 3", "Traceback"):
        assert text in log
    assert "\x1b[" not in log  # colour codes stay out of the file
    assert sorted(set(notes)) == [  # the logging warning arrives twice (handler, log file): shown once
        ("error", "ValueError: bad row"),
        ("error", "core_worker.cc:1: lost an actor"),
        ("warning", "1 trace(s) were cut"),
    ]


def test_display_prints_each_distinct_note_once_and_a_line_per_stage():
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=100), live=False)
    display.started("train", "abc")
    display.note("warning", "worker 1 slow")
    display.note("warning", "worker 2 slow")  # the same message with another number
    display.finished("train", 12.34, "loss 1.000")
    display.skipped("promote", "def")
    assert list(display.notes.values()) == [("warning", "worker 1 slow")]  # what --json lists
    lines = out.getvalue().splitlines()
    assert lines == [
        "warning worker 1 slow",
        "✓ train           12.3 s  loss 1.000",
        "- promote                 skipped: done before (fingerprint def)",
    ]


def test_a_stage_bar_counts_inside_the_active_display(tmp_path):
    from l2ray import console

    display = RunDisplay(Console(file=io.StringIO(), force_terminal=True, width=100))
    console._active = display
    try:
        display.started("synth", "abc")
        with progress(12, "synthesizing") as bar:
            bar.advance(5, "5 ok · 0 rejected")
        task = display._progress.tasks[0]
        assert (task.total, task.completed, task.fields["note"]) == (12, 5, "5 ok · 0 rejected")
        display.finished("synth", 1.0, "12 traces accepted")
    finally:
        console._active = None


def test_a_polled_bar_shows_what_the_counter_read_last():
    import threading

    from l2ray import console
    from l2ray.console import polled_progress

    display = RunDisplay(Console(file=io.StringIO(), force_terminal=True, width=100))
    console._active = display
    polled = threading.Event()
    reads = iter([(1, "loss 2.0"), (3, "loss 1.5")])

    def read():
        value = next(reads, (3, "loss 1.5"))
        if value[0] == 3:
            polled.set()
        return value

    try:
        display.started("train", "abc")
        with polled_progress(3, "training", read, every_s=0.01):
            assert polled.wait(10)
        task = display._progress.tasks[0]
        assert (task.total, task.completed, task.fields["note"]) == (3, 3, "loss 1.5")
    finally:
        display._stop()
        console._active = None
