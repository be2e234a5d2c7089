"""serve_config.yaml deploys the graph: every key is one Serve or the builder knows (Serve itself
silently accepts unknown keys), and the args validate against `ServeConfig`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from l2ray.recipe import ServeConfig
from l2ray.serve.app import ServeArgsError, validate_args

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"
DEPLOYMENTS = {"Ingress", "Generator"}


def test_serve_config_keys_are_all_known():
    raw = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(raw)
    assert set(raw) <= set(ServeDeploySchema.model_fields)
    for app in raw["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), set(app) - set(
            ServeApplicationSchema.model_fields
        )
        assert app["import_path"] == "l2ray.serve.app:build_app"
        assert set(app["args"]) <= set(ServeConfig.model_fields), set(app["args"]) - set(
            ServeConfig.model_fields
        )
        config = validate_args(app["args"])
        assert config.model
        for deployment in app.get("deployments", []):
            assert deployment["name"] in DEPLOYMENTS
            assert set(deployment) <= set(DeploymentSchema.model_fields)


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"model": "builtin:tiny", "replicaz": 2}, "replicaz: unknown field"),
        ({"model": "builtin:tiny", "num_cpus": -1}, "num_cpus"),
        ({"model": "builtin:tiny", "autoscaling": {"min_replicas": 3, "max_replicas": 1}}, "autoscaling"),
        ({"num_cpus": 1}, "'model' is required"),
        (
            {"model": "builtin:tiny", "graph": "direct", "generator_url": "http://127.0.0.1:1/v1"},
            "with generator_url there is no Generator",
        ),
    ],
)
def test_builder_rejects_bad_args(args, needle):
    with pytest.raises((ServeArgsError, ValueError), match=needle):
        validate_args(args)
