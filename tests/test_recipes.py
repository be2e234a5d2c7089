from pathlib import Path

import pytest

from l2ray.recipe import load_recipe

PAPER = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipe_is_valid_and_gpu_scaled(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.student.model.startswith("Qwen/Qwen2.5-")
    assert recipe.train.use_gpu and recipe.train.num_workers >= 1
    assert len(recipe.languages) == 10 and "en" not in recipe.languages


def test_every_l2_recipe_has_its_english_only_baseline():
    names = {p.stem for p in PAPER}
    l2 = {n.removesuffix("-l2") for n in names if n.endswith("-l2")}
    assert l2 == {n.removesuffix("-en") for n in names if n.endswith("-en")}
    assert {"o1-6", "s1k-100", "s1k-651", "s1k-1000", "bespoke-500"} <= l2
    for stem in l2:
        with_l2 = load_recipe(PAPER[0].parent / f"{stem}-l2.yaml")
        english = load_recipe(PAPER[0].parent / f"{stem}-en.yaml")
        assert with_l2.seeds == english.seeds
        assert set(with_l2.synth.kinds) == {"original", "whole", "mixed"}
        assert english.synth.kinds == ["original"] and english.train.mix.kinds == ["original"]
