"""Evaluation: accuracy and tokens, the pilot study, and eval-gated promotion.

- `grading` — pure: the answer in a response (last ``\\boxed{}``, answer anchors of every language,
  strict letters) and its verdict (math-verify).
- `benchmarks` — AIME24, MATH500, GPQA-Diamond, the bundled mini set, any JSONL/Parquet/HF set.
- `engines` — an in-process model (`l2ray.decode.engine.DecodeEngine`) or an OpenAI-compatible endpoint.
- `metrics`, `report` — per-sample records, ``summary.json``, ``report.md``, plots.
- `runner` (`l2ray eval`), `pilot` (`l2ray pilot`), `promotion` (`l2ray promote`), `tracking` (MLflow).

Submodules are imported on use: `grading` must stay cheap to import for synthesis.
"""
