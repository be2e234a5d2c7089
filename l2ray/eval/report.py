"""Write an evaluation's files: ``samples.jsonl``, ``summary.json``, ``report.md`` and PNG plots.

Example:
    >>> paths = write_report(out_dir, summary, records)  # doctest: +SKIP
    >>> sorted(p.name for p in paths)  # doctest: +SKIP
    ['accuracy_vs_tokens.png', 'language_mix.png', 'report.md', 'samples.jsonl', 'summary.json']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
REPORT = "report.md"


def write_report(out_dir: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[Path]:
    """Write all files of one evaluation into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = out_dir / SAMPLES
    with samples.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary_path = out_dir / SUMMARY
    summary_path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    report = out_dir / REPORT
    report.write_text(render_markdown(summary), encoding="utf-8")
    plots = [
        plot_accuracy_vs_tokens(summary["results"], out_dir / "accuracy_vs_tokens.png"),
        plot_language_mix(summary["results"], out_dir / "language_mix.png"),
    ]
    return [samples, summary_path, report, *plots]


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The records of a ``samples.jsonl`` file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render_markdown(summary: dict[str, Any]) -> str:
    """``report.md``: the fingerprint, then one table per benchmark (rows: configurations)."""
    fp = summary["fingerprint"]
    lines = [
        f"# Evaluation `{summary['label']}`",
        "",
        f"- model: `{fp['model']['uri']}`"
        + (f" (version {fp['model']['version']})" if fp["model"]["version"] else ""),
        f"- engine: {fp['engine']['kind']}"
        + (f" at {summary['endpoint']}" if summary.get("endpoint") else ""),
        f"- sampling: {json.dumps(fp['sampling'])}",
        f"- grader: {fp['grader']}; fingerprint `{summary['fingerprint_hash']}`",
        "",
    ]
    for benchmark, configurations in summary["results"].items():
        dataset = next(d for d in fp["datasets"] if d["name"] == benchmark)
        lines += [
            f"## {benchmark}",
            "",
            f"{dataset['problems']} problems from `{dataset['source']}`"
            + (f" ({dataset['subset']})" if dataset["subset"] else "")
            + (f", split {dataset['split']}" if dataset["split"] else "")
            + f", answer type {dataset['answer_type']}.",
            "",
            "| configuration | accuracy | ± se | thinking mean | thinking median | answer mean | truncated "
            "| empty answer | failures | switches/1k | languages |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in configurations.items():
            languages = ", ".join(f"{c} {s:.0%}" for c, s in list(m["language_shares"].items())[:4]) or "—"
            cells = [
                name,
                _pct(m["accuracy"]),
                _pct(m["accuracy_se"]),
                _num(m["thinking_tokens"]["mean"]),
                _num(m["thinking_tokens"]["median"]),
                _num(m["answer_tokens"]["mean"]),
                _pct(m["truncation_rate"]),
                _pct(m["empty_answer_rate"]),
                str(m["failures"]),
                _num(m["switches_per_1k_thinking_tokens"]),
                languages,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        passes = {name: m["pass_at_k"] for name, m in configurations.items() if "pass_at_k" in m}
        if passes:
            lines += ["", "pass@k: " + "; ".join(f"{n}: {json.dumps(p)}" for n, p in passes.items())]
        lines.append("")
    lines += ["Plots: `accuracy_vs_tokens.png`, `language_mix.png`. Per-sample data: `samples.jsonl`.", ""]
    return "\n".join(lines)


def plot_accuracy_vs_tokens(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    """One point per benchmark × configuration: mean thinking tokens (x) against accuracy (y)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for benchmark, configurations in results.items():
        xs = [m["thinking_tokens"]["mean"] or 0.0 for m in configurations.values()]
        ys = [m["accuracy"] for m in configurations.values()]
        errors = [m["accuracy_se"] for m in configurations.values()]
        ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=benchmark)
        for name, x, y in zip(configurations, xs, ys, strict=True):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("accuracy vs thinking tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_language_mix(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    """Stacked bars: the mean language shares of the thinking part, per benchmark × configuration."""
    plt = pyplot()
    bars = [(f"{b}\n{c}", m["language_shares"]) for b, cs in results.items() for c, m in cs.items()]
    codes = sorted({code for _, shares in bars for code in shares})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(bars) + 2), 4.4))
    bottoms = [0.0] * len(bars)
    for code in codes:
        heights = [shares.get(code, 0.0) for _, shares in bars]
        ax.bar([label for label, _ in bars], heights, bottom=bottoms, label=code)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_ylabel("share of thinking (letters)")
    ax.set_ylim(0, 1.05)
    ax.set_title("language mix per configuration")
    if codes:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, "no classifiable text", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


__all__ = ["REPORT", "SAMPLES", "SUMMARY", "read_samples", "render_markdown", "write_report"]
