"""Evaluation: accuracy and tokens, the pilot study, and eval-gated promotion.

Entry points (`l2ray.eval.api`): `run_eval` (``l2ray eval``), `run_pilot` (``l2ray pilot``) and
`promote` (``l2ray promote``). Internals: `benchmarks` (AIME24, MATH500, GPQA-Diamond, the bundled
mini set, any JSONL/Parquet/HF set), `tasks` (task rows, prompts, sample seeds), `engines` (an
in-process model or an OpenAI-compatible endpoint), `pool` (the Ray Data actor pool), `identity`
(fingerprints and the summary), `metrics` and `report` (``samples.jsonl``, ``summary.json``,
``report.md``, plots), `mlflow_log` (MLflow), `promotion` (the gate). Grading lives below evaluation,
in `l2ray.grading`, so synthesis can use it too.

Exports are imported on first use (`l2ray._lazy`): ``import l2ray.eval`` stays cheap.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "EvalResult": "api",
    "promote": "api",
    "run_eval": "api",
    "run_pilot": "api",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
