"""The pilot on a real tokenizer: SmolLM2 (base, untrained) asked the same lab problems in each language —
accuracy and answer tokens per language, and what its 49,152-token BPE vocabulary costs per character
of each language's text (the tokenizer effect, apart from the model's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2ray.recipe import load_recipe

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_pilot_runs_on_smollm2s_own_tokenizer(ray_cluster, smollm2_path, tmp_path):
    import json

    from l2ray.eval.api import run_pilot
    from l2ray.lab.study import translate_questions

    overrides = [
        f"output_dir={tmp_path}",
        f"student.model={smollm2_path}",
        "eval.engine=transformers",
        "eval.instruction=true",
        "eval.limit=2",
        "eval.max_tokens=24",
        "eval.pilot_languages=[zh, ru]",
    ]
    recipe = load_recipe(REPO / "configs" / "real.yaml", overrides)
    result = run_pilot(recipe, translate=translate_questions)
    rows = json.loads((result.out_dir / "summary.json").read_text())["per_language"]
    assert set(rows) == {"en", "zh", "ru"}
    assert all(row["failures"] == 0 and row["thinking_tokens_mean"] == 0 for row in rows.values())
    # A Latin-script BPE: Chinese and Russian text cost more tokens per character than English.
    assert rows["zh"]["tokens_per_char"] > rows["en"]["tokens_per_char"]
    assert rows["ru"]["tokens_per_char"] > rows["en"]["tokens_per_char"]
