"""Teachers by role, cost and budget, provenance, a missing key: real HTTP servers, real Ray Data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_teacher import FakeTeacher
from synth_helpers import API_KEY, seed_record, teacher_section, write_seeds

from l2ray.recipe import RecipeError, recipe_from_dict
from l2ray.synth.api import synthesize
from l2ray.synth.estimate import plan_cost
from l2ray.teacher.base import MissingKeyError, SamplingParams
from l2ray.teacher.batch import BatchStates
from l2ray.teacher.prices import PRICES


def _roles_recipe(tmp_path: Path, translator: FakeTeacher, reasoner: FakeTeacher, **reasoner_extra) -> dict:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [seed_record(0), seed_record(1)])
    return {
        "name": "roles",
        "output_dir": str(tmp_path / "runs"),
        "languages": ["zh", "fr"],
        "seeds": {"source": str(seeds)},
        "teachers": {
            "translator": {**teacher_section(translator), "model": "gpt-4o"},
            "reasoner": {**teacher_section(reasoner), "model": "deepseek-reasoner", **reasoner_extra},
        },
        "synth": {"actors": 1, "p_switch": 1.0, "progress": False},
    }


def _rows(folder: Path) -> list[dict]:
    return [row for shard in sorted(folder.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


@pytest.mark.slow
def test_each_role_does_its_part_pays_its_price_and_a_budget_stop_resumes(ray_cluster, api_key, tmp_path):
    with (
        FakeTeacher(expected_key=API_KEY, served_model="gpt-4o-2024-08-06") as translator,
        FakeTeacher(expected_key=API_KEY, served_model="deepseek-r1-0528") as reasoner,
    ):
        # The reasoner sends one request at a time, so the budget stops it after its first reply.
        raw = _roles_recipe(tmp_path, translator, reasoner, concurrency=1, max_cost_usd=1e-9)
        first = synthesize(recipe_from_dict(raw)).summary
        del raw["teachers"]["reasoner"]["max_cost_usd"]
        recipe = recipe_from_dict(raw)
        second = synthesize(recipe).summary

    # The translator translated (questions and fragments) and never reasoned; the reasoner only solved.
    assert translator.arrivals and all("Target language" in text for _, text in translator.arrivals)
    assert reasoner.arrivals and not any("Target language" in text for _, text in reasoner.arrivals)
    # Stopped by the budget: one solve paid, the three other whole traces left for the rerun.
    assert (
        first["this_run"]["stopped_by_budget"] == 3
        and "max_cost_usd reached" in first["this_run"]["budget_note"]
    )
    assert first["rejected_by_reason"] == {"teacher:budget": 3}
    assert second["tasks"]["run"] == 3 and second["rows"] == 8 and second["rejected"] == 0
    # Nothing was bought twice, by either role, across the stop and the resume.
    assert max(translator.paid.values()) == 1 and max(reasoner.paid.values()) == 1
    assert sum(reasoner.paid.values()) == 4  # one solve per whole trace (2 seeds x 2 languages)

    by_role = first["this_run"]["by_role"]
    price = PRICES["deepseek-reasoner"]
    solve = by_role["reasoner"]
    expected = (
        solve["sent_prompt_tokens"] * price.input + solve["sent_completion_tokens"] * price.output
    ) / 1e6
    assert solve["requests"] == 1 and solve["cost_usd"] == pytest.approx(expected, abs=1e-6) and expected > 0
    assert by_role["translator"]["cost_usd"] > 0
    assert (
        first["this_run"]["by_kind"]["mixed"]["cost_usd"] > 0 and "original" in first["this_run"]["by_kind"]
    )
    total = sum(line["cost_usd"] for line in first["this_run"]["by_role"].values())
    assert first["this_run"]["cost"] == pytest.approx(total, abs=1e-6)
    assert first["teachers"]["reasoner"]["price_per_mtok"]["as_of"] == price.as_of

    whole = next(r for r in _rows(recipe.run_dir / "synth/traces") if r["kind"] == "whole")
    provenance = json.loads(whole["teacher"])
    assert provenance["roles"]["translator"]["served"] == ["gpt-4o-2024-08-06"]
    assert provenance["roles"]["reasoner"]["model"] == "deepseek-reasoner"
    assert provenance["roles"]["reasoner"]["served"] == ["deepseek-r1-0528"]
    # deepseek-reasoner ignores temperature and top_p: the row does not claim them.
    assert provenance["roles"]["reasoner"]["params"] == {"max_tokens": 8192}
    assert provenance["roles"]["translator"]["params"]["temperature"] == 0.6
    assert len(provenance["requests"]) == 2


def test_a_missing_key_variable_is_one_line_naming_it_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("L2RAY_DEEPSEEK_KEY", raising=False)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [seed_record(0)])
    recipe = recipe_from_dict(
        {
            "name": "nokey",
            "output_dir": str(tmp_path),
            "seeds": {"source": str(seeds)},
            "teachers": {
                "translator": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": None},
                "reasoner": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "L2RAY_DEEPSEEK_KEY"},
            },
        }
    )
    with pytest.raises(MissingKeyError) as caught:
        synthesize(recipe)  # fails before Ray starts or anything is sent
    message = str(caught.value)
    assert "\n" not in message
    assert "teachers.reasoner" in message and "$L2RAY_DEEPSEEK_KEY is not set" in message
    assert "export L2RAY_DEEPSEEK_KEY=" in message and "api_key_env: null" in message


def test_one_teacher_or_teachers_by_role_not_both():
    both = {"name": "x", "teacher": {"model": "a"}, "teachers": {"translator": {}, "reasoner": {}}}
    with pytest.raises(RecipeError, match="not both"):
        recipe_from_dict(both)
    single = recipe_from_dict({"name": "x", "teacher": {"model": "a"}})
    assert single.teacher_roles["translator"] is single.teacher_roles["reasoner"]


def test_the_plan_counts_each_roles_requests_and_free_cache_hits_and_sends_nothing(
    api_key, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from l2ray.cli import app, console
    from l2ray.synth.api import translate_questions
    from l2ray.synth.estimate import plan_cost

    with FakeTeacher(expected_key=API_KEY) as server:
        raw = _roles_recipe(tmp_path, server, server)
        recipe = recipe_from_dict(raw)
        questions = [seed_record(i)["question"] for i in (0, 1)]
        translate_questions(recipe, questions, "zh")  # two translations now cached: free in the plan
        sent = server.requests
        plan = plan_cost(recipe)
        (tmp_path / "recipe.yaml").write_text(json.dumps(raw))  # JSON is YAML
        monkeypatch.setattr(console, "width", 240)  # a wide terminal: table cells on one line
        shown = CliRunner().invoke(app, ["synth", "--plan", "--config", str(tmp_path / "recipe.yaml")])
        assert server.requests == sent == 2  # neither the plan nor the CLI sent anything

    assert plan["tasks"] == {"planned": 8, "to_run": 8, "finished": 0}
    translator, reasoner = plan["roles"]["translator"], plan["roles"]["reasoner"]
    # Translator: 4 question translations (2 cached) + 2 switched fragments per seed's mixed trace.
    assert (translator["requests"], translator["cache_hits"]) == (2 + 4, 2)
    assert (reasoner["requests"], reasoner["cache_hits"]) == (4, 0)  # a solve per whole trace
    for line, model in ((translator, "gpt-4o"), (reasoner, "deepseek-reasoner")):
        price = PRICES[model]
        expected = (line["prompt_tokens"] * price.input + line["completion_tokens"] * price.output) / 1e6
        assert line["model"] == model and line["usd"] == pytest.approx(expected, abs=1e-4)
        assert line["usd_at_most"] >= line["usd"] > 0 and line["completion_tokens"] > 0
    assert shown.exit_code == 0, shown.output
    assert "nothing was sent" in shown.output
    assert f"{reasoner['usd']}" in shown.output and "deepseek-reasoner" in shown.output


@pytest.mark.slow
def test_batch_mode_resumes_a_killed_run_into_the_same_cache_and_resubmits_only_failed_lines(
    ray_cluster, api_key, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    records = [seed_record(0), seed_record(1, marker="[[BATCHFAIL]] ")]
    with FakeTeacher(expected_key=API_KEY, batch_polls=10_000) as server:  # no batch ends until told
        raw = _roles_recipe(tmp_path, server, server)
        write_seeds(tmp_path / "seeds.jsonl", records)
        for role in ("translator", "reasoner"):
            raw["teachers"][role].update(batch=True, batch_poll_s=0.05)
        (tmp_path / "recipe.yaml").write_text(json.dumps(raw))
        repo = Path(__file__).resolve().parents[2]
        driver = subprocess.Popen(
            [sys.executable, "-m", "l2ray.cli", "synth", "--config", str(tmp_path / "recipe.yaml")],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not server.batches and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.batches and driver.poll() is None
        os.killpg(driver.pid, signal.SIGKILL)  # killed while its translation batch is running
        driver.wait()
        server.batch_polls = 1  # the provider finishes the batch while nobody watches

        summary = synthesize(recipe_from_dict(raw)).summary
        batches_after_resume = dict(server.batches)
        again = synthesize(recipe_from_dict(raw)).summary

    assert server.requests == 0  # nothing went to /chat/completions: all through the batch API
    # The resumed run collected the killed run's batch (batch_0) and submitted only the solves.
    assert summary["batch"]["translator"]["collected"] == ["batch_0"]
    assert summary["batch"]["translator"]["submitted"] == []
    assert summary["batch"]["reasoner"]["submitted"] == ["batch_1"] and len(batches_after_resume) == 2
    # s1's question translations fail in the batch: its whole traces wait for a rerun, the rest is built.
    assert summary["batch"]["translator"]["failed"] == 2
    assert summary["rows"] == 6 and summary["rejected_by_reason"] == {"cache_miss": 2}
    assert summary["batch"]["reasoner"]["cost_usd"] > 0 and summary["this_run"]["cost"] > 0
    # The rerun resubmits those two lines, and nothing else; no line was ever paid twice.
    assert again["batch"]["translator"]["submitted"] == ["batch_2"]
    assert sorted(server.batch_lines.values()).count(2) == 2 and max(server.batch_lines.values()) == 2
    assert max(server.paid.values()) == 1


@pytest.mark.slow
def test_batch_mode_holds_back_what_would_pass_the_budget_and_a_rerun_submits_only_that(
    ray_cluster, api_key, tmp_path
):
    with FakeTeacher(expected_key=API_KEY, batch_polls=1) as server:
        raw = _roles_recipe(tmp_path, server, server)
        for role in ("translator", "reasoner"):
            raw["teachers"][role].update(batch=True, batch_poll_s=0.05)
        estimate = plan_cost(recipe_from_dict(raw))["roles"]["translator"]
        raw["teachers"]["translator"]["max_cost_usd"] = estimate["usd"] / 2
        first = synthesize(recipe_from_dict(raw)).summary
        del raw["teachers"]["translator"]["max_cost_usd"]
        second = synthesize(recipe_from_dict(raw)).summary

    assert server.requests == 0  # all through the batch API
    # About half the translations fit the budget; the rest were never sent, and their traces wait.
    translator = first["batch"]["translator"]
    held = translator["held_back_by_budget"]
    assert 0 < held < estimate["requests"] and translator["answered"] == estimate["requests"] - held
    assert len(translator["submitted"]) == 1  # the batch the budget cut is the last: no smaller ones
    stopped = first["this_run"]["stopped_by_budget"]
    assert stopped > 0 and first["rejected_by_reason"] == {"teacher:budget": stopped}
    assert "max_cost_usd reached" in first["this_run"]["budget_note"]
    # The rerun submits exactly what was held back; no line ever rode in two batches.
    assert second["batch"]["translator"]["answered"] == held
    assert second["batch"]["translator"]["held_back_by_budget"] == 0
    assert second["rows"] == 8 and second["rejected"] == 0
    assert max(server.batch_lines.values()) == 1


@pytest.mark.slow
def test_a_live_translator_feeding_batch_solves_spends_one_budget_and_reports_it(
    ray_cluster, api_key, tmp_path
):
    with FakeTeacher(expected_key=API_KEY) as translator, FakeTeacher(expected_key=API_KEY) as reasoner:
        raw = _roles_recipe(tmp_path, translator, reasoner, batch=True, batch_poll_s=0.05)
        # One request at a time: the budget stops the translator after its first reply.
        raw["teachers"]["translator"].update(concurrency=1, max_cost_usd=1e-9)
        summary = synthesize(recipe_from_dict(raw)).summary

    # The live pass before the batch paid once; the pipeline's translator did not start a new budget.
    assert sum(translator.paid.values()) == 1 and reasoner.requests == 0
    line = summary["batch"]["translator"]
    assert line["live"] and line["answered"] == 1 and line["cost_usd"] > 0
    assert summary["this_run"]["cost"] >= line["cost_usd"]
    stopped = summary["this_run"]["stopped_by_budget"]
    assert stopped > 0 and summary["rejected_by_reason"] == {"teacher:budget": stopped}


def test_an_unfinished_batch_belongs_to_the_section_that_sent_it(tmp_path):
    solver, translator = SamplingParams(0.6, 0.95, 16384), SamplingParams(0.0, 1.0, 4096)
    mine = BatchStates(tmp_path, "gpt-4o", solver)
    mine.save({"batch_id": "b1", "model": "gpt-4o", "owner": mine.owner, "status": "in_progress"})
    mine.save({"batch_id": "b2", "model": "gpt-4o", "owner": mine.owner, "status": "collected"})
    # A file written before batches named their section: matched by its model alone.
    old = {"batch_id": "b0", "model": "gpt-4o", "status": "validating"}
    (tmp_path / "b0.json").write_text(json.dumps(old))

    assert [s["batch_id"] for s in mine.unfinished()] == ["b0", "b1"]
    # The same model asked with other sampling (another role) does not collect, or pay for, b1.
    assert [s["batch_id"] for s in BatchStates(tmp_path, "gpt-4o", translator).unfinished()] == ["b0"]
    assert BatchStates(tmp_path, "deepseek-reasoner", solver).unfinished() == []


class Killed(BaseException):
    """The process dying at a chosen line (no ``except Exception`` catches it)."""


def test_a_batch_created_but_never_recorded_is_found_by_its_token_and_not_paid_again(tmp_path, monkeypatch):
    """Killed after the provider created the batch but before its state file: the next run finds the
    batch by the token it wrote down first (batch metadata) and collects it; no second batch."""
    import asyncio

    from l2ray.recipe import TeacherConfig
    from l2ray.teacher.base import Secret
    from l2ray.teacher.batch import BatchRequest, run_batch
    from l2ray.teacher.cache import ResponseCache

    requests = [BatchRequest(f"fp-{n}", [{"role": "user", "content": f"question {n}"}]) for n in range(3)]
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64)
    cache = ResponseCache(tmp_path / "cache")
    record = BatchStates.save

    def dies_before_the_record(self, state):
        if "batch_id" in state:
            raise Killed
        record(self, state)

    with FakeTeacher(expected_key=API_KEY, batch_polls=1) as server:
        config = TeacherConfig(**teacher_section(server, batch=True, batch_poll_s=0.01))
        monkeypatch.setattr(BatchStates, "save", dies_before_the_record)
        with pytest.raises(Killed):
            asyncio.run(run_batch(config, cache, requests, params, Secret(API_KEY)))
        monkeypatch.undo()
        assert list(server.batches) == ["batch_0"] and list(
            (tmp_path / "cache" / "batches").glob("*.pending")
        )
        report = asyncio.run(run_batch(config, cache, requests, params, Secret(API_KEY)))
    assert list(server.batches) == ["batch_0"]  # found, not submitted again
    assert report.collected == ["batch_0"] and report.submitted == []
    assert all(r.fingerprint in cache for r in requests) and max(server.batch_lines.values()) == 1
    assert not list((tmp_path / "cache" / "batches").glob("*.pending"))
