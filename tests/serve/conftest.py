"""One Serve app for the whole folder: a student briefly trained on tagged traces, registered in a
sqlite MLflow store under an alias, served as ``models:/NAME@champion`` with API keys configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_servers import free_port
from serve_support import API_KEY, MODEL_NAME, InProcessGenerator


@pytest.fixture(scope="session")
def registry(trained_student, tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, ``models:/NAME@champion``) of the trained student, logged with mlflow.transformers
    by the code `l2ray train` publishes with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.train.mlflow_run import Tracker

    root = tmp_path_factory.mktemp("mlflow")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    run_id = tracker.start_run("serve-test", {}, root / "artifacts")
    model = AutoModelForCausalLM.from_pretrained(trained_student)
    version, _ = tracker.log_and_register(
        run_id, model, AutoTokenizer.from_pretrained(trained_student), MODEL_NAME, tags={}
    )
    tracker.finish(run_id)
    tracker.client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return tracker.tracking_uri, f"models:/{MODEL_NAME}@champion"


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "api_keys"
    path.write_text(f"{API_KEY}\nsk-another-key-00000\n")
    return path


@pytest.fixture(scope="module")
def server(ray_cluster, registry, key_file):
    """The graph on the session's Ray cluster; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    from ray import serve

    from l2ray.serve.app import build_app

    tracking_uri, model_uri = registry
    port = free_port()
    args = {
        "model": model_uri,
        "tracking_uri": tracking_uri,
        "device": "cpu",
        "num_cpus": 0.25,
        "router_num_cpus": 0.1,
        "api_keys_env": None,
        "api_keys_file": str(key_file),
        "max_body_bytes": 64 * 1024,
        "max_concurrency_per_key": 8,
        "max_tokens_limit": 2048,
    }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="l2ray", route_prefix="/")
    yield f"http://127.0.0.1:{port}/v1"
    serve.shutdown()


@pytest.fixture(scope="module")
def engine(student_path):
    """The offline student's decode engine, in this process."""
    from l2ray.decode.engine import DecodeEngine

    return DecodeEngine.load(str(student_path), device="cpu")


@pytest.fixture
def fast(engine):
    """The controller over the stand-in model link: the in-replica fast path, no cluster."""
    from l2ray.recipe import ServeConfig
    from l2ray.serve.controller import ReasoningController

    controller = ReasoningController(InProcessGenerator(engine), ServeConfig())
    controller._codec = engine.codec  # what the handle's info() would give it
    return controller
