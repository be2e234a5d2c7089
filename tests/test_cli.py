import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from l2ray.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_seeds_command_lists_bundled_seeds():
    result = runner.invoke(app, ["seeds", "--config", str(REPO / "configs/demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "0 failed" in result.output


def test_text_segment_and_langmix_json(tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text(
        "So $x=2$ is the value. Wait, check it against the equation. 等等，我再算一遍 $x$ 的值。"
    )
    result = runner.invoke(app, ["text", "segment", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["t.txt"]) == 3
    result = runner.invoke(app, ["text", "langmix", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["t.txt"]["char_share"]) == {"en", "zh"}


def test_bad_recipe_exits_2_with_a_one_line_reason(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntrain:\n  lr: fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "l2ray.cli", "seeds", "--config", str(recipe)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "train.lr: got 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr
