"""The study's report: every number recomputed from the per-sample files the evaluations wrote.

`recount` reads a ``samples.jsonl`` and returns accuracy, thinking tokens, characters, reasoning
steps (non-empty thinking lines: one sentence a line in lab text) and the language shares of the
thinking, per configuration. `write_study_report` aggregates the runs per arm and k (mean ± standard
error over training seeds) and writes ``summary.json``, ``report.md`` and the plots.

Example:
    >>> mean_stderr([0.5, 0.7, 0.6])
    (0.6, 0.0577)
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from l2ray.clock import utc_iso
from l2ray.lab.config import LabConfig
from l2ray.thinking import split_thinking


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def recount(path: str | Path, key: str = "configuration") -> dict[str, dict[str, Any]]:
    """Per ``key`` value (configuration, or language in a pilot): the metrics of its samples."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_samples(path):
        groups[str(sample[key])].append(sample)
    return {name: sample_metrics(samples) for name, samples in groups.items()}


def sample_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, mean thinking tokens / characters / steps, truncation and language shares."""
    answered = [s for s in samples if not s["failed"]]
    thinking = [split_thinking(s["response"] or "")[0] for s in answered]
    shares: dict[str, float] = defaultdict(float)
    for s in answered:
        for code, share in s["language_mix"].items():
            shares[code] += share / max(len(answered), 1)
    return {
        "samples": len(samples),
        "accuracy": round(sum(bool(s["correct"]) for s in samples) / max(len(samples), 1), 4),
        "thinking_tokens": _mean([s["thinking_tokens"] for s in answered]),
        "answer_tokens": _mean([s["answer_tokens"] for s in answered]),
        "thinking_chars": _mean([len(t) for t in thinking]),
        "reasoning_steps": _mean([sum(1 for line in t.splitlines() if line.strip()) for t in thinking]),
        "truncation_rate": round(sum(bool(s["truncated"]) for s in answered) / max(len(answered), 1), 4),
        "closed_thinking_rate": round(
            sum(bool(s["closed_thinking"]) for s in answered) / max(len(answered), 1), 4
        ),
        "language_shares": {c: round(v, 4) for c, v in sorted(shares.items(), key=lambda kv: -kv[1])},
    }


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return round(mean, 4), round(stderr, 4)


def aggregate_arms(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, k): mean ± stderr over seeds of accuracy and thinking tokens."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["arm"], run["k"])].append(run)
    rows = []
    for (arm, k), members in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        accuracy = mean_stderr([m["metrics"]["accuracy"] for m in members])
        tokens = mean_stderr([m["metrics"]["thinking_tokens"] or 0.0 for m in members])
        rows.append(
            {
                "arm": arm,
                "k": k,
                "seeds": len(members),
                "accuracy": accuracy[0],
                "accuracy_stderr": accuracy[1],
                "thinking_tokens": tokens[0],
                "thinking_tokens_stderr": tokens[1],
                "train_rows": members[0].get("train_rows"),
                "train_tokens": members[0].get("train_tokens"),
            }
        )
    return rows


def write_study_report(
    out: Path, config: LabConfig, runs: list[dict[str, Any]], extra: dict[str, Any], base: Path, wall_s: float
) -> dict[str, Any]:
    """Recount every run, aggregate, and write ``summary.json``, ``report.md`` and the PNGs."""
    for run in runs:
        run["metrics"] = recount(run["samples"])["off"]
    summary: dict[str, Any] = {
        "created": utc_iso(),
        "config": config.model_dump(),
        "base": json.loads((base / "l2ray_lab_base.json").read_text()),
        "runs": runs,
        "arms": aggregate_arms(runs),
        "data": extra.get("data", {}),
        "wall_s": round(wall_s, 1),
    }
    if "sweeps" in extra:
        summary["sweeps"] = {**extra["sweeps"], "configurations": recount(extra["sweeps"]["samples"])}
    if "pilot" in extra:
        pilot = extra["pilot"]
        compression = json.loads(Path(pilot["summary"]).read_text()).get("compression", {})
        per_language = recount(pilot["samples"], key="language")
        for lang, metrics in per_language.items():
            metrics["question_tokens_per_char"] = compression.get(lang, {}).get("tokens_per_char")
            chars = metrics["thinking_chars"]
            metrics["thinking_tokens_per_char"] = (
                round(metrics["thinking_tokens"] / chars, 4) if chars else None
            )
        summary["pilot"] = {**pilot, "languages": per_language}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(render_markdown(summary), encoding="utf-8")
    write_plots(out, summary)
    return summary


def render_markdown(summary: dict[str, Any]) -> str:
    """The report: arms, sweeps, pilot (tables), then where the numbers come from."""
    lines = [
        "# L² lab report",
        "",
        f"Created {summary['created']}; wall time {summary['wall_s']:.0f} s. Base student: "
        f"{summary['base']['parameters']:,} parameters, {summary['base']['steps']} pre-training steps "
        f"(final loss {summary['base']['final_loss']}). Every number below is recounted from the "
        "per-sample files listed in `summary.json`.",
        "",
        "## Arms (greedy, no intervention; mean ± stderr over training seeds)",
        "",
        "| k | arm | seeds | train rows | train tokens | accuracy | thinking tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["arms"]:
        k = "—" if row["arm"] == "base" else row["k"]  # the base is the same model for every k
        lines.append(
            f"| {k} | {row['arm']} | {row['seeds']} | {row['train_rows'] or '—'} | "
            f"{row['train_tokens'] or '—'} | {row['accuracy']:.3f} ± {row['accuracy_stderr']:.3f} | "
            f"{row['thinking_tokens']:.1f} ± {row['thinking_tokens_stderr']:.1f} |"
        )
    if summary.get("data"):
        lines += ["", "## Training data (the assistant text's tokens, by the base's tokenizer)", ""]
        lines += ["| k | arm | rows | tokens |", "|---|---|---|---|"]
        for k, arms in summary["data"].items():
            lines += [f"| {k} | {arm} | {d['rows']} | {d['tokens']} |" for arm, d in arms.items()]
    if "sweeps" in summary:
        lines += ["", f"## Decoding sweeps on {summary['sweeps']['model_uri']}", ""]
        lines += _metrics_table("configuration", summary["sweeps"]["configurations"])
    if "pilot" in summary:
        lines += ["", f"## Pilot on {summary['pilot']['model_uri']} (the same problems in each language)", ""]
        lines += _metrics_table("language", summary["pilot"]["languages"], per_char=True)
    lines += ["", "Plots: accuracy_vs_tokens.png, sweeps.png, pilot.png.", ""]
    return "\n".join(lines)


def lab_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The study's tables for a terminal — ``(title, columns, rows)`` of text: the arms, the decoding
    sweeps, the pilot (each present when the study ran it)."""
    arms = [
        [
            "—" if r["arm"] == "base" else str(r["k"]),
            r["arm"],
            str(r["seeds"]),
            str(r["train_rows"] or "—"),
            str(r["train_tokens"] or "—"),
            f"{r['accuracy']:.3f} ± {r['accuracy_stderr']:.3f}",
            f"{r['thinking_tokens']:.0f} ± {r['thinking_tokens_stderr']:.0f}",
        ]
        for r in summary["arms"]
    ]
    tables = [("arms (mean ± stderr over training seeds)", [*ARM_COLUMNS], arms)]
    for name, key in (("sweeps", "configurations"), ("pilot", "languages")):
        if name in summary:
            groups = summary[name][key]
            rows = [[label, *_metric_cells(m, per_char=name == "pilot")] for label, m in groups.items()]
            extra = ["tok/char q"] if name == "pilot" else []
            tables.append((TABLE_TITLES[name], [key[:-1], *METRIC_COLUMNS, *extra], rows))
    return tables


ARM_COLUMNS = ("k", "arm", "seeds", "rows", "tokens", "accuracy", "thinking tokens")
METRIC_COLUMNS = ("accuracy", "thinking tok", "answer tok", "steps", "top languages of thinking")
TABLE_TITLES = {
    "sweeps": "decoding sweeps on the L² student",
    "pilot": "pilot: the same problems asked in each language",
}


def _metric_cells(m: dict[str, Any], per_char: bool) -> list[str]:
    top = ", ".join(f"{c} {v:.2f}" for c, v in list(m["language_shares"].items())[:3])
    steps = f"{m['reasoning_steps'] or 0:.1f}"
    cells = [f"{m['accuracy']:.3f}", f"{m['thinking_tokens'] or 0:.0f}", f"{m['answer_tokens'] or 0:.0f}"]
    cells += [steps, top]
    if not per_char:
        return cells
    per_char_q = m["question_tokens_per_char"]
    return [*cells, "—" if per_char_q is None else f"{per_char_q:.3f}"]


def write_plots(out: Path, summary: dict[str, Any]) -> list[Path]:
    """Accuracy vs thinking tokens per arm, the sweep curve, the pilot bars."""
    from l2ray.eval.report import pyplot

    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in summary["arms"]:
        ax.errorbar(row["thinking_tokens"], row["accuracy"], yerr=row["accuracy_stderr"], fmt="o", capsize=3)
        label = row["arm"] if row["arm"] == "base" else f"{row['arm']} k={row['k']}"
        ax.annotate(label, (row["thinking_tokens"], row["accuracy"]), fontsize=7)
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("accuracy")
    paths.append(_save(fig, out / "accuracy_vs_tokens.png", plt))
    for name, key in (("sweeps", "configurations"), ("pilot", "languages")):
        if name not in summary:
            continue
        groups = summary[name][key]
        fig, ax = plt.subplots(figsize=(7, 4))
        if name == "sweeps":
            for label, m in groups.items():
                ax.scatter(m["thinking_tokens"] or 0, m["accuracy"])
                ax.annotate(label, (m["thinking_tokens"] or 0, m["accuracy"]), fontsize=7)
            ax.set_xlabel("mean thinking tokens")
            ax.set_ylabel("accuracy")
        else:
            labels = list(groups)
            ax.bar(labels, [groups[c]["accuracy"] for c in labels])
            ax.set_ylabel("accuracy")
            twin = ax.twinx()
            twin.plot(labels, [groups[c]["thinking_tokens"] or 0 for c in labels], "k.-")
            twin.set_ylabel("mean thinking tokens")
        paths.append(_save(fig, out / f"{name}.png", plt))
    return paths


def _metrics_table(key: str, groups: dict[str, dict[str, Any]], per_char: bool = False) -> list[str]:
    extra = " tokens/char (thinking) | tokens/char (question) |" if per_char else ""
    lines = [
        f"| {key} | accuracy | thinking tokens | thinking chars | steps | truncated | top languages |{extra}",
        "|---|---|---|---|---|---|---|" + ("---|---|" if per_char else ""),
    ]
    for name, m in groups.items():
        top = ", ".join(f"{c} {v:.2f}" for c, v in list(m["language_shares"].items())[:3])
        row = (
            f"| {name} | {m['accuracy']:.3f} | {m['thinking_tokens'] or 0:.1f} | "
            f"{m['thinking_chars'] or 0:.0f} | {m['reasoning_steps'] or 0:.1f} | "
            f"{m['truncation_rate']:.2f} | {top} |"
        )
        if per_char:
            row += f" {m['thinking_tokens_per_char']} | {m['question_tokens_per_char']} |"
        lines.append(row)
    return lines


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


__all__ = [
    "aggregate_arms",
    "lab_tables",
    "mean_stderr",
    "read_samples",
    "recount",
    "render_markdown",
    "sample_metrics",
    "write_study_report",
]
