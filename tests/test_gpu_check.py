"""The prepared GPU check cannot rot between GPU runs: its ``--smoke`` mode runs every part on tiny
shapes on CPU here, with Ray and vLLM made unimportable (the GPU image has neither)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WITHOUT_RAY_OR_VLLM = (
    "import runpy, sys\n"
    "sys.modules.update(ray=None, vllm=None)  # importing either now fails\n"
    "sys.argv = ['gpu_check.py', '--smoke', '--out', sys.argv[1]]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)


def test_every_part_runs_on_cpu_without_ray_or_vllm(tmp_path):
    out = tmp_path / "gpu_check.json"
    script = WITHOUT_RAY_OR_VLLM.format(script=str(REPO / "bench" / "gpu_check.py"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    parts = {name: figures for name, figures in results.items() if name != "environment"}
    assert set(parts) == {"peak", "fsdp2 tiny", "intervention", "engine"}
    assert not [name for name, figures in parts.items() if "error" in figures], done.stdout[-3000:]
    assert parts["peak"]["tflops"] > 0
    train = parts["fsdp2 tiny"]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1 and train["plan_gib"] > 0
    assert math.isnan(train["peak_memory_gib"])  # no device allocator on CPU: said, not invented
    step = parts["intervention"]
    assert step["core_ms"] > 0 and step["decode_step_ms"] > 0 and step["core_ops"] > 0
    assert step["core_share_of_decode_step"] == step["core_ms"] / step["decode_step_ms"]
    assert parts["engine"]["tokens_per_s_on"] > 0 and parts["engine"]["tokens_per_s_off"] > 0
    assert "| intervention | core_share_of_decode_step |" in done.stdout  # the one table


def test_a_failing_part_is_reported_and_the_others_still_run(tmp_path):
    """A part that breaks (here: its FSDP2 builder, broken on purpose) says why; the rest is measured."""
    out = tmp_path / "gpu_check.json"
    script = WITHOUT_RAY_OR_VLLM.format(script=str(REPO / "bench" / "gpu_check.py"))
    broken = script.replace(
        "import runpy, sys\n",
        "import runpy, sys\nimport l2ray.train.fsdp as f\nf.build_sharded_random = None\n",
    )
    done = subprocess.run(
        [sys.executable, "-c", broken, str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert "TypeError" in results["fsdp2 tiny"]["error"]
    assert results["engine"]["tokens_per_s_on"] > 0 and "error" not in results["intervention"]
