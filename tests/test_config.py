from pathlib import Path

import pytest

from l2ray.recipe import RecipeError, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_demo_recipe_loads_with_defaults_and_absolute_paths():
    recipe = load_recipe(REPO / "configs" / "demo.yaml")
    assert recipe.name == "demo"
    assert recipe.languages == ["zh", "ja", "de", "fr", "ru"]
    assert recipe.student.model == "builtin:lab" and recipe.teacher.kind == "python"
    assert recipe.run_dir.is_absolute()
    assert recipe.tracking_uri == f"sqlite:///{recipe.run_dir / 'mlflow.db'}"
    assert recipe.registered_model_name == "demo"


def test_replicas_may_share_one_gpu_when_the_engine_needs_one():
    recipe = recipe_from_dict({"name": "x"}, ["serve.engine=vllm", "serve.num_gpus=0.5", "eval.engine=vllm"])
    assert recipe.serve.num_gpus == 0.5
    assert recipe_from_dict({"name": "x"}, ["eval.engine=vllm", "eval.num_gpus=0.25"]).eval.num_gpus == 0.25


def test_dotted_overrides_are_parsed_as_yaml():
    recipe = recipe_from_dict(
        {"name": "x"}, ["train.lr=2e-5", "train.mode=lora", "languages=[ko, ru]", "eval.samples=4"]
    )
    assert recipe.train.lr == pytest.approx(2e-5)
    assert recipe.train.mode == "lora"
    assert recipe.languages == ["ko", "ru"]
    assert recipe.eval.samples == 4


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lr=fast"], ["train.lr", "'fast'", "valid number"]),
        (["train.lr=-1"], ["train.lr", "-1", "greater than 0"]),
        (["train.mode=qlora"], ["train.mode", "'qlora'", "'full' or 'lora'"]),
        (["languages=[zh, xx]"], ["languages", "unknown language code 'xx'", "registered codes:"]),
        (["train.epoch=3"], ["train.epoch", "unknown field", "Did you mean 'epochs'"]),
        (["train.learning_rate=1e-5"], ["train.learning_rate", "unknown field", "Allowed: mode"]),
        (["synth.p_switch=1.5"], ["synth.p_switch", "1.5", "less than or equal to 1"]),
        (["eval.configurations={boost: {boost: [klingon]}}"], ["eval.configurations.boost.boost", "klingon"]),
        (["synth.language_weights={zh: 1, xx: 2}"], ["unknown language code 'xx'"]),
        (["train.mix.languages=[fr, qq]"], ["unknown language code 'qq'"]),
        (
            ["eval.engine=vllm", "eval.replicas=2", "eval.num_gpus=1", "eval.vllm.tensor_parallel_size=2"],
            ["eval.num_gpus (1) is what each vLLM replica reserves", "set eval.num_gpus: 2"],
        ),
        (
            ["serve.engine=vllm", "serve.num_gpus=2"],
            ["serve.num_gpus (2) is what each vLLM replica reserves", "set serve.num_gpus: 1"],
        ),
    ],
)
def test_invalid_recipe_names_field_value_and_what_is_allowed(overrides, expected):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"name": "x"}, overrides, origin="r.yaml")
    message = str(info.value)
    assert "r.yaml" in message
    for fragment in expected:
        assert fragment in message


def test_missing_name_and_bad_name_are_reported():
    with pytest.raises(RecipeError, match="name: required field is missing"):
        recipe_from_dict({})
    with pytest.raises(RecipeError, match="name: got 'Has Spaces'"):
        recipe_from_dict({"name": "Has Spaces"})


def test_bad_yaml_and_bad_override_syntax(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match=r"not of the form key\.sub=value"):
        recipe_from_dict({"name": "x"}, ["train.lr"])
    with pytest.raises(RecipeError, match="'lr' is a value, not a section"):
        recipe_from_dict({"name": "x", "train": {"lr": 1.0}}, ["train.lr.x=1"])


def test_extends_merges_sections_and_detects_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nlanguages: [zh]\ntrain:\n  lr: 1.0e-5\n  epochs: 5\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\ntrain:\n  lr: 2.0e-5\n")
    recipe = load_recipe(tmp_path / "child.yaml")
    assert (recipe.name, recipe.languages, recipe.train.lr, recipe.train.epochs) == ("child", ["zh"], 2e-5, 5)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
