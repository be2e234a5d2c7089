from pathlib import Path

import pytest

from l2ray.config import RecipeError, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_demo_recipe_loads_with_defaults_and_absolute_paths():
    recipe = load_recipe(REPO / "configs" / "demo.yaml")
    assert recipe.name == "demo"
    assert recipe.languages == ["zh", "ja", "fr", "de"]
    assert recipe.run_dir.is_absolute()
    assert recipe.tracking_uri == f"sqlite:///{recipe.run_dir / 'mlflow.db'}"
    assert recipe.registered_model_name == "demo"


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
        (["languages=[zh, xx]"], ["languages", "unknown language code 'xx'", "registered:"]),
        (["train.epoch=3"], ["train.epoch", "unknown field", "Did you mean 'epochs'"]),
        (["train.learning_rate=1e-5"], ["train.learning_rate", "unknown field", "Allowed: mode"]),
        (["synth.p_switch=1.5"], ["synth.p_switch", "1.5", "less than or equal to 1"]),
        (["eval.configurations={boost: {boost: [klingon]}}"], ["eval configuration 'boost'", "klingon"]),
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
