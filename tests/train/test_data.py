"""The data side of training, on the driver: mix selection, trace checks, encoding and masking.

These run without Ray; the checks must fail before any worker starts.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from l2ray.recipe import MixConfig, TrainConfig
from l2ray.train.api import train
from l2ray.train.examples import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_example,
    micro_batch,
)
from l2ray.train.mix import TrainDataError, rank_share, read_traces, select_mix
from l2ray.train.model import training_tokenizer
from l2ray.train.schedule import plan_steps, rank_items, rows_per_rank, run_steps


def test_mix_selects_kinds_languages_seeds_and_ratios(rows):
    # rows: 10 original (en), 3 mixed (en+zh), 1 whole (fr)
    everything = select_mix(rows, MixConfig(), ["zh", "fr"], seed=0)
    assert everything.summary()["rows_per_kind"] == {"mixed": 3, "original": 10, "whole": 1}

    no_chinese = select_mix(rows, MixConfig(languages=["en", "fr"]), ["zh", "fr"], seed=0)
    assert {r.kind for r in no_chinese.rows} == {"original", "whole"}

    six_seeds = select_mix(rows, MixConfig(kinds=["original"], max_seeds=6), ["zh"], seed=0)
    assert len(six_seeds.rows) == 6 and len(six_seeds.seed_ids) == 6
    assert (
        six_seeds.seed_ids == select_mix(rows, MixConfig(kinds=["original"], max_seeds=6), ["zh"], 0).seed_ids
    )

    # 3 mixed rows at twice the share of original: the mixed rows bound the total (3 + 1.5 ≈ 2).
    ratio = select_mix(
        rows, MixConfig(kinds=["original", "mixed"], ratios={"original": 1, "mixed": 2}), ["zh"], 0
    )
    assert ratio.summary()["rows_per_kind"] == {"mixed": 3, "original": 2}

    assert (
        everything.fingerprint
        == select_mix(list(reversed(rows)), MixConfig(), ["zh", "fr"], seed=0).fingerprint
    )
    assert everything.fingerprint != no_chinese.fingerprint
    assert sorted(everything.summary()["row_ids"]) == sorted(r.id for r in rows)


def test_train_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="does not select"):
        MixConfig(kinds=["original"], ratios={"mixed": 1.0})
    with pytest.raises(ValueError, match=r"gives no share to kinds \['whole'\]"):
        MixConfig(kinds=["original", "whole"], ratios={"original": 1.0})
    with pytest.raises(ValueError, match="fsdp2 shards full fine-tuning only"):
        TrainConfig(strategy="fsdp2", mode="lora")


def test_rank_shares_are_fixed_disjoint_and_complete():
    records = [{"id": f"row-{i:02d}"} for i in range(11)]
    shares = [rank_share(records, rank, 3) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 4, 3]  # uneven: no row is dropped
    assert sorted(r["id"] for share in shares for r in share) == sorted(r["id"] for r in records)
    # The order Ray Data delivers rows in does not matter: a restarted worker gets the same share.
    assert rank_share(list(reversed(records)), 1, 3) == shares[1]


def test_plan_steps_splits_rows_evenly_over_workers():
    two_by_two = TrainConfig(num_workers=2, batch_size=2, grad_accum=2, epochs=2)
    assert plan_steps(rows_per_rank(14, 2), two_by_two) == (2, 4)
    assert plan_steps(rows_per_rank(14, 2), TrainConfig(num_workers=2, max_steps=5)) == (7, 5)
    # o1-6 on 16 workers: each worker's one row (or target-free stand-in) makes an epoch one step.
    assert plan_steps(rows_per_rank(6, 16), TrainConfig(num_workers=16, epochs=5)) == (1, 5)


def test_the_driver_plans_the_steps_the_packed_workers_take(student_path, rows):
    """Packed, a rank's step count is its packs': the driver's total (its progress bar and the
    schedule) is what the worker with the most packs needs, and every worker can take it."""
    records = select_mix(rows, MixConfig(), ["zh", "fr"], seed=0).training_records()
    tokenizer = training_tokenizer(student_path)
    config = TrainConfig(num_workers=3, packing=True, max_seq_len=1024, batch_size=1, grad_accum=1, epochs=2)
    planned = run_steps(records, tokenizer, config, seed=0)
    packs = [len(rank_items(records, rank, 3, tokenizer, config, seed=0).items) for rank in range(3)]
    shares = rows_per_rank(len(records), 3)
    assert sum(packs) < sum(shares)  # traces share rows: the unpacked count would be wrong
    assert planned == (max(packs), 2 * max(packs))
    assert planned != plan_steps(shares, config.model_copy(update={"packing": False}))


def test_zero_rows_fail_before_any_worker_starts(make_recipe, traces_dir):
    recipe = make_recipe("zero-rows", mix={"kinds": ["whole"], "languages": ["en", "zh"]})
    with pytest.raises(TrainDataError, match="selects 0 of 14 rows") as info:
        train(recipe, traces_dir)
    assert "whole" in str(info.value) and "fr" in str(info.value)
    assert not (recipe.run_dir / "train" / "ray").exists()


def test_missing_column_names_the_file_and_column(tmp_path, rows, write_traces, make_recipe):
    folder = write_traces(tmp_path / "bad", [r.model_dump(exclude={"response"}) for r in rows])
    with pytest.raises(TrainDataError, match=r"part-0000\.parquet: missing column\(s\) \['response'\]"):
        train(make_recipe("missing-column"), folder)


def test_unregistered_tag_names_the_row(tmp_path, rows, write_traces):
    records = [r.model_dump() for r in rows]
    records[4]["cot"] = "<|lang:en|>So x = 2. <|lang:xx|>Hmm."
    folder = write_traces(tmp_path / "bad", records)
    with pytest.raises(TrainDataError, match=r"row 4 \(id '.*'\), field 'cot': language\(s\) \['xx'\]"):
        read_traces(folder)
    with pytest.raises(TrainDataError, match="no trace shards"):
        read_traces(tmp_path / "empty")


def test_loss_mask_covers_exactly_the_assistant_turn(student_path, rows):
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    row = rows[-2]  # a code-switched trace
    assistant = row.messages()[1]["content"]
    example = encode_example(tokenizer, row.question, assistant, max_seq_len=4096)
    targets = [t for t in example.labels if t != IGNORE_INDEX]
    context = example.input_ids[: len(example.input_ids) - len(targets)]
    # The generation prompt (which opens <think>) is context; the rest of the turn is the target.
    assert tokenizer.decode(context).endswith("<|im_start|>assistant\n<think>\n")
    assert tokenizer.decode(targets) == assistant.removeprefix("<think>\n") + "<|im_end|>\n"
    assert "<|lang:zh|>" in tokenizer.convert_ids_to_tokens(targets)
    assert not example.truncated

    cut = encode_example(tokenizer, row.question, assistant, max_seq_len=64)
    assert cut.truncated and len(cut.input_ids) == 64
    assert cut.dropped_tokens == len(example.input_ids) - 64

    batch = collate([cut, example], pad_token_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, len(example.input_ids))
    assert int(batch["attention_mask"][0].sum()) == 64
    assert (batch["labels"][0, 64:] == IGNORE_INDEX).all()


def test_micro_batches_cover_every_example_once_per_pass_and_replay_identically():
    examples = [Example([i], [i], truncated=False, dropped_tokens=0) for i in range(7)]
    first_pass = [micro_batch(examples, index, 3, seed=5) for index in range(3)]
    assert [len(b) for b in first_pass] == [3, 3, 1]
    assert sorted(e.input_ids[0] for b in first_pass for e in b) == list(range(7))
    second_pass = [e.input_ids[0] for index in range(3, 6) for e in micro_batch(examples, index, 3, seed=5)]
    assert second_pass != [e.input_ids[0] for b in first_pass for e in b]  # reshuffled per pass
    assert micro_batch(examples, 4, 3, seed=5) == micro_batch(examples, 4, 3, seed=5)  # resume replays
    assert micro_batch(examples, 0, 3, seed=5, rank=1) != first_pass[0]  # ranks draw their own order


def test_cli_train_reports_unusable_data_with_status_2(tmp_path, traces_dir):
    from typer.testing import CliRunner

    from l2ray.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: cli-zero\noutput_dir: {tmp_path / 'runs'}\ntrain:\n  mix:\n    kinds: [whole]\n"
    )
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(recipe), "--traces", str(traces_dir), "--set", "train.mix.languages=[en]"],
    )
    assert result.exit_code == 2
    assert "selects 0 of 14 rows" in result.output
