"""The ``l2ray`` command line.

Every command takes ``--config recipe.yaml`` (default: the built-in recipe) and any number of
``--set key.sub=value`` overrides. An `l2ray.errors.L2rayError` (bad input, an unusable
environment) prints its one message and exits with status 2; `main` catches it in one place.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from l2ray.errors import L2rayError
from l2ray.recipe import Recipe, load_recipe, recipe_from_dict

if TYPE_CHECKING:
    from l2ray.eval.api import EvalResult

T = TypeVar("T")


class _Commands(TyperGroup):
    """The command group: the one place an `L2rayError` becomes one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except L2rayError as exc:
            # One line however long: a wrapped message would break the paths and commands it names.
            message = f"[bold red]error:[/] {escape(str(exc))}"
            Console(stderr=True).print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands, help="L² (Less Data, Less Tokens) on Ray.", no_args_is_help=True, add_completion=False
)
text_app = typer.Typer(help="Segmentation and language-mix measurement of traces.", no_args_is_help=True)
student_app = typer.Typer(help="The student model.", no_args_is_help=True)
app.add_typer(text_app, name="text")
app.add_typer(student_app, name="student")

console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Recipe YAML (default: built-in).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. train.lr=1e-5 (repeatable).")]


def main() -> None:
    """Console-script entry point (errors are handled by the command group, `_Commands`)."""
    app()


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


@app.command("eval")
def eval_command(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    label: Annotated[str | None, typer.Option(help="Output folder under <run dir>/eval/.")] = None,
    model: Annotated[str | None, typer.Option(help="Model URI (default: eval.model, student.model).")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (default: local).")] = None,
) -> None:
    """Evaluate accuracy and tokens over recipe.eval's benchmarks × samples × configurations."""
    from l2ray.eval.api import run_eval

    recipe = recipe_option(config, sets)
    _print_eval(
        _staged(recipe, "eval", lambda: run_eval(recipe, label=label, model=model, endpoint=endpoint))
    )


@app.command()
def pilot(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    label: Annotated[str, typer.Option(help="Output folder under <run dir>/eval/.")] = "pilot",
    model: Annotated[str | None, typer.Option(help="Model URI (default: eval.model, student.model).")] = None,
) -> None:
    """Pilot study: the seed problems asked in each language; accuracy, tokens and tokenizer compression."""
    from l2ray.eval.api import run_pilot
    from l2ray.synth.api import translator

    recipe = recipe_option(config, sets)
    result = _staged(recipe, "pilot", lambda: run_pilot(recipe, translator(recipe), label=label, model=model))
    table = Table(title="pilot: the same problems in each language")
    for column in ("language", "accuracy", "thinking mean", "English-equivalent", "tokens/char", "vs en"):
        table.add_column(column)
    for lang, row in result.summary["per_language"].items():
        table.add_row(
            lang,
            f"{row['accuracy']:.1%}",
            str(row["thinking_tokens_mean"]),
            str(row["thinking_tokens_en_equivalent"]),
            f"{row['tokens_per_char']:.3f}",
            f"{row['relative_to_en']:.2f}",
        )
    console.print(table)
    console.print(f"report: {result.out_dir / 'report.md'}")


@app.command()
def promote(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    candidate: Annotated[str, typer.Option(help="Version number or alias of the candidate.")] = "candidate",
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Move champion back to the version it replaced.")
    ] = False,
) -> None:
    """Move the champion alias to the candidate when it passes recipe.eval.gate (exit 3 when refused),
    or with --rollback back to the version the champion replaced."""
    from l2ray.eval.api import promote as run_promotion
    from l2ray.eval.api import rollback as run_rollback

    recipe = recipe_option(config, sets)
    decision = run_rollback(recipe) if rollback else run_promotion(recipe, candidate)
    colour = {"promoted": "green", "rejected": "yellow", "refused": "red", "rolled_back": "yellow"}
    console.print(
        f"[bold {colour[decision.outcome]}]{decision.outcome}[/]: {decision.model_name} version "
        f"{decision.candidate} (champion before: {decision.champion_before or 'none'})"
    )
    for reason in decision.reasons:
        console.print(f"  - {reason}", highlight=False)
    if decision.outcome == "refused":
        raise typer.Exit(3)


def _print_eval(result: EvalResult) -> None:
    """The summary of an evaluation as a table."""
    from l2ray.run_report import EvalSummary

    table = Table(title=f"evaluation {result.label}")
    for column in ("benchmark", "configuration", "accuracy", "± se", "thinking", "answer", "failures"):
        table.add_column(column)
    for benchmark, configurations in EvalSummary.model_validate(result.summary).results.items():
        for name, m in configurations.items():
            table.add_row(
                benchmark,
                name,
                f"{m.accuracy:.1%}",
                f"{m.accuracy_se:.1%}",
                str(m.thinking_tokens.mean),
                str(m.answer_tokens.mean),
                str(m.failures),
            )
    console.print(table)
    console.print(f"report: {result.out_dir / 'report.md'}; MLflow run {result.mlflow_run_id}")


@app.command()
def synth(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Estimate requests, tokens and dollars; send nothing.")
    ] = False,
) -> None:
    """Synthesize multilingual traces (original, whole-CoT, code-switched) on Ray Data; resumable."""
    from l2ray.run_report import SynthSummary
    from l2ray.synth.api import synthesize

    recipe = recipe_option(config, sets)
    if plan:
        from l2ray.synth.estimate import plan_table

        console.print(plan_table(recipe))
        return
    result = _staged(recipe, "synth", lambda: synthesize(recipe))
    summary = SynthSummary.model_validate(result.summary)
    table = Table(title=f"synthesis: {result.run_dir / 'synth'}")
    for column in ("kind", "rows", "languages"):
        table.add_column(column)
    for kind, count in summary.rows_by_kind.items():
        langs = ", ".join(f"{c} {n}" for c, n in summary.rows_by_language.get(kind, {}).items())
        table.add_row(kind, str(count), langs)
    console.print(table)
    run = summary.this_run
    console.print(
        f"rejected {summary.rejected} {summary.rejected_by_reason} · seed failures "
        f"{summary.seeds.failed} · requests sent {run.requests_sent}, cache hits {run.cache_hits}"
        f" · tokens {run.sent_prompt_tokens}+{run.sent_completion_tokens} · cost {run.cost}"
        f" · {summary.wall_time_s} s",
        highlight=False,
    )


@app.command("train")
def train_command(
    action: Annotated[
        Literal["plan"] | None, typer.Argument(help="plan: print the memory plan and exit.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    traces: Annotated[
        Path | None, typer.Option(help="Folder of trace shards (default: <run dir>/synth/traces).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the last run of this recipe from its checkpoint.")
    ] = False,
) -> None:
    """Fine-tune the student on Ray Train; log to MLflow; register the model with alias `candidate`."""
    from l2ray.train.api import train

    recipe = recipe_option(config, sets)
    if action == "plan":
        _print_train_plan(recipe)
        return
    result = _staged(recipe, "train", lambda: train(recipe, traces_dir=traces, resume=resume))
    table = Table(title=f"training run {result.ray_run_name}")
    table.add_column("field")
    table.add_column("value")
    for name in ("model_uri", "run_id", "steps", "final_loss", "rows", "data_fingerprint", "tokens_per_s"):
        table.add_row(name, str(getattr(result, name)))
    table.add_row("truncated", f"{result.truncated_examples} traces, {result.truncated_tokens} tokens")
    console.print(table)
    console.print(
        f"alias [bold]{result.alias}[/] → {result.model_uri}; details in {recipe.run_dir / 'train'}"
    )


def _print_train_plan(recipe: Recipe) -> None:
    from l2ray.train.api import recipe_plan
    from l2ray.train.memory_plan import plan_rows

    plan = recipe_plan(recipe)
    table = Table(
        title=f"memory plan of {recipe.name}: {recipe.student.model}, train.strategy {recipe.train.strategy}"
    )
    for column in ("where", "item", "GiB"):
        table.add_column(column)
    for row in plan_rows(plan):
        table.add_row(*row)
    console.print(table)
    console.print(f"shape: {plan.shape_source}")
    console.print(
        "fits" if plan.fits else "[bold red]does not fit[/]: `l2ray train` refuses it (see docs/training.md)"
    )


@app.command("serve")
def serve_command(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="Student URI (default: serve.model, @champion).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: serve.port).")] = None,
) -> None:
    """Serve the student OpenAI-compatibly on Ray Serve (Ingress → Generator; one deployment with
    serve.graph=direct) until Ctrl-C."""
    import signal
    import time

    import ray

    from l2ray.cluster import ensure_ray
    from l2ray.serve.api import run_server, wait_ready

    recipe = recipe_option(config, sets)
    ensure_ray(include_dashboard=False)
    shown = model or recipe.serve.model or f"models:/{recipe.registered_model_name}@champion"
    console.print(
        f"loading {shown} on {recipe.serve.engine} (the replicas start, then the engine's first token) …"
    )
    started = time.monotonic()
    url = run_server(recipe, model_uri=model, port=port)
    ready = wait_ready(url)
    console.print(f"ready in {time.monotonic() - started:.0f} s: {ready.get('model', shown)}")
    console.print(f"serving [bold]{url}[/] (GET /readyz: 200; Ctrl-C or SIGTERM to stop)")
    # SIGTERM (kubectl, systemd, a background job) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@app.command("lab")
def lab_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Lab YAML.")] = Path("configs/lab.yaml"),
    sets: SetOpt = None,
    base_only: Annotated[bool, typer.Option("--base-only", help="Only build (or find) the base.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="With --base-only: build the base into this folder (to ship it).")
    ] = None,
) -> None:
    """The L² lab (docs/lab.md): every arm trained and evaluated, sweeps, pilot → runs/<name>/lab/."""
    from l2ray.clock import utc_stamp
    from l2ray.console import run_display
    from l2ray.lab.base import ensure_base
    from l2ray.lab.study import lab_dir, load_lab_config, run_study

    lab = load_lab_config(config, sets)
    if base_only:
        console.print(f"base student: {ensure_base(lab.base, out=out)}", highlight=False)
        return
    log_file = lab_dir(lab).parent / "logs" / f"lab-{utc_stamp()}.log"
    with run_display(log_file, stage_width=19) as display:  # fits "paraphrase k=20 s=2"
        summary = run_study(lab, display)
        if _ray_connected():
            _shutdown_ray()  # inside the capture: Ray's teardown messages go to the log too
    _print_lab_summary(summary, log_file)


def _print_lab_summary(summary: dict, log_file: Path) -> None:
    """The study's tables (arms, sweeps, pilot), laid out for 100 columns, and where the rest is."""
    from rich import box

    from l2ray.lab.report import lab_tables

    out = _summary_console()
    for title, columns, rows in lab_tables(summary):
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    out.print(f"lab report: {summary['report']}", soft_wrap=True, markup=False)
    out.print(f"full log: {log_file}", soft_wrap=True, markup=False)


@app.command("run")
def run(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    until: Annotated[str | None, typer.Option(help="Stop after this stage (synth, train, …).")] = None,
    force: Annotated[bool, typer.Option(help="Rerun every stage even when its outputs are current.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the closing summary as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Ray's and MLflow's own output here too.")
    ] = False,
) -> None:
    """The whole pipeline: synth → train → eval base and student → promote; done stages are skipped.

    One line per stage on the terminal; Ray's, MLflow's and the workers' output goes to
    <run dir>/logs/run-<time>.log (warnings and errors are shown once each)."""
    from l2ray.clock import utc_stamp
    from l2ray.console import run_display
    from l2ray.pipeline import run_pipeline
    from l2ray.run_report import print_run_summary, run_summary

    recipe = recipe_option(config, sets)
    log_file = recipe.run_dir / "logs" / f"run-{utc_stamp()}.log"
    joined = _ray_connected()
    with run_display(log_file, verbose=verbose, stderr=as_json) as display:
        try:
            result = run_pipeline(recipe, until=until, force=force, display=display)
        finally:
            if not joined and _ray_connected():  # a cluster this command started, not a caller's
                _shutdown_ray()  # inside the capture: Ray's teardown messages go to the log too
    log = None if verbose else str(log_file)
    summary = run_summary(recipe, result.stages, log=log, notes=display.notes.values())
    if summary.promotion is not None and summary.promotion.outcome == "promoted":
        config_flag = f" --config {config}" if config else ""
        summary.commands["serve"] = (
            f"l2ray serve{config_flag} --model models:/{recipe.registered_model_name}@champion"
        )
    if as_json:
        typer.echo(summary.to_json())
    else:
        print_run_summary(summary, _summary_console())


def _summary_console() -> Console:
    """Where a closing summary is printed: laid out for at most 100 columns, 100 off a terminal."""
    from l2ray.console import WIDTH

    return Console(width=min(console.width, WIDTH) if console.is_terminal else WIDTH, highlight=False)


def _staged(recipe: Recipe, stage: str, work: Callable[[], T]) -> T:
    """Run one stage command as `l2ray run` runs a stage: a line with its bar on the terminal, Ray's,
    MLflow's and the workers' output in ``<run dir>/logs/<stage>-<time>.log``, warnings once each."""
    from l2ray.clock import utc_stamp
    from l2ray.console import run_display

    log_file = recipe.run_dir / "logs" / f"{stage}-{utc_stamp()}.log"
    joined, start = _ray_connected(), time.monotonic()
    with run_display(log_file) as display:
        display.started(stage, "")
        try:
            result = work()
        except BaseException as exc:
            display.failed(stage, time.monotonic() - start, exc)
            raise
        finally:
            if not joined and _ray_connected():
                _shutdown_ray()  # inside the capture: Ray's teardown messages go to the log too
        display.finished(stage, time.monotonic() - start, f"full log: {log_file}")
    return result


def _ray_connected() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


class TraceFileError(L2rayError):
    """A file given to ``l2ray text`` that is missing or holds no usable trace."""


def _read_traces(path: Path, field: str | None) -> list[tuple[str, str]]:
    if not path.exists():
        raise TraceFileError(f"{path} does not exist; pass a text file, or a JSONL file with --field")
    if field is None:
        return [(path.name, path.read_text(encoding="utf-8"))]
    traces = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get(field), str):
            raise TraceFileError(
                f"{path}, row {line_no}: field {field!r} is missing or not text; fields there: {sorted(row)}"
            )
        traces.append((str(row.get("id", line_no)), row[field]))
    return traces


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    main()
