"""Where the Hugging Face Hub cannot be reached, a recipe that names it ends in one line naming what was
needed and the fix — after one quick probe, with no retry chatter and no traceback — and a plan never
hides a seed error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER = str(REPO / "configs" / "paper" / "s1k-100-l2.yaml")


def offline_l2ray(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``l2ray ARGS`` with the hub at a closed local port (refused at once), an empty HF cache, and no
    offline mode set: what an air-gapped machine looks like."""
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"}}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), COLUMNS="400")
    command = [sys.executable, "-m", "l2ray.cli", *args]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_synth_plan_on_a_hub_dataset_ends_in_one_line_naming_it_and_the_fix(tmp_path):
    done = offline_l2ray(tmp_path, "synth", "--plan", "--config", PAPER, "--set", f"output_dir={tmp_path}")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    [line] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "seeds.source 'simplescaling/s1K'" in line and "cannot be reached" in line
    assert "save_to_disk" in line and "HF_HUB_OFFLINE=1" in line
    assert "Traceback" not in output and "Retry" not in output


def test_a_memory_plan_without_the_hub_says_it_used_the_shape_table(tmp_path):
    done = offline_l2ray(tmp_path, "train", "plan", "--config", PAPER, "--set", f"output_dir={tmp_path}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "shape: l2ray's Qwen2.5-32B table (no config.json of Qwen/Qwen2.5-32B-Instruct reachable" in output
    assert "Retry" not in output and "Name or service" not in output


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_plan_never_hides_a_seed_error(tmp_path, on_error):
    """The s1K field map cannot read l2ray's bundled rows: the plan stops naming the row and the field,
    or (skip) says how many rows it skipped and why — never "0 of 0 tasks" as if all were well."""
    sets = [
        "--set",
        "seeds.source=bundled",
        "--set",
        f"seeds.on_error={on_error}",
        "--set",
        f"output_dir={tmp_path}",
    ]
    done = offline_l2ray(tmp_path, "synth", "--plan", "--config", PAPER, *sets)
    output = " ".join((done.stdout + done.stderr).split())
    missing = "row 1, field 'thinking_trajectories': missing"
    if on_error == "raise":
        assert done.returncode == 2 and missing in output, output
    else:
        assert done.returncode == 0 and "10 seed row(s) skipped (seeds.on_error: skip), first:" in output
        assert missing in output
