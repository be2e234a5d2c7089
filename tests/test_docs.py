"""The README and docs describe only what exists: every repository path they name is there, and
every ``l2ray …`` command they show parses against the real command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from l2ray.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A repository path: one of the project's top-level folders, then path characters.
_PATH = re.compile(r"(?<![\w/.$-])((?:configs|jobs|bench|k8s|tests|l2ray)/[\w./*-]*)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def test_every_repository_path_the_docs_name_exists():
    missing = [
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in DOCS
        for path in _paths(doc.read_text())
        if not _exists(path)
    ]
    assert not missing, "docs name paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_l2ray_command_the_docs_show_parses(doc, monkeypatch):
    monkeypatch.chdir(ROOT)  # relative --config paths are checked for existence
    failures = []
    for command in _commands(doc.read_text()):
        try:
            _parse(command)
        except typer.TyperException as exc:  # click's errors (typer vendors click)
            failures.append(f"{command!r}: {exc.format_message()}")
    assert not failures, f"{doc.name} shows commands that do not parse:\n" + "\n".join(failures)


def test_the_command_check_catches_a_wrong_command():
    with pytest.raises(typer.TyperException, match="no-such-option"):
        _parse("l2ray synth --no-such-option")
    with pytest.raises(typer.TyperException, match="no-such-command"):
        _parse("l2ray no-such-command")
    assert _paths("run `l2ray synth --config configs/no-such-recipe.yaml`.") == [
        "configs/no-such-recipe.yaml"
    ]
    assert not _exists("configs/no-such-recipe.yaml")


def test_the_docs_show_commands_to_check():
    shown = [command for doc in DOCS for command in _commands(doc.read_text())]
    assert "l2ray run --config configs/demo.yaml" in shown
    assert len(shown) >= 10


def _paths(text: str) -> list[str]:
    return [m.rstrip(".,:;)") for m in _PATH.findall(text)]


def _exists(path: str) -> bool:
    if "*" in path:
        return bool(list(ROOT.glob(path)))
    return (ROOT / path).exists()


def _commands(text: str) -> list[str]:
    """``l2ray …`` commands in fenced blocks (one per line) and in inline code."""
    lines = [line for block in _FENCE.findall(text) for line in block.splitlines()]
    lines += _INLINE_CODE.findall(_FENCE.sub("", text)) + _INLINE_CODE.findall("\n".join(lines))
    commands = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        line = re.sub(r"^(\S*/)?bin/l2ray\b", "l2ray", line)
        if line.startswith("l2ray "):
            # `[--flag value]` marks an optional part: parse it too.
            commands.append(re.sub(r"\[([^\]]+)\]", r"\1", line))
    return commands


def _parse(command: str) -> None:
    """Resolve ``command`` down to its leaf command and parse its arguments, without running it."""
    name, *args = shlex.split(command)
    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd, info_name=name)
    while hasattr(cmd, "get_command") and args and not args[0].startswith("-"):
        name = args.pop(0)
        cmd = cmd.get_command(ctx, name)
        if cmd is None:
            raise typer.BadParameter(f"no command {name!r}")
        ctx = typer.Context(cmd, info_name=name, parent=ctx)
    cmd.make_context(name, args, parent=ctx.parent)
