"""Every KubeRay/Kubernetes manifest validates strictly (no unknown fields) and the overlays build."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The KubeRay v1.7 CRDs (ray-project/kuberay, ray-operator/config/crd/bases) live beside the checkout in
# CI; point L2RAY_KUBERAY_CRDS at a copy elsewhere.
CRDS = Path(os.environ.get("L2RAY_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
KUBERAY_KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
K8S_VERSION = "1.32"
OVERLAYS = sorted(p.parent.name for p in (REPO / "k8s" / "overlays").glob("*/kustomization.yaml"))
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
ACCOUNT_VARIABLES = (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password"))


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed on this machine")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_overlays_cover_cpu_demo_and_gpu():
    assert {"cpu-demo", "gpu"} <= set(OVERLAYS)


def test_every_built_document_validates_strictly(overlay):
    kinds = {doc["kind"] for doc in overlay}
    assert {"RayCluster", "RayJob", "RayService", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    for doc in overlay:
        _validate(doc)


def test_base_files_validate_strictly():
    for path in sorted((REPO / "k8s" / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            _validate(doc)


def test_rayservice_serves_exactly_serve_config_yaml():
    serve_config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    docs = yaml.safe_load_all((REPO / "k8s" / "base" / "rayservice.yaml").read_text())
    service = next(d for d in docs if d["kind"] == "RayService")
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == serve_config
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)


def test_clusters_use_token_auth_and_secrets_only_by_reference(overlay):
    assert not [d for d in overlay if d["kind"] == "Secret"], "secrets are created by the user, never shipped"
    for doc in overlay:
        if doc["kind"] in KUBERAY_KINDS:
            for cluster in _cluster_specs(doc):
                assert cluster["authOptions"]["mode"] == "token"
        for env in _env_entries(doc):
            if any(word in env["name"] for word in SECRET_WORDS):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


def test_the_registry_runs_the_auth_app_on_postgres_behind_network_policies(overlay):
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in overlay}
    [mlflow] = by_name[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    script = mlflow["args"][0]
    assert "mlflow server --app-name basic-auth" in script and '--backend-store-uri "$DB/mlflow"' in script
    assert 'DB="postgresql+psycopg2://mlflow:${DB_PASSWORD}@mlflow-postgres:5432"' in script
    assert "default_permission = NO_PERMISSIONS" in script and "database_uri = %s/mlflow_auth" in script
    env = {e["name"]: e for e in mlflow["env"]}
    assert len(env) == len(mlflow["env"]) and {"MLFLOW_AUTH_CONFIG_PATH", "ARTIFACTS_DESTINATION"} <= set(env)
    for name in ("DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name

    database = by_name[("StatefulSet", "mlflow-postgres")]["spec"]
    [claim] = database["volumeClaimTemplates"]
    assert {m["name"] for m in database["template"]["spec"]["containers"][0]["volumeMounts"]} >= {
        claim["metadata"]["name"]
    }
    assert by_name[("Service", "mlflow-postgres")]["spec"]["selector"] == {"app": "mlflow-postgres"}

    registry = by_name[("NetworkPolicy", "mlflow")]["spec"]
    assert registry["podSelector"]["matchLabels"] == {"app": "mlflow"}
    [rule] = registry["ingress"]
    assert {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}} in rule["from"]
    assert len(rule["from"]) == 2 and "namespaceSelector" in rule["from"][1]  # Ray pods and the ingress
    database_policy = by_name[("NetworkPolicy", "mlflow-postgres")]["spec"]
    assert database_policy["podSelector"]["matchLabels"] == {"app": "mlflow-postgres"}
    assert database_policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app": "mlflow"}}}]


def test_ray_pods_read_their_mlflow_account_from_a_secret(overlay):
    """Training and promotion run as the pipeline account; serving as a read-only one."""
    for doc in overlay:
        if doc["kind"] not in KUBERAY_KINDS:
            continue
        account = "l2ray-mlflow-serve" if doc["kind"] == "RayService" else "l2ray-mlflow-pipeline"
        for cluster in _cluster_specs(doc):
            groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
            for container in (c for g in groups for c in g["template"]["spec"]["containers"]):
                env = {e["name"]: e for e in container.get("env", [])}
                for name, key in (
                    ("MLFLOW_TRACKING_USERNAME", "username"),
                    ("MLFLOW_TRACKING_PASSWORD", "password"),
                ):
                    ref = env[name]["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == (account, key), (doc["metadata"]["name"], name)


def test_every_secret_a_manifest_reads_is_created_in_the_walkthrough(overlay):
    """docs/cluster.md creates every Secret a manifest reads, with every key it reads."""
    commands = (REPO / "docs" / "cluster.md").read_text().split("kubectl -n l2ray-gpu create secret generic ")
    created = {c.split()[0]: c.split("\n\n")[0] for c in commands[1:]}
    for env in _env_entries(overlay):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref and not ref.get("optional"):
            assert ref["name"] in created, ref
            assert f"--from-literal={ref['key']}=" in created[ref["name"]], ref


def test_pipeline_rayjob_cleans_up_after_itself(overlay):
    job = next(d for d in overlay if d["kind"] == "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["entrypoint"].startswith("python jobs/pipeline.py --config configs/")
    recipe = spec["entrypoint"].split("--config ")[1].split()[0]
    assert (REPO / recipe).exists()


def test_validator_rejects_unknown_fields():
    doc = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())
    doc["spec"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(jsonschema.ValidationError, match="rayStartParam"):
        _validate(doc)
    deployment = next(yaml.safe_load_all((REPO / "k8s" / "base" / "mlflow.yaml").read_text()))
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)


def _validate(doc: dict) -> None:
    if doc["kind"] in KUBERAY_KINDS:
        jsonschema.validate(doc, _strict_crd_schema(doc["kind"], doc["apiVersion"].split("/")[1]))
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@cache
def _strict_crd_schema(kind: str, version: str) -> dict:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}; set L2RAY_KUBERAY_CRDS to validate against them")
    crd = yaml.load((CRDS / f"ray.io_{KUBERAY_KINDS[kind]}.yaml").read_text(), Loader=yaml.CSafeLoader)
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    return _forbid_unknown(schema)


def _forbid_unknown(node):
    """kubeconform's strict mode: objects with declared properties accept nothing else."""
    if isinstance(node, dict):
        node = {k: _forbid_unknown(v) for k, v in node.items()}
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        return node
    if isinstance(node, list):
        return [_forbid_unknown(v) for v in node]
    return node


def _cluster_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    return [spec] if doc["kind"] == "RayCluster" else [spec.get("rayClusterSpec") or spec["rayClusterConfig"]]


def _env_entries(node) -> list[dict]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                found.extend(value)
            else:
                found.extend(_env_entries(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_env_entries(value))
    return found
