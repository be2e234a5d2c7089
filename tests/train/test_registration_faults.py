"""Training's registration when the MLflow server dies in the middle of it (the session's
authenticated server on PostgreSQL, killed with SIGKILL as a crashed pod is, then started again on the
same store): it completes on MLflow's retries when the server comes back, or fails loudly, and a rerun
finishes it — never a second version, never a version without its tags."""

from __future__ import annotations

import threading

import pytest
from local_servers import acting_as
from transformers import AutoModelForCausalLM, AutoTokenizer

from l2ray.train.mlflow_run import CANDIDATE_ALIAS, RegistrationError, Tracker

MODEL = "registration-faults"


def test_registration_cut_by_a_dead_server_completes_on_retry_or_fails_loudly(
    auth_mlflow, postgres, student_path, monkeypatch
):
    model = AutoModelForCausalLM.from_pretrained(student_path)
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    auth, server = auth_mlflow, auth_mlflow.server
    auth.ready()
    with acting_as(auth.admin):
        tracker = Tracker(auth.url)
        run_id = tracker.start_run(MODEL, {}, None)
        client = tracker.client

        # 1. The server dies just before the version is created and is back a few seconds later:
        # MLflow's client retries (backoff 2, 4, 8… s) carry the registration through.
        real_create = client.create_model_version

        def die_and_come_back(*args, **kwargs):
            server.stop()
            threading.Timer(3.0, server.start).start()
            return real_create(*args, **kwargs)

        monkeypatch.setattr(client, "create_model_version", die_and_come_back)
        version, uri = tracker.log_and_register(run_id, model, tokenizer, MODEL, {"checkpoint": "c1"})
        assert (version, uri) == ("1", f"models:/{MODEL}/1")
        assert client.get_model_version(MODEL, "1").tags["checkpoint"] == "c1"
        assert str(client.get_model_version_by_alias(MODEL, CANDIDATE_ALIAS).version) == "1"

        # 2. It dies before the alias moves and stays down past the retries: one loud error, the
        # version it made is complete (tags written with it) and @candidate still names version 1.
        monkeypatch.setattr(client, "create_model_version", real_create)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        real_alias = client.set_registered_model_alias

        def die(*args, **kwargs):
            server.stop()
            return real_alias(*args, **kwargs)

        monkeypatch.setattr(client, "set_registered_model_alias", die)
        with pytest.raises(RegistrationError, match=f"registering '{MODEL}' from run {run_id}") as err:
            tracker.log_and_register(run_id, model, tokenizer, MODEL, {"checkpoint": "c2"})
        assert "run the stage again" in str(err.value) and "\n" not in str(err.value)

        monkeypatch.setattr(client, "set_registered_model_alias", real_alias)
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        server.start().ready()
        versions = {v.version: v for v in client.search_model_versions(f"name='{MODEL}'")}
        assert sorted(versions) == ["1", "2"] and versions["2"].tags["checkpoint"] == "c2"
        assert str(client.get_model_version_by_alias(MODEL, CANDIDATE_ALIAS).version) == "1"

        # 3. Run again: the version of this run and checkpoint is reused, the alias moves to it.
        assert tracker.log_and_register(run_id, model, tokenizer, MODEL, {"checkpoint": "c2"})[0] == "2"
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 2
        assert str(client.get_model_version_by_alias(MODEL, CANDIDATE_ALIAS).version) == "2"

        # 4. A restart of the database under a running server: the next calls go through.
        postgres.restart()
        assert str(client.get_model_version_by_alias(MODEL, CANDIDATE_ALIAS).version) == "2"
