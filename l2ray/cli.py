"""The ``l2ray`` command line.

Every command takes ``--config recipe.yaml`` (default: the built-in recipe) and any number of
``--set key.sub=value`` overrides. Errors in input print one clear message and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from l2ray.config import Recipe, RecipeError, load_recipe, recipe_from_dict

app = typer.Typer(help="L² (Less Data, Less Tokens) on Ray.", no_args_is_help=True, add_completion=False)
text_app = typer.Typer(help="Segmentation and language-mix measurement of traces.", no_args_is_help=True)
student_app = typer.Typer(help="The student model.", no_args_is_help=True)
app.add_typer(text_app, name="text")
app.add_typer(student_app, name="student")

console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Recipe YAML (default: built-in).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. train.lr=1e-5 (repeatable).")]


def main() -> None:
    """Console-script entry point: run the app, turning known input errors into one-line messages."""
    from l2ray.data.seeds import SeedError
    from l2ray.languages import UnknownLanguageError

    try:
        app()
    except (RecipeError, SeedError, UnknownLanguageError, FileNotFoundError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


def recipe_option(config: Path | None, sets: list[str] | None) -> Recipe:
    """The recipe a command runs with: ``--config`` (or the built-in default) plus ``--set`` overrides."""
    if config is None:
        return recipe_from_dict({"name": "default"}, sets, origin="<built-in default>")
    return load_recipe(config, sets)


@app.command()
def seeds(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    show: Annotated[int, typer.Option(help="Rows to list.")] = 20,
) -> None:
    """Load and validate the recipe's seeds; show counts, fragments and language mix per seed."""
    from l2ray.data.seeds import load_seeds
    from l2ray.text import measure_language_mix, segment

    recipe = recipe_option(config, sets)
    result = load_seeds(recipe.seeds)
    table = Table(title=f"seeds from {result.source}")
    for column in ("id", "question", "cot chars", "fragments", "dominant", "answer"):
        table.add_column(column)
    for row in result.rows[:show]:
        mix = measure_language_mix(row.cot)
        table.add_row(
            row.id,
            _clip(row.question, 48),
            str(len(row.cot)),
            str(len(segment(row.cot))),
            str(mix.dominant),
            _clip(row.answer, 16),
        )
    console.print(table)
    console.print(f"[green]{len(result.rows)} valid[/], [red]{len(result.failures)} failed[/]")
    if result.failures:
        path = result.write_failures(recipe.run_dir / "seed_failures.jsonl")
        for failure in result.failures:
            console.print(f"  [red]✗[/] {failure.describe()}", highlight=False)
        console.print(f"failures written to {path}")


@text_app.command("segment")
def text_segment(
    path: Annotated[Path, typer.Argument(help="A text file, or a JSONL file with --field.")],
    field: Annotated[str | None, typer.Option(help="JSONL field holding the trace, e.g. cot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Split traces into reflection fragments (at markers, never inside math)."""
    from l2ray.text import segment

    results = {name: segment(text) for name, text in _read_traces(path, field)}
    if as_json:
        console.print_json(json.dumps(results, ensure_ascii=False))
        return
    for name, fragments in results.items():
        table = Table(title=f"{name}: {len(fragments)} fragments", show_lines=True)
        table.add_column("#", justify="right")
        table.add_column("fragment")
        for index, fragment in enumerate(fragments):
            table.add_row(str(index), fragment.strip())
        console.print(table)


@text_app.command("langmix")
def text_langmix(
    path: Annotated[Path, typer.Argument(help="A text file, or a JSONL file with --field.")],
    field: Annotated[str | None, typer.Option(help="JSONL field holding the trace, e.g. cot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure the language mix of traces: shares per language, switches, dominant language."""
    from l2ray.text import measure_language_mix

    results = {name: measure_language_mix(text) for name, text in _read_traces(path, field)}
    if as_json:
        console.print_json(json.dumps({k: v.to_dict() for k, v in results.items()}, ensure_ascii=False))
        return
    table = Table(title="language mix")
    for column in ("trace", "dominant", "switches", "tag switches", "character shares"):
        table.add_column(column)
    for name, mix in results.items():
        shares = ", ".join(f"{code} {share:.0%}" for code, share in mix.char_share.items())
        table.add_row(name, str(mix.dominant), str(mix.switches), str(mix.tag_switches), shares)
    console.print(table)


@student_app.command("build")
def student_build(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <run dir>/student).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if an identical student exists.")] = False,
) -> None:
    """Build the offline student (tiny Qwen2 + BPE tokenizer with language tags) and smoke-test it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.student.build import BUILD_INFO, build_student

    recipe = recipe_option(config, sets)
    with console.status("building the student"):
        path = build_student(out or recipe.run_dir / "student", recipe.student, seed=recipe.seed, force=force)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is $2+3$?"}], add_generation_prompt=True, return_tensors="pt"
        )
        generated = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    info = json.loads((path / BUILD_INFO).read_text())
    console.print(
        f"student at [bold]{path}[/]: {info['parameters']:,} parameters, vocab {info['vocab_size']}"
    )
    console.print(
        "sample (random weights): " + repr(tokenizer.decode(generated[0][prompt["input_ids"].shape[1] :]))
    )


def _read_traces(path: Path, field: str | None) -> list[tuple[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if field is None:
        return [(path.name, path.read_text(encoding="utf-8"))]
    traces = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get(field), str):
            raise RecipeError(
                f"{path}, row {line_no}: field {field!r} is missing or not text; fields there: {sorted(row)}"
            )
        traces.append((str(row.get("id", line_no)), row[field]))
    return traces


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    main()
