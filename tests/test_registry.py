"""The registry as the trust root: MLflow's auth app on PostgreSQL (one server for the session),
credentials from the environment only, read-only users who serve but cannot promote, promotions that
race from two processes, and rollback — on the authenticated server and on the embedded sqlite store."""

from __future__ import annotations

import json
import logging
import multiprocessing
import queue
import time
from pathlib import Path

import pytest
from local_servers import Account, acting_as
from registry_support import evaluated_versions, gate_summary, promote_in_process

from l2ray.eval.api import promote, rollback, run_eval
from l2ray.eval.promotion import (
    CHAMPION,
    CHAMPION_BEFORE_TAG,
    DECISION_TAG,
    EVIDENCE_TAG,
    ROLLED_BACK_TAG,
    PromotionError,
)
from l2ray.mlflow_store import RegistryPermissionError, TrackingAuthError, TrackingStoreError, mlflow_client
from l2ray.recipe import Recipe, recipe_from_dict
from l2ray.registry import RegistryLockError, alias_lock, lock_name
from l2ray.serve.app import build_app
from l2ray.student.resolve import resolve_student
from l2ray.train.api import train

GATE = {"max_accuracy_drop": 0.0, "min_thinking_token_reduction": 0.2}


def _recipe(
    tmp_path: Path, tracking_uri: str, model: str, student_path: Path | str = "builtin:tiny"
) -> Recipe:
    return recipe_from_dict(
        {
            "name": "registry",
            "output_dir": str(tmp_path / "runs"),
            "student": {"model": "builtin:tiny"},
            "tracking": {"tracking_uri": tracking_uri, "registered_model": model},
            "eval": {"gate": GATE, "api_key_env": None},
        }
    )


@pytest.fixture(scope="module")
def accounts(auth_mlflow) -> dict[str, Account]:
    """``promoter`` (trains, evaluates, promotes: it manages what it creates) and ``server`` (granted
    READ per model by the admin), on the session's authenticated server."""
    auth_mlflow.ready()
    return {name: auth_mlflow.create_user(f"{name}-{time.time_ns()}") for name in ("promoter", "server")}


def test_every_stage_refuses_missing_or_wrong_credentials_before_any_work(auth_mlflow, accounts, tmp_path):
    url = auth_mlflow.url
    recipe = _recipe(tmp_path, url, "nobody")
    with acting_as(None):
        for stage in (lambda: train(recipe), lambda: run_eval(recipe), lambda: promote(recipe)):
            with pytest.raises(TrackingAuthError, match="requires authentication and no credentials") as err:
                stage()
            assert "MLFLOW_TRACKING_USERNAME" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(TrackingAuthError):
            build_app({"model": "models:/nobody@champion", "tracking_uri": url})
        with pytest.raises(TrackingAuthError):
            resolve_student("models:/nobody@champion", url, cache_dir=tmp_path / "cache")
    assert not (recipe.run_dir / "train").exists() and not (recipe.run_dir / "eval").exists()

    wrong = Account(accounts["server"].username, "not-the-password")
    with acting_as(wrong), pytest.raises(TrackingAuthError, match="refused user") as err:
        rollback(recipe)
    assert "not-the-password" not in str(err.value)

    password = accounts["promoter"].password
    with pytest.raises(TrackingStoreError, match="carries a password") as err:
        mlflow_client(url.replace("http://", f"http://promoter:{password}@"))
    assert password not in str(err.value)


def test_a_read_only_user_serves_a_version_but_cannot_promote_it(
    auth_mlflow, accounts, student_path, tmp_path, caplog
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.train.mlflow_run import CANDIDATE_ALIAS, Tracker

    url, name = auth_mlflow.url, f"served-{time.time_ns()}"
    promoter, server = accounts["promoter"], accounts["server"]
    caplog.set_level(logging.DEBUG)
    with acting_as(promoter):
        tracker = Tracker(url)
        run_id = tracker.start_run(name, {}, None)
        model = AutoModelForCausalLM.from_pretrained(student_path)
        tokenizer = AutoTokenizer.from_pretrained(student_path)
        tracker.log_and_register(run_id, model, tokenizer, name, {"checkpoint": "final"})
        experiment = tracker.client.get_run(run_id).info.experiment_id
    served = f"models:/{name}@{CANDIDATE_ALIAS}"

    recipe = _recipe(tmp_path, url, name)
    no_grant = pytest.raises(RegistryPermissionError, match=f"{server.username}.*may not read")
    with acting_as(server), no_grant:  # no grant yet: it may not even read the model
        resolve_student(served, url, cache_dir=tmp_path / "cache")
    # Reading a version's files goes through its run's artifacts: READ on the experiment too.
    auth_mlflow.grant(server, "registered_model", name, "READ")
    auth_mlflow.grant(server, "experiment", experiment, "READ")
    with acting_as(server):
        folder = resolve_student(served, url, cache_dir=tmp_path / "cache")
        assert (Path(folder) / "config.json").is_file() and (Path(folder) / "tokenizer.json").is_file()
        assert build_app({"model": served, "tracking_uri": url}) is not None
        # The gate refuses (no evaluation), and even recording that on the version is not its to do.
        with pytest.raises(RegistryPermissionError, match=f"{server.username}.*may not move @champion"):
            promote(recipe, "1")
    with acting_as(promoter):
        client = mlflow_client(url)
        assert CHAMPION not in client.get_registered_model(name).aliases
        assert DECISION_TAG not in client.get_model_version(name, "1").tags
        assert not client.search_registered_models(f"name = '{lock_name(name)}'")  # lock released
        assert promote(recipe, "1").outcome == "refused"  # the promotion account may record it
        assert client.get_model_version(name, "1").tags[DECISION_TAG] == "refused"
    for account in accounts.values():
        assert account.password not in caplog.text


def _store(kind: str, auth_mlflow, accounts, tmp_path: Path) -> tuple[str, Account | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}", None
    return auth_mlflow.ready(), accounts["promoter"]


@pytest.mark.parametrize("store", ["sqlite", "postgres-auth"])
def test_racing_promotions_end_on_the_decision_made_after_seeing_the_other(
    store, auth_mlflow, accounts, tmp_path
):
    uri, account = _store(store, auth_mlflow, accounts, tmp_path)
    name = f"race-{time.time_ns()}"
    recipe = _recipe(tmp_path, uri, name)
    with acting_as(account):
        client = mlflow_client(uri)
        # v1 thinks 100 tokens; v2 and v3 think 50: each beats v1, neither beats the other.
        summaries = [gate_summary(thinking=100), gate_summary(thinking=50), gate_summary(thinking=50)]
        versions = evaluated_versions(client, name, summaries, tmp_path)
        assert promote(recipe, "1").promoted

        # Both decide against champion 1 while this test holds the alias lock; then they commit.
        context = multiprocessing.get_context("spawn")
        events = context.Queue()
        env = account.env if account else {}
        processes = [
            context.Process(target=promote_in_process, args=(recipe, v, env, events)) for v in versions[1:]
        ]
        with alias_lock(client, name):
            for process in processes:
                process.start()
            decided = _collect(
                events, lambda e: isinstance(e, logging.LogRecord) and "vs champion 1" in e.getMessage(), 2
            )
        done = {e[1]: e[2] for e in _collect(events, lambda e: isinstance(e, tuple), 2)}
        for process in processes:
            process.join(timeout=60)
        assert len(decided) == 2 and all(isinstance(d, dict) for d in done.values()), done

        [winner] = [v for v, d in done.items() if d["outcome"] == "promoted"]
        [loser] = [v for v in done if v != winner]
        assert done[winner]["champion_before"] == "1"
        # The loser's first decision (promoted, against 1) went stale; it decided again against the winner.
        assert done[loser]["outcome"] == "rejected" and done[loser]["champion_before"] == winner
        assert done[loser]["reasons"][0] == f"the champion moved from 1 to {winner}: decided again"
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == winner
        tags = {v: client.get_model_version(name, v).tags for v in versions}
        assert (tags[winner][DECISION_TAG], tags[winner][CHAMPION_BEFORE_TAG]) == ("promoted", "1")
        assert (tags[loser][DECISION_TAG], tags[loser][CHAMPION_BEFORE_TAG]) == ("rejected", winner)
        evidence = json.loads(tags[loser][EVIDENCE_TAG])
        assert evidence["candidate"]["eval_run_id"] == client.get_model_version(name, loser).run_id
        assert evidence["champion"]["eval_run_id"] == client.get_model_version(name, winner).run_id
        assert len(evidence["champion"]["summary_sha256"]) == 64

        back = rollback(recipe)
        assert (back.outcome, back.candidate, back.champion_before) == ("rolled_back", "1", winner)
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
        assert (
            f"from version {winner} to version 1"
            in client.get_model_version(name, winner).tags[ROLLED_BACK_TAG]
        )
        with pytest.raises(PromotionError, match="replaced no champion"):
            rollback(recipe)


def _decided_against(champion: str):
    def wanted(event) -> bool:
        return isinstance(event, logging.LogRecord) and f"vs champion {champion}:" in event.getMessage()

    return wanted


def _collect(events, wanted, count: int, timeout_s: float = 180.0) -> list:
    found, deadline = [], time.monotonic() + timeout_s
    while len(found) < count:
        try:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if isinstance(event, tuple) and event[0] == "error":
            pytest.fail(f"promotion of version {event[1]} failed: {event[2]}")
        if wanted(event):
            found.append(event)
    return found


def test_a_lock_without_its_lease_tags_ends_a_lease_after_its_creation(tmp_path):
    """A lock read back without its holder and lease is a live writer's until a lease has passed since
    it was created: waited for (and named), then broken."""
    client = mlflow_client(f"sqlite:///{tmp_path}/locks.db")
    client.create_registered_model(lock_name("m"))  # what a reader saw: the lock, none of its tags
    with pytest.raises(RegistryLockError, match="held by unknown"), alias_lock(client, "m", 60.0, 0.5):
        pass
    with alias_lock(client, "m", lease_s=0.0, wait_s=30.0):  # its lease, from its creation, is over
        assert client.get_registered_model(lock_name("m")).tags  # broken and taken: this writer's now
    assert not client.search_registered_models(f"name = '{lock_name('m')}'")


def test_a_model_the_user_cannot_see_is_named_with_the_grant_it_needs(auth_mlflow, accounts, tmp_path):
    # The auth app answers 403 before it looks the model up: it never says whether the model exists.
    with (
        acting_as(accounts["promoter"]),
        pytest.raises(RegistryPermissionError, match="no such model") as err,
    ):
        resolve_student("models:/never-registered@champion", auth_mlflow.url, cache_dir=tmp_path)
    assert "grants READ on registered model 'never-registered'" in str(err.value)
