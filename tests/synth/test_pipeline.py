"""End to end on Ray Data against real HTTP servers on 127.0.0.1: accounting, resume, kill, secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from fake_teacher import FakeTeacher
from synth_helpers import API_KEY, seed_record, teacher_section, write_seeds

from l2ray.recipe import recipe_from_dict
from l2ray.synth.api import MissingResponsesError, synthesize
from l2ray.text import segment

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, seeds: Path, teacher: dict, languages: list[str], **synth) -> dict:
    return {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "languages": languages,
        "seeds": {"source": str(seeds), "on_error": "skip"},
        "teacher": teacher,
        "synth": {"actors": 1, "p_switch": 1.0, "progress": False, **synth},
    }


def _table(folder: Path) -> list[dict]:
    return [row for shard in sorted(folder.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def test_every_seed_is_accounted_for_and_the_key_never_leaks(
    ray_cluster, fake_teacher, api_key, tmp_path, capfd
):
    records = [
        seed_record(0),
        seed_record(1),
        seed_record(2, answer=99),
        seed_record(3, marker="[[ALWAYS500]] "),
    ]
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        records,
        ("{not json", json.dumps({"id": "s9", "question": "q", "cot": "c"})),
    )
    recipe = recipe_from_dict(_recipe(tmp_path, seeds, teacher_section(fake_teacher), ["zh", "fr"]))

    summary = synthesize(recipe).summary

    assert summary["seeds"] == {"loaded": 4, "failed": 2, "without_rows": []}
    failures = [json.loads(x) for x in (recipe.run_dir / "synth/failures.jsonl").read_text().splitlines()]
    assert [(f["row"], f["field"]) for f in failures] == [(5, "<row>"), (6, "answer")]
    traces, rejected = _table(recipe.run_dir / "synth/traces"), _table(recipe.run_dir / "synth/rejected")
    assert Counter(r["kind"] for r in traces) == {"original": 4, "whole": 4, "mixed": 4}
    assert Counter((r["seed_id"], r["reason"]) for r in rejected) == {
        ("s2", "wrong_answer"): 2,
        ("s3", "teacher:http_500"): 2,
    }
    assert len({r["id"] for r in traces + rejected}) == len(traces) + len(rejected) == 16
    assert summary["rows_by_language"]["whole"] == {"zh": 2, "fr": 2}
    assert set(fake_teacher.fault_counts) >= {"rate_limit", "server_error", "timeout", "drop", "malformed"}
    assert all(r["cot"].startswith("<|lang:") for r in traces)
    assert (recipe.run_dir / "synth/preview.jsonl").read_text().count("\n") == 9  # 3 per kind

    before = fake_teacher.requests
    again = synthesize(recipe).summary
    assert again["tasks"] == {"planned": 16, "run": 2, "skipped_existing": 14}  # only failed requests retry
    assert fake_teacher.requests - before == 2 * 4  # two question translations, 1 + max_retries attempts
    assert len(_table(recipe.run_dir / "synth/rejected")) == 4 and again["rows"] == 12

    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    written = [p for p in [*recipe.run_dir.rglob("*"), *session.glob("logs/*")] if p.is_file()]
    assert written and not [p for p in written if API_KEY.encode() in p.read_bytes()]
    captured = capfd.readouterr()
    assert API_KEY not in captured.out + captured.err


def test_two_actors_send_each_request_once_and_odd_replies_cost_one_row(ray_cluster, api_key, tmp_path):
    """Three identical mixed plans per seed and a seed that repeats another's question and CoT: every
    request reaches the teacher once, although two actors share the work. A reply cut off at
    max_tokens, one with our markup and one with a malformed usage field each cost at most one row."""
    records = [
        seed_record(0),
        {**seed_record(0), "id": "s0-again"},
        seed_record(1),
        seed_record(2, marker="[[CUTOFF]] "),
        seed_record(3, marker="[[MARKUP]] "),
        seed_record(4, marker="[[BADUSAGE]] "),
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", records)
    with FakeTeacher() as server:
        # One target language: each mixed plan switches the same fragments into zh.
        raw = _recipe(tmp_path, seeds, teacher_section(server), ["zh"], actors=2, mixed_per_seed=3)
        recipe = recipe_from_dict(raw)
        summary = synthesize(recipe).summary

    assert server.by_fingerprint and max(server.by_fingerprint.values()) == 1  # no request sent twice
    assert summary["this_run"]["requests_sent"] == len(server.by_fingerprint)
    traces, rejected = _table(recipe.run_dir / "synth/traces"), _table(recipe.run_dir / "synth/rejected")
    assert len({r["id"] for r in traces + rejected}) == len(traces) + len(rejected) == 6 * 5
    assert {(r["seed_id"], r["kind"], r["reason"]) for r in rejected} == {
        ("s2", "whole", "truncated"),
        ("s3", "whole", "teacher_markup"),
    }
    assert "teacher.max_tokens" in next(r["detail"] for r in rejected if r["reason"] == "truncated")
    assert {r["seed_id"] for r in traces if r["kind"] == "whole"} == {"s0", "s0-again", "s1", "s4"}


def test_a_killed_run_resumes_without_duplicates_or_resent_requests(ray_cluster, api_key, tmp_path):
    seeds = write_seeds(tmp_path / "seeds.jsonl", [seed_record(i) for i in range(6)])
    with FakeTeacher(latency=0.25, expected_key=API_KEY) as server:
        teacher = teacher_section(server, concurrency=2, read_timeout_s=5)
        raw = _recipe(tmp_path, seeds, teacher, ["zh", "fr", "de"])
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
        env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
        log = (tmp_path / "driver.log").open("w")
        driver = subprocess.Popen(
            [sys.executable, "-m", "l2ray.cli", "synth", "--config", str(tmp_path / "recipe.yaml")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 150
        while sum(server.succeeded.values()) < 12 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        recipe = recipe_from_dict(raw)
        finished = {
            json.loads(line)["fingerprint"]
            for shard in (recipe.run_dir / "teacher_cache").glob("*.jsonl")
            for line in shard.read_text().splitlines()
            if line.endswith("}")
        }
        assert (
            10 <= len(finished) < 48
        )  # killed mid-way (2 replies may be in flight): 6 seeds x (3 languages x 2 + 2 fragments)

        summary = synthesize(recipe).summary

    assert all(server.by_fingerprint[fp] == 1 for fp in finished)  # no finished request sent again
    traces = _table(recipe.run_dir / "synth/traces")
    assert len(traces) == len({r["id"] for r in traces}) == 30 and summary["rejected"] == 0
    assert summary["this_run"]["cache_hits"] >= len(finished)
    assert API_KEY not in (tmp_path / "driver.log").read_text()


def test_without_an_endpoint_recorded_content_answers_and_misses_are_listed(ray_cluster, tmp_path):
    seed = seed_record(5)
    fragments = segment(seed["cot"])
    recorded = [
        {"kind": "question", "seed_id": "s5", "lang": "zh", "text": "设 $a = 15$。求 $a$ 的值。"},
        {
            "kind": "whole",
            "seed_id": "s5",
            "lang": "zh",
            "cot": "题目直接给出了这个值，不需要计算。",
            "response": "答案是 $\\boxed{15}$。",
        },
        {
            "kind": "fragment",
            "seed_id": "s5",
            "lang": "zh",
            "index": 1,
            "source": fragments[1],
            "text": "等等，再检查一次：$a$ 被定义为 $15$。",
        },
    ]
    (tmp_path / "recorded").mkdir()
    (tmp_path / "recorded/zh.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in recorded)
    )
    seeds = write_seeds(tmp_path / "seeds.jsonl", [seed])
    teacher = {"recorded_dir": str(tmp_path / "recorded")}

    with pytest.raises(MissingResponsesError) as missing:
        synthesize(recipe_from_dict(_recipe(tmp_path, seeds, teacher, ["zh", "fr"])))
    message = str(missing.value)
    assert "seed s5: question translation into fr" in message and "no recorded content for fr" in message
    assert "into zh" not in message

    summary = synthesize(recipe_from_dict(_recipe(tmp_path, seeds, teacher, ["zh"]))).summary
    assert summary["rows_by_kind"] == {"original": 1, "whole": 1, "mixed": 1}
    assert summary["this_run"]["requests_sent"] == 0 and summary["this_run"]["cache_hits"] == 3
