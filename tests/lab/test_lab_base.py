"""The base student at tiny size: `l2ray lab --base-only` builds it into the cache by fingerprint,
deterministically, in the thinking-free raw format; a bad lab config is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from l2ray.cli import app
from l2ray.lab.base import BUILD_INFO, base_fingerprint, build_base, pretraining_documents
from l2ray.lab.config import BaseStudentConfig
from l2ray.languages import TAG_OPEN
from l2ray.thinking import THINK_START

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "base.steps=3", "--set", "base.documents=24"]


def test_the_cli_builds_the_base_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("L2RAY_CACHE", str(tmp_path))
    first = CliRunner().invoke(app, ["lab", "--config", str(REPO / "configs/lab.yaml"), "--base-only", *TINY])
    assert first.exit_code == 0, first.output
    config = BaseStudentConfig(steps=3, documents=24)
    folder = tmp_path / "lab" / f"base-{base_fingerprint(config)}"
    assert str(folder) in first.output.replace("\n", "")
    info = json.loads((folder / BUILD_INFO).read_text())
    assert info["steps"] == 3 and info["documents"] == 24 and info["parameters"] > 0
    built = (folder / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["lab", "--config", str(REPO / "configs/lab.yaml"), "--base-only", *TINY])
    assert again.exit_code == 0 and (folder / "model.safetensors").stat().st_mtime_ns == built


def test_pretraining_is_deterministic_and_never_shows_the_thinking_format(tmp_path):
    config = BaseStudentConfig(steps=2, documents=12)
    documents = pretraining_documents(config)
    assert not any(THINK_START in d or TAG_OPEN in d or "<|im_start|>" in d for d in documents)
    assert {d.splitlines()[0][-1] for d in documents} >= {".", "。"}  # several languages in turn
    first = build_base(tmp_path / "a", config)
    second = build_base(tmp_path / "b", config)
    assert first["final_loss"] == second["final_loss"] and first["first_loss"] > 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


def test_a_bad_lab_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "lab.yaml"
    bad.write_text("k: [6]\narmz: [base]\n")
    result = CliRunner().invoke(app, ["lab", "--config", str(bad)])
    assert result.exit_code == 2
    assert "armz: unknown field. Did you mean 'arms'?" in result.output


def test_the_shipped_lab_configs_and_every_arm_recipe_validate(tmp_path):
    from l2ray.lab.study import ARM_KINDS, arm_recipe, load_lab_config

    files = {name: tmp_path / f"{name}.jsonl" for name in ("seeds", "eval", "pilot")}
    for name in ("lab.yaml", "lab-short.yaml"):
        config = load_lab_config(REPO / "configs" / name)
        assert len(config.k) >= 1 and set(config.arms) <= {"base", *ARM_KINDS}
        for arm in config.arms:
            kinds = {"mix": {"kinds": ARM_KINDS.get(arm, ["original"])}}
            recipe = arm_recipe(config, tmp_path, files, tmp_path / "base", f"x-{arm}", train=kinds)
            assert recipe.teacher.kind == "python" and recipe.student.model == str(tmp_path / "base")
    full = load_lab_config(REPO / "configs" / "lab.yaml")
    assert len(full.k) >= 2 and len(full.train_seeds) >= 3 and full.eval_problems >= 100


def test_the_shipped_base_and_lab_files_are_what_the_code_makes_now():
    """Templates or the base config changed without rebuilding what ships: rebuild with
    `l2ray lab --base-only --out l2ray/data/lab_base` and `l2ray.lab.data.write_bundled`."""
    from l2ray.lab.base import SHIPPED, ensure_base, shipped_fingerprint
    from l2ray.lab.data import bundled_records
    from l2ray.student.resolve import resolve_student

    assert shipped_fingerprint() == base_fingerprint(BaseStudentConfig())
    assert ensure_base(BaseStudentConfig()) == SHIPPED == Path(resolve_student("builtin:lab"))
    info = json.loads((SHIPPED / BUILD_INFO).read_text())
    assert info["steps"] == BaseStudentConfig().steps and info["final_loss"] < info["first_loss"]
    for name, records in bundled_records().items():
        shipped = (REPO / "l2ray" / "data" / name).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in shipped] == records, name


def test_out_replaces_a_base_of_another_fingerprint_and_refuses_a_foreign_folder_before_building(tmp_path):
    from l2ray.lab.base import LabBaseError, ensure_base

    out = tmp_path / "ship"
    old, new = BaseStudentConfig(steps=2, documents=12), BaseStudentConfig(steps=3, documents=12)
    assert ensure_base(old, out=out) == out.resolve()
    assert ensure_base(new, out=out) == out.resolve()  # the documented rebuild of what ships
    assert json.loads((out / BUILD_INFO).read_text())["fingerprint"] == base_fingerprint(new)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(LabBaseError, match=rf"--out .*notes.*{BUILD_INFO}"):
        ensure_base(new, out=foreign)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"]
