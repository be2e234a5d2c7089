"""The study: from the same k English seeds, train and evaluate every arm through the real stages.

For each k: one synthesis run (the lab teacher through Ray Data, verification and the failures table
as usual) on the first k seeds, and the paraphrase baseline's traces built from its L² rows. For each
k × arm × training seed: `train.api.train` on the arm's mix, then `eval.api.run_eval` on the lab's
evaluation set. Then the decoding sweeps on one L² student, and the pilot (the same problems asked in
each language). Everything lands under ``runs/<name>/lab/``; `l2ray.lab.report` recomputes every
number from the per-sample files.

Arms (the mix kinds each trains on):
    base        no SFT: the pre-trained base as it is
    english     the k English originals
    l2          originals + whole-CoT + code-switched traces (L²)
    whole       originals + whole-CoT traces
    mixed       originals + code-switched traces
    paraphrase  the originals + one English rewording per other L² row (same rows, ~same tokens)

Example:
    >>> summary = run_study(load_lab_config("configs/lab.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from l2ray._schema import format_validation_error
from l2ray.console import LineDisplay, StageDisplay
from l2ray.errors import L2rayError
from l2ray.lab.base import ensure_base
from l2ray.lab.config import LabConfig
from l2ray.lab.data import benchmark_records, paraphrase_rows, seed_records, write_jsonl, write_traces
from l2ray.lab.render import translate_text
from l2ray.lab.tasks import make_problems
from l2ray.recipe import Recipe, recipe_from_dict

ARM_KINDS: dict[str, list[str]] = {
    "english": ["original"],
    "l2": ["original", "whole", "mixed"],
    "whole": ["original", "whole"],
    "mixed": ["original", "mixed"],
    "paraphrase": ["original"],
}


class LabConfigError(L2rayError, ValueError):
    """A lab configuration that cannot be read or validated."""


def load_lab_config(path: str | Path, overrides: list[str] | None = None) -> LabConfig:
    """Read ``configs/lab.yaml`` (plus ``key.sub=value`` overrides) into a `LabConfig`."""
    from pydantic import ValidationError

    from l2ray.recipe import apply_override

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LabConfigError(f"lab config {path}: cannot read it ({exc})") from None
    for item in overrides or []:
        apply_override(raw, item, str(path))
    try:
        return LabConfig.model_validate(raw)
    except ValidationError as exc:
        raise LabConfigError(format_validation_error(exc, f"lab config {path}", LabConfig)) from None


def lab_dir(config: LabConfig) -> Path:
    """``<output_dir>/<name>/lab``, absolute."""
    return (Path(config.output_dir) / config.name / "lab").resolve()


def run_study(config: LabConfig, display: StageDisplay | None = None) -> dict[str, Any]:
    """Run every arm, the sweeps and the pilot; write the report; return the summary.

    ``display`` is told about each step as a stage (``base``, ``synth k=6``, ``l2 k=6 s=0``, …,
    ``sweeps``, ``pilot``), finishing with its key figure; plain lines on stdout by default.
    """
    from l2ray.lab.report import write_study_report

    display = display or LineDisplay()
    started = time.perf_counter()
    out = lab_dir(config)
    base = ensure_base(config.base)
    files = _write_files(config, out)
    runs: list[dict[str, Any]] = []
    if "base" in config.arms:
        work = partial(_evaluate, config, out, files, "base", 0, None, str(base))
        runs.append(_stage(display, "base", work))
    l2_uri: tuple[str, str] | None = None  # the swept student: model URI, its tracking URI
    data: dict[str, Any] = {}  # per k: each arm's training rows and tokens, its traces folder
    for k in config.k:
        traces = _stage(display, f"synth k={k}", partial(_synthesize, config, out, files, base, k))
        data[str(k)] = {
            arm: {**traces["stats"][arm], "traces": str(folder)} for arm, folder in traces["folders"].items()
        }
        for arm in [a for a in config.arms if a != "base"]:
            for seed in config.train_seeds:
                work = partial(_train_and_evaluate, config, out, files, base, arm, k, seed, traces)
                entry = _stage(display, f"{arm} k={k} s={seed}", work)
                runs.append(entry)
                if arm == "l2" and k == (config.sweep_k or max(config.k)) and l2_uri is None:
                    l2_uri = entry["model_uri"], entry["tracking_uri"]
    extra: dict[str, Any] = {"data": data}
    if config.sweeps and l2_uri:
        extra["sweeps"] = _stage(display, "sweeps", partial(_sweeps, config, out, files, base, l2_uri))
    if config.pilot and l2_uri:
        extra["pilot"] = _stage(display, "pilot", partial(_pilot, config, out, files, base, l2_uri))
    summary = write_study_report(out, config, runs, extra, base, time.perf_counter() - started)
    summary["report"] = str(out / "report.md")
    return summary


def arm_recipe(
    config: LabConfig, out: Path, files: dict[str, Path], base: Path, name: str, **parts: Any
) -> Recipe:
    """The recipe of one run: the lab's defaults, ``config.recipe`` over them, ``parts`` over both."""
    raw: dict[str, Any] = {
        "name": name,
        "output_dir": str(out / "runs"),
        "languages": config.languages,
        "seeds": {"source": str(files["seeds"])},
        "teacher": {
            "kind": "python",
            "factory": "l2ray.lab.teacher:LabTeacher",
            "model": config.teacher,
            "use_recorded": False,
            "temperature": 0.0,
        },
        "synth": {"mixed_per_seed": config.mixed_per_seed, "actors": 1, "progress": False},
        "student": {"model": str(base)},
        "train": {"lr": 1e-3, "epochs": 24, "batch_size": 2, "max_seq_len": 1024, "checkpoint_every": 100000},
        "eval": {
            "benchmarks": [{"name": "lab", "source": str(files["eval"]), "answer_type": "integer"}],
            "limit": config.eval_problems,
            "max_tokens": config.max_tokens,
            "concurrency": 64,
            "instruction": False,  # the SFT rows hold the bare question: ask it the same way
        },
    }
    merged = _merge(_merge(raw, config.recipe), parts)
    return recipe_from_dict(merged, origin=f"lab run {name}")


def _write_files(config: LabConfig, out: Path) -> dict[str, Path]:
    eval_problems = make_problems("eval", config.eval_problems, 0)
    return {
        "seeds": write_jsonl(
            out / "data" / "seeds.jsonl", seed_records(make_problems("seeds", max(config.k), 0))
        ),
        "eval": write_jsonl(out / "data" / "eval.jsonl", benchmark_records(eval_problems)),
        "pilot": write_jsonl(out / "data" / "pilot_seeds.jsonl", seed_records(eval_problems)),
    }


def _synthesize(config: LabConfig, out: Path, files: dict[str, Path], base: Path, k: int) -> dict[str, Any]:
    """Synthesis on the first k seeds, the paraphrase baseline's traces from its L² rows, and each
    arm's training rows and tokens (assistant text, the base's tokenizer)."""
    from transformers import AutoTokenizer

    from l2ray.synth.api import synthesize
    from l2ray.train.mix import read_traces, select_mix

    seeds = {"source": str(files["seeds"]), "limit": k}
    recipe = arm_recipe(config, out, files, base, f"{config.name}-k{k}-synth", seeds=seeds)
    result = synthesize(recipe)
    tokenizer = AutoTokenizer.from_pretrained(base)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    def mix_rows(folder: Path, arm: str) -> list:
        mix = recipe.train.mix.model_copy(update={"kinds": ARM_KINDS[arm]})
        return select_mix(read_traces(folder), mix, recipe.languages, 0).rows

    paraphrase = write_traces(
        out / f"k{k}" / "paraphrase", paraphrase_rows(mix_rows(result.traces_dir, "l2"), count)
    )
    folders = {arm: paraphrase if arm == "paraphrase" else result.traces_dir for arm in ARM_KINDS}
    stats = {}
    for arm, folder in folders.items():
        rows = mix_rows(folder, arm)
        stats[arm] = {"rows": len(rows), "tokens": sum(count(r.assistant_text()) for r in rows)}
    (out / f"k{k}").mkdir(parents=True, exist_ok=True)
    (out / f"k{k}" / "synth_summary.json").write_text(
        json.dumps(result.summary, indent=2, ensure_ascii=False)
    )
    summary = result.summary
    figure = f"{summary['rows']} traces ({_kinds(summary['rows_by_kind'])}), {summary['rejected']} rejected"
    return {"folders": folders, "stats": stats, "figure": figure}


def _train_and_evaluate(
    config: LabConfig,
    out: Path,
    files: dict[str, Path],
    base: Path,
    arm: str,
    k: int,
    seed: int,
    traces: dict[str, Any],
) -> dict[str, Any]:
    from l2ray.train.api import train

    name = f"{config.name}-k{k}-{arm}-s{seed}"
    recipe = arm_recipe(config, out, files, base, name, seed=seed, train={"mix": {"kinds": ARM_KINDS[arm]}})
    result = train(recipe, traces_dir=traces["folders"][arm])
    entry = _evaluate(config, out, files, arm, k, seed, result.model_uri, recipe)
    entry["figure"] += f"; {result.rows} rows, {result.steps} steps, loss {result.final_loss:.3f}"
    entry["train_rows"], entry["train_tokens"] = traces["stats"][arm]["rows"], traces["stats"][arm]["tokens"]
    entry["train"] = result.model_dump(
        include={"rows", "steps", "final_loss", "wall_s", "tokens_per_s", "data_fingerprint"}
    )
    entry["train"]["data"] = str(recipe.run_dir / "train" / "data.json")
    return entry


def _evaluate(
    config: LabConfig,
    out: Path,
    files: dict[str, Path],
    arm: str,
    k: int,
    seed: int | None,
    model: str,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    from l2ray.eval.api import run_eval

    recipe = recipe or arm_recipe(config, out, files, Path(model), f"{config.name}-base")
    result = run_eval(recipe, label="eval", model=model)
    off = result.summary["results"]["lab"]["off"]
    thinking = off["thinking_tokens"]["mean"]  # None when no sample produced any
    tokens = "—" if thinking is None else f"{thinking:.0f}"
    return {
        "figure": f"accuracy {off['accuracy']:.3f}, {tokens} thinking tokens",
        "arm": arm,
        "k": k,
        "seed": seed,
        "model_uri": model,
        "tracking_uri": recipe.tracking_uri,
        "samples": str(result.out_dir / "samples.jsonl"),
    }


def _sweeps(
    config: LabConfig, out: Path, files: dict[str, Path], base: Path, student: tuple[str, str]
) -> dict[str, Any]:
    from l2ray.eval.api import run_eval

    model, tracking_uri = student
    configurations = {"off": {}, **{n: c.model_dump() for n, c in config.sweeps.items()}}
    recipe = arm_recipe(
        config,
        out,
        files,
        base,
        f"{config.name}-sweeps",
        eval={"configurations": configurations},
        tracking={"tracking_uri": tracking_uri},
    )
    result = run_eval(recipe, label="sweeps", model=model)
    figure = f"{len(configurations)} decoding configurations on the first L² student"
    return {"model_uri": model, "samples": str(result.out_dir / "samples.jsonl"), "figure": figure}


def _pilot(
    config: LabConfig, out: Path, files: dict[str, Path], base: Path, student: tuple[str, str]
) -> dict[str, Any]:
    from l2ray.eval.api import run_pilot

    model, tracking_uri = student
    recipe = arm_recipe(
        config,
        out,
        files,
        base,
        f"{config.name}-pilot",
        seeds={"source": str(files["pilot"])},
        eval={"pilot_languages": config.languages, "limit": config.pilot_problems},
        tracking={"tracking_uri": tracking_uri},
    )
    result = run_pilot(recipe, translate=translate_questions, model=model)
    return {
        "model_uri": model,
        "samples": str(result.out_dir / "samples.jsonl"),
        "summary": str(result.out_dir / "summary.json"),
        "figure": f"{config.pilot_problems} problems in {', '.join(['en', *config.languages])}",
    }


def translate_questions(questions: list[str], lang: str) -> list[str]:
    """The pilot's translator: lab questions rendered in ``lang`` (what the lab teacher answers)."""
    return [translate_text(q, lang) for q in questions]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, dict by dict."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _stage(display: StageDisplay, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()`` as one stage of ``display``; its result's ``figure`` is the stage's closing figure."""
    display.started(name, "")
    started = time.monotonic()
    try:
        result = work()
    except BaseException as exc:
        display.failed(name, time.monotonic() - started, exc)
        raise
    display.finished(name, time.monotonic() - started, result.pop("figure", ""))
    return result


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


__all__ = [
    "ARM_KINDS",
    "LabConfigError",
    "arm_recipe",
    "lab_dir",
    "load_lab_config",
    "run_study",
    "translate_questions",
]
