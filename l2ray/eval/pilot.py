"""`l2ray pilot`: the paper's motivating experiment — the same problems asked in each language.

The seed questions (``recipe.seeds``, the bundled set by default) are translated into every pilot
language by the translator the caller passes to `l2ray.eval.api.run_pilot` (the CLI and the pipeline
pass synthesis's, with its response cache; offline the recorded teacher content answers), asked with
that language's request to reason in it, and scored like `l2ray eval` (one "configuration" per
language, no intervention). Beside accuracy and tokens per language, the report gives the
tokenizer's compression per language — tokens per character of the same questions, and tokens
relative to English — so that "fewer tokens" can be told apart from a tokenizer that simply packs a
language more densely.

Output: ``<run_dir>/eval/<label>/`` (default label ``pilot``) with the files of `l2ray eval` plus
``pilot.png`` and a compression table in ``summary.json`` and ``report.md``. The MLflow run is
tagged ``l2ray.stage=pilot`` and is not attached to the model version: promotion reads the version's
`l2ray eval` only, which a pilot of the same version must not replace.

Example:
    >>> tokenizer_compression(tokenizer_path, {"en": ["Two plus two?"], "zh": ["二加二？"]})  # doctest: +SKIP
    {'en': {'tokens': 4, 'chars': 13, ...}, 'zh': {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2ray.data.seeds import load_seeds
from l2ray.eval.benchmarks import BenchmarkData, Problem
from l2ray.eval.pool import counting_tokenizer
from l2ray.eval.report import REPORT, pyplot, write_report
from l2ray.hashing import stable_id
from l2ray.recipe import Recipe

PILOT_BENCHMARK = "pilot"


def pilot_dataset(recipe: Recipe, problems: list[Problem], questions: dict[str, list[str]]) -> BenchmarkData:
    """The pilot's problems as one benchmark; its content hash covers every language's questions."""
    return BenchmarkData(
        PILOT_BENCHMARK,
        problems,
        f"seeds:{recipe.seeds.source}",
        None,
        None,
        None,
        "math",
        stable_id(*(q for texts in questions.values() for q in texts)),
    )


def write_pilot_report(
    recipe: Recipe,
    model_uri: str,
    out_dir: Path,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    questions: dict[str, list[str]],
) -> None:
    """Add the per-language view to ``summary`` and write the files of `l2ray eval` plus the pilot's
    own table (appended to ``report.md``) and ``pilot.png``."""
    compression = tokenizer_compression(_tokenizer_path(recipe, model_uri), questions)
    summary["languages"] = list(questions)
    summary["compression"] = compression
    summary["questions"] = questions
    summary["per_language"] = per_language(summary["results"][PILOT_BENCHMARK], compression)
    write_report(out_dir, summary, records)
    with (out_dir / REPORT).open("a", encoding="utf-8") as fh:
        fh.write(render_pilot_markdown(summary["per_language"]))
    plot_pilot(summary["per_language"], out_dir / "pilot.png")


def pilot_problems(recipe: Recipe) -> list[Problem]:
    """The seed questions with their answers (first ``eval.limit``)."""
    seeds = load_seeds(recipe.seeds).rows
    if recipe.eval.limit is not None:
        seeds = seeds[: recipe.eval.limit]
    return [Problem(PILOT_BENCHMARK, s.id, s.question, s.answer, "math") for s in seeds]


def tokenizer_compression(
    tokenizer_path: str, questions: dict[str, list[str]]
) -> dict[str, dict[str, float]]:
    """Per language: tokens per character of its questions, and its tokens relative to English's.

    ``relative_to_en`` < 1 means the tokenizer spends fewer tokens on the same content in that
    language; a language that "thinks in fewer tokens" only by that factor gains nothing real.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    totals = {}
    for lang, texts in questions.items():
        tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        chars = sum(len(t) for t in texts)
        totals[lang] = (tokens, chars)
    en_tokens = totals["en"][0]
    return {
        lang: {
            "tokens": tokens,
            "chars": chars,
            "tokens_per_char": round(tokens / chars, 6) if chars else 0.0,
            "relative_to_en": round(tokens / en_tokens, 6) if en_tokens else 0.0,
        }
        for lang, (tokens, chars) in totals.items()
    }


def per_language(
    results: dict[str, dict[str, Any]], compression: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Accuracy, thinking tokens and tokenizer-adjusted thinking tokens per language.

    ``thinking_tokens_en_equivalent`` divides the mean thinking tokens by the language's
    ``relative_to_en``: what the same reasoning would cost if the tokenizer treated it like English.
    """
    out = {}
    for lang, m in results.items():
        mean = m["thinking_tokens"]["mean"]
        ratio = compression[lang]["relative_to_en"]
        out[lang] = {
            "accuracy": m["accuracy"],
            "accuracy_se": m["accuracy_se"],
            "thinking_tokens_mean": mean,
            "answer_tokens_mean": m["answer_tokens"]["mean"],
            "thinking_tokens_en_equivalent": round(mean / ratio, 3) if mean is not None and ratio else None,
            "tokens_per_char": compression[lang]["tokens_per_char"],
            "relative_to_en": ratio,
            "share_in_own_language": m["language_shares"].get(lang, 0.0),
            "failures": m["failures"],
        }
    return out


def render_pilot_markdown(rows: dict[str, Any]) -> str:
    """The pilot's per-language table (appended to ``report.md``)."""
    lines = [
        "## Pilot: the same problems in each language",
        "",
        "| language | accuracy | ± se | thinking mean | thinking (English-equivalent) | tokens/char "
        "| tokens vs en | thinking in own language |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lang, r in rows.items():
        cells = [
            lang,
            f"{r['accuracy']:.1%}",
            f"{r['accuracy_se']:.1%}",
            _num(r["thinking_tokens_mean"]),
            _num(r["thinking_tokens_en_equivalent"]),
            f"{r['tokens_per_char']:.3f}",
            f"{r['relative_to_en']:.2f}",
            f"{r['share_in_own_language']:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Tokens/char and tokens vs en are measured on the same questions in each language: a language whose "
        "thinking is shorter only by that factor is a tokenizer effect, not less reasoning.",
        "",
    ]
    return "\n".join(lines)


def plot_pilot(rows: dict[str, Any], path: Path) -> Path:
    """Three panels per language: accuracy, mean thinking tokens (raw and English-equivalent), tokens/char."""
    plt = pyplot()
    langs = list(rows)
    fig, (acc, tok, comp) = plt.subplots(1, 3, figsize=(12, 3.8))
    acc.bar(
        langs, [rows[c]["accuracy"] for c in langs], yerr=[rows[c]["accuracy_se"] for c in langs], capsize=3
    )
    acc.set_ylim(0, 1.05)
    acc.set_title("accuracy")
    width = 0.4
    xs = range(len(langs))
    tok.bar(
        [x - width / 2 for x in xs], [rows[c]["thinking_tokens_mean"] or 0 for c in langs], width, label="raw"
    )
    tok.bar(
        [x + width / 2 for x in xs],
        [rows[c]["thinking_tokens_en_equivalent"] or 0 for c in langs],
        width,
        label="English-equivalent",
    )
    tok.set_xticks(list(xs), langs)
    tok.set_title("mean thinking tokens")
    tok.legend(fontsize=8)
    comp.bar(langs, [rows[c]["tokens_per_char"] for c in langs])
    comp.set_title("tokenizer: tokens per character")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tokenizer_path(recipe: Recipe, uri: str) -> str:
    return recipe.eval.tokenizer or counting_tokenizer(recipe, uri)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


__all__ = [
    "PILOT_BENCHMARK",
    "per_language",
    "pilot_dataset",
    "pilot_problems",
    "plot_pilot",
    "tokenizer_compression",
    "write_pilot_report",
]
