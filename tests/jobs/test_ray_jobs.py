"""`ray job submit` of the whole pipeline against a real `ray start --head` cluster with a second node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from local_servers import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_cluster(tmp_path_factory):
    """A head node and one worker node started with `ray start`; stopped by PID (never `ray stop`)."""
    temp_dir = Path("/tmp") / f"l2ray-jobs-{os.getpid()}"  # short: Ray's socket paths have a length limit
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # the job's `python` is this virtualenv's
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    gcs_port, dashboard_port = free_port(), free_port()
    head = [
        str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--num-cpus=2",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
        *_node_ports(),
    ]  # fmt: skip
    # The second node gets its own temp dir: two nodes on one machine would otherwise share (and
    # re-extract under each other) the job's unpacked working dir in runtime_resources/.
    worker = [
        str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1",
        f"--temp-dir={temp_dir}-node2", *_node_ports(),
    ]  # fmt: skip
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=180)
        subprocess.run(worker, env=env, check=True, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        _kill_cluster(temp_dir)  # matches the second node's "<temp_dir>-node2" too
        for folder in (temp_dir, Path(f"{temp_dir}-node2")):
            shutil.rmtree(folder, ignore_errors=True)


def test_pipeline_job_succeeds_and_leaves_artifacts_and_mlflow_entries(job_cluster, tmp_path):
    from mlflow import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(job_cluster)
    runtime_env = yaml.safe_load((REPO / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    runtime_env["env_vars"] = {**runtime_env["env_vars"], "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    out = tmp_path / "runs"
    job_id = _submit(
        client,
        entrypoint=f"python jobs/pipeline.py --config configs/smoke.yaml --set output_dir={out}",
        runtime_env=runtime_env,
    )
    deadline = time.monotonic() + 900
    status = client.get_job_status(job_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "the pipeline job did not finish in 15 minutes"
        time.sleep(3)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "pipeline finished" in logs

    from ray.util.state import list_nodes

    assert len(list_nodes(address=job_cluster, filters=[("state", "=", "ALIVE")])) == 2

    run_dir = out / "smoke"
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert list(state) == ["synth", "train", "eval_base", "eval_student", "promote"]
    assert list((run_dir / "synth" / "traces").glob("*.parquet"))
    assert (run_dir / "eval" / "student" / "summary.json").exists()
    assert (run_dir / "README.md").exists()

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    outcome = state["promote"]["outputs"]["outcome"]
    assert outcome in ("promoted", "rejected")  # the smoke student may well be no better than its base
    version = mlflow.get_model_version_by_alias("smoke", "champion" if outcome == "promoted" else "candidate")
    assert str(version.version) == str(state["train"]["outputs"]["version"])
    run = mlflow.get_run(state["train"]["outputs"]["run_id"])
    assert run.info.status == "FINISHED" and "loss" in run.data.metrics


def _submit(client, **job) -> str:
    """Submit, waiting for the head's job agent, which comes up some seconds after `ray start` returns."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _node_ports() -> list[str]:
    """Free ports for a node's agents: the defaults (52365, …) collide with any other Ray on the machine
    (the test session's own cluster included), and a head without its job agent accepts no job."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
             "metrics-export-port", "node-manager-port", "object-manager-port")  # fmt: skip
    return [f"--{name}={free_port()}" for name in names]


def _kill_cluster(temp_dir: Path) -> None:
    """Kill every process of this cluster (its command line names our temp dir or session)."""
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(temp_dir) in cmdline:
            victims.append(proc)
    for proc in victims:
        for child in proc.children(recursive=True):
            child.kill()
        proc.kill()
    psutil.wait_procs(victims, timeout=30)
