"""The recipe: one validated schema for a whole l2ray run (`Recipe`), its sections side by side, and
the loader (YAML, ``extends:``, dotted ``--set`` overrides).

One module per section: `seeds`, `teacher` (one endpoint and the two roles), `synth`, `student`,
`train`, `eval` (benchmarks, the promotion gate), `serve`, `intervention` (the decoding knobs),
`http` (how an endpoint's client waits and retries) and `vllm` (the engine settings serving,
evaluation and a local teacher share); `recipe` puts them together. The package imports no stage:
a stage reads its section from here.

Exports are imported on first use (`l2ray._lazy`): the decoding layer reads `InterventionConfig`
without loading the whole schema.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "BUILTIN_STUDENT": "student",
    "LAB_STUDENT": "student",
    "ROLES": "teacher",
    "BenchmarkSpec": "eval",
    "EvalConfig": "eval",
    "HttpClientSettings": "http",
    "InterventionConfig": "intervention",
    "LoraConfig": "train",
    "MixConfig": "train",
    "PromotionGate": "eval",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "Role": "teacher",
    "SeedsConfig": "seeds",
    "ServeConfig": "serve",
    "StudentConfig": "student",
    "SynthConfig": "synth",
    "TeacherConfig": "teacher",
    "TeachersConfig": "teacher",
    "TrackingConfig": "recipe",
    "TrainConfig": "train",
    "VllmEngineConfig": "vllm",
    "apply_override": "recipe",
    "load_recipe": "recipe",
    "recipe_from_dict": "recipe",
    "teacher_roles": "teacher",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
