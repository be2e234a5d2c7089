import json

import pytest

from l2ray.data.seeds import SeedError, bundled_file, load_seeds
from l2ray.recipe import SeedsConfig
from l2ray.text import segment

BESPOKE_REPLY = (
    "<|begin_of_thought|>\n\n2^3 = 8. Hmm, yes.\n\n<|end_of_thought|>\n\n"
    "<|begin_of_solution|>\n\nThe answer is $\\boxed{8}$.\n\n<|end_of_solution|>"
)
GOOD = {"id": "a", "question": "What is $1+1$?", "cot": "1+1=2. Wait, yes.", "answer": "2"}


def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_bundled_seeds_are_long_reflective_cots_with_boxed_answers():
    result = load_seeds(SeedsConfig())
    assert result.failures == []
    assert len(result.rows) >= 8
    for row in result.rows:
        assert len(segment(row.cot)) >= 5, row.id
        assert "\\boxed{" in row.final_response()


def test_bundled_mini_eval_set_is_disjoint_from_seeds():
    problems = [json.loads(line) for line in bundled_file("mini_eval.jsonl").read_text().splitlines() if line]
    assert len(problems) >= 30
    assert all(p["question"] and p["answer"] for p in problems)
    seed_questions = {r.question for r in load_seeds(SeedsConfig()).rows}
    assert not seed_questions & {p["question"] for p in problems}


def test_malformed_rows_raise_with_file_row_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [GOOD, {**GOOD, "id": "b", "cot": ""}])
    with pytest.raises(SeedError) as info:
        load_seeds(SeedsConfig(source=str(path)))
    message = str(info.value)
    assert str(path) in message and "row 2" in message and "'cot'" in message and "on_error=skip" in message


def test_skip_records_every_bad_row_with_its_reason(tmp_path):
    rows = [
        GOOD,
        "{not json",
        {**GOOD, "id": "b", "answer": None},
        {**GOOD, "id": "a"},
        ["a", "list"],
        {**GOOD, "id": "c", "question": 7},
        {**GOOD, "id": "d", "answer": 42},
    ]
    path = _write_jsonl(tmp_path / "s.jsonl", rows)
    result = load_seeds(SeedsConfig(source=str(path), on_error="skip"))
    assert [r.id for r in result.rows] == ["a", "d"]
    assert result.rows[1].answer == "42"
    reasons = {(f.row, f.field): f.reason for f in result.failures}
    assert reasons[(2, "<row>")].startswith("not valid JSON")
    assert reasons[(3, "answer")] == "missing"
    assert reasons[(4, "id")] == "duplicate id 'a'"
    assert reasons[(5, "<row>")] == "not a JSON object"
    assert reasons[(6, "question")] == "expected text, got int"
    assert len(result.rows) + len(result.failures) == len(rows)
    written = result.write_failures(tmp_path / "failures.jsonl").read_text().splitlines()
    assert len(written) == 5 and json.loads(written[0])["row"] == 2


def test_rows_of_odd_shapes_and_bad_bytes_cost_their_row_not_the_load(tmp_path):
    bespoke = {
        "id": "b1",
        "conversations": [{"from": "user", "value": ["not", "text"]}, {"from": "assistant", "value": 3}],
    }
    path = tmp_path / "s.jsonl"
    with path.open("wb") as fh:
        fh.write((json.dumps(GOOD) + "\n").encode())
        fh.write(b'{"id": "x", "question": "caf\xe9?"}\n')  # Latin-1, not UTF-8
        fh.write((json.dumps(bespoke) + "\n").encode())
        fh.write((json.dumps({**GOOD, "id": "z"}) + "\n").encode())
    result = load_seeds(SeedsConfig(source=str(path), on_error="skip"))
    assert [r.id for r in result.rows] == [GOOD["id"], "z"]
    reasons = {f.row: f.reason for f in result.failures}
    assert reasons[2] == "not UTF-8 text (bad byte at offset 28)"
    assert sorted(reasons) == [2, 3] and reasons[3].split(":")[0] in {"TypeError", "ValueError"}
    with pytest.raises(SeedError, match=r"row 2.*not UTF-8"):
        load_seeds(SeedsConfig(source=str(path)))


def test_parquet_and_limit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pylist([{**GOOD, "id": f"r{i}"} for i in range(5)]), path)
    result = load_seeds(SeedsConfig(source=str(path), limit=3))
    assert [r.id for r in result.rows] == ["r0", "r1", "r2"]


def test_hf_datasets_field_maps_through_saved_datasets(tmp_path):
    import datasets

    s1k = datasets.Dataset.from_list(
        [
            {
                "question": "Find $x$.",
                "solution": "Since ... we get $\\boxed{5}$.",
                "attempt": "x is $\\boxed{5}$",
                "thinking_trajectories": ["Let x... Wait, x = 5."],
                "cot_type": "math",
            }
        ]
    )
    s1k.save_to_disk(tmp_path / "s1k")
    bespoke = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [
                    {
                        "system": "sys",
                        "conversations": [
                            {"from": "user", "value": "Compute $2^3$."},
                            {
                                "from": "assistant",
                                "value": BESPOKE_REPLY,
                            },
                        ],
                    }
                ]
            )
        }
    )
    bespoke.save_to_disk(tmp_path / "bespoke")
    limo = datasets.Dataset.from_list([{"question": "Q?", "solution": "Long. Wait, sure.", "answer": "3"}])
    limo.save_to_disk(tmp_path / "limo")

    row = load_seeds(SeedsConfig(source=str(tmp_path / "s1k"))).rows[0]
    assert (row.cot, row.answer, row.solution) == ("Let x... Wait, x = 5.", "5", "x is $\\boxed{5}$")
    row = load_seeds(SeedsConfig(source=str(tmp_path / "bespoke"), field_map="bespoke")).rows[0]
    assert (row.question, row.cot, row.answer) == ("Compute $2^3$.", "2^3 = 8. Hmm, yes.", "8")
    row = load_seeds(SeedsConfig(source=str(tmp_path / "limo"))).rows[0]
    assert (row.cot, row.answer) == ("Long. Wait, sure.", "3")
    assert row.id and row.id == load_seeds(SeedsConfig(source=str(tmp_path / "limo"))).rows[0].id

    with pytest.raises(SeedError, match="splits \\['train'\\], not 'test'"):
        load_seeds(SeedsConfig(source=str(tmp_path / "bespoke"), split="test"))


def test_unrecognised_fields_and_custom_field_map(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [{"q": "Q?", "reasoning": "R. Wait, ok.", "gold": "1"}])
    with pytest.raises(SeedError, match="cannot tell the format"):
        load_seeds(SeedsConfig(source=str(path)))
    mapping = {"question": "q", "cot": "reasoning", "answer": "gold"}
    row = load_seeds(SeedsConfig(source=str(path), field_map=mapping)).rows[0]
    assert (row.question, row.cot, row.answer) == ("Q?", "R. Wait, ok.", "1")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SeedError, match="does not exist"):
        load_seeds(SeedsConfig(source=str(tmp_path / "nope.jsonl")))
