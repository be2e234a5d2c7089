"""The engine bench's CPU accounting: real processes, real ``/proc``, each counted in its group."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Burn half a second of CPU, say so, then wait for stdin to close: the meter reads live processes.
BURN = (
    "import sys, time\n"
    "end = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\n"
    "print('burnt', flush=True)\n"
    "sys.stdin.read()\n"
)
# A parent holding the bare server's marker starts a worker-named child (sharing its pipes).
BARE = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN!r}, 'VLLM::Worker'])\n"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_cpu_meter_counts_each_process_in_its_group_and_tells_the_bare_server_by_ancestry(monkeypatch):
    bench = _serve_engine(monkeypatch)
    commands = {
        "bare vLLM worker": [BARE, "vllm.entrypoints.openai.api_server"],
        "vLLM worker": [BURN, "VLLM::Worker"],
        "ingress": [BURN, "ray::ServeReplica:app:Ingress"],
    }
    processes = []
    try:
        with bench.CpuMeter() as cpu:
            for args in commands.values():
                pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
                processes.append(subprocess.Popen([sys.executable, "-c", *args], **pipes))
            assert all(p.stdout.readline().strip() == "burnt" for p in processes)
    finally:
        for process in processes:
            process.communicate(timeout=60)
    assert all(cpu.shares.get(group, 0) > 0 for group in commands), cpu.shares
    # The worker child is named by what it is, under its parent's ownership, not by the parent's name.
    assert cpu.shares.get("bare API server", 0) < cpu.shares["bare vLLM worker"]


def _serve_engine(monkeypatch):
    """bench/serve_engine.py as a module, its environment defaults kept out of this process."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("serve_engine", REPO / "bench" / "serve_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
