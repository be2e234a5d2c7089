import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from l2ray.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_seeds_command_lists_bundled_seeds():
    result = runner.invoke(app, ["seeds", "--config", str(REPO / "configs/demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "0 failed" in result.output


def test_text_segment_and_langmix_json(tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text(
        "So $x=2$ is the value. Wait, check it against the equation. 等等，我再算一遍 $x$ 的值。"
    )
    result = runner.invoke(app, ["text", "segment", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["t.txt"]) == 3
    result = runner.invoke(app, ["text", "langmix", str(trace), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["t.txt"]["char_share"]) == {"en", "zh"}


def test_bad_recipe_exits_2_with_a_one_line_reason(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntrain:\n  lr: fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "l2ray.cli", "seeds", "--config", str(recipe)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "train.lr: got 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_with_no_ray_cluster_at_the_address_fails_in_one_line(tmp_path):
    from tests.local_servers import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "RAY_ADDRESS": address}
    proc = subprocess.run(
        [sys.executable, "-m", "l2ray.cli", "run", "--config", str(REPO / "configs/smoke.yaml"),
         "--set", f"output_dir={tmp_path}"],
        capture_output=True, text=True, check=False, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    error_lines = proc.stderr.strip().splitlines()
    assert error_lines == [error_lines[0]] and f"no Ray cluster at RAY_ADDRESS={address}" in error_lines[0]
    assert "ray start --head" in error_lines[0] and "unset it" in error_lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "✗ synth" in proc.stdout  # the stage display says where it stopped


def test_port_in_use_is_named_with_the_fix():
    from l2ray.serve.api import PortInUseError, check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} on 127\.0\.0\.1 is in use .*--port N"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once the listener is gone


def test_mlflow_store_that_cannot_be_opened_is_named_with_the_fix(tmp_path):
    from l2ray.mlflow_store import TrackingStoreError, mlflow_client
    from tests.local_servers import free_port

    not_a_database = tmp_path / "mlflow.db"
    not_a_database.write_text("these bytes are not sqlite")
    uri = f"sqlite:///{not_a_database}"
    with pytest.raises(TrackingStoreError, match=r"MLflow store .* cannot be opened \(.*not a database"):
        mlflow_client(uri)
    under_a_file = f"sqlite:///{not_a_database}/runs/mlflow.db"  # its folder cannot be created
    with pytest.raises(TrackingStoreError, match=r"cannot be opened.*set tracking\.uri"):
        mlflow_client(under_a_file)
    server = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingStoreError, match=rf"MLflow server {server} does not answer .*mlflow server"):
        mlflow_client(server)
    assert mlflow_client(f"sqlite:///{tmp_path / 'fresh.db'}").search_experiments()  # a new store opens


def test_model_uri_that_does_not_resolve_says_what_is_there(tmp_path):
    from l2ray.mlflow_store import mlflow_client
    from l2ray.student.resolve import StudentNotFoundError, registered_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client(uri).create_registered_model("demo")
    no_alias = r"'demo' has no alias 'champion' .*aliases: none.*promote"
    with pytest.raises(StudentNotFoundError, match=no_alias):
        registered_version("models:/demo@champion", uri)
    with pytest.raises(StudentNotFoundError, match=r"no registered model 'dmeo' .*registered there: demo"):
        registered_version("models:/dmeo@champion", uri)
    with pytest.raises(StudentNotFoundError, match=r"'demo' has no version 3 .*latest: none"):
        registered_version("models:/demo/3", uri)


def test_logged_steps_reads_the_latest_training_step_for_the_progress_bar(tmp_path):
    from mlflow.entities import Metric

    from l2ray.mlflow_store import logged_steps, mlflow_client

    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    assert logged_steps(client, run_id) == (0, "")
    points = [Metric("loss", 2.5, 0, 1), Metric("loss", 1.25, 0, 3), Metric("lr", 1.0, 0, 4)]
    client.log_batch(run_id, metrics=points)
    assert logged_steps(client, run_id) == (3, "loss 1.250")
