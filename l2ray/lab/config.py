"""The lab's configuration (``configs/lab.yaml``): the base student, the study's arms and sweeps.

Example (YAML):
    name: lab
    k: [6, 20]
    train_seeds: [0, 1, 2]
    base: {steps: 800}
    recipe: {train: {epochs: 4}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from l2ray._schema import Section
from l2ray.recipe import InterventionConfig, StudentConfig

LAB_LANGUAGES = ("en", "zh", "ja", "de", "fr", "ru")
"""The languages the lab's renderers write (l2ray/lab/render.py), English first."""
Arm = Literal["base", "english", "l2", "whole", "mixed", "paraphrase"]
ARMS: tuple[str, ...] = ("base", "english", "l2", "whole", "mixed", "paraphrase")


def _small_student() -> StudentConfig:
    return StudentConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        # 8 heads of 16: measured against 4 of 32, the base solves 90 % of raw problems instead of 17 %
        # (docs/lab.md). vLLM's CPU attention has no kernel for head size 16: the lab runs on transformers.
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )


class BaseStudentConfig(Section):
    """The base student: its shape, and its pre-training on raw lab text (no thinking format).

    ``documents`` problems (a split of their own) are rendered as question + solution prose, each in
    one lab language in turn, and packed into rows of ``seq_len`` tokens; ``steps`` optimizer steps
    of ``batch_size`` rows each, on
    ``threads`` CPU threads (part of the fingerprint: the thread count changes the float sums).
    The defaults are the base shipped in the package (`l2ray.lab.base.SHIPPED`).
    """

    shape: StudentConfig = Field(default_factory=_small_student)
    documents: int = Field(default=40000, ge=1)
    steps: int = Field(default=3000, ge=1)
    batch_size: int = Field(default=8, ge=1, description="rows of seq_len packed tokens per step")
    seq_len: int = Field(default=512, ge=16, description="tokens per row: documents packed end to end")
    lr: float = Field(default=3e-3, gt=0.0)
    seed: int = 0
    threads: int = Field(default=2, ge=1, description="torch CPU threads while pre-training")


class LabConfig(Section):
    """The study: arms × k × training seeds, decoding sweeps, the pilot.

    ``recipe`` is merged into every arm's recipe (train/eval knobs; see `l2ray.recipe.Recipe`).
    ``teacher`` is the lab teacher's model string, error rates included (`l2ray.lab.teacher`).
    """

    name: str = Field(default="lab", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    output_dir: str = "runs"
    languages: list[str] = Field(default_factory=lambda: ["zh", "ja", "de", "fr", "ru"], min_length=1)
    base: BaseStudentConfig = Field(default_factory=BaseStudentConfig)
    teacher: str = "lab-teacher?wrong_step=0.04&wrong_answer=0.03&off_language=0.03"
    arms: list[Arm] = Field(default_factory=lambda: list(ARMS), min_length=1)
    k: list[int] = Field(default_factory=lambda: [6, 20], min_length=1)
    train_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    mixed_per_seed: int = Field(default=2, ge=1, description="code-switched traces per seed (L²)")
    eval_problems: int = Field(default=100, ge=1)
    max_tokens: int = Field(default=400, ge=16)
    sweeps: dict[str, InterventionConfig] = Field(default_factory=dict)
    sweep_k: int | None = Field(
        default=None, description="k of the L² student the sweeps run on (default: max k)"
    )
    pilot: bool = True
    pilot_problems: int = Field(default=30, ge=1, description="problems the pilot asks in each language")
    recipe: dict[str, Any] = Field(default_factory=dict)

    @field_validator("languages")
    @classmethod
    def _lab_languages(cls, codes: list[str]) -> list[str]:
        unknown = [c for c in codes if c not in LAB_LANGUAGES or c == "en"]
        if unknown:
            raise ValueError(f"the lab renders {', '.join(LAB_LANGUAGES[1:])} besides English; got {unknown}")
        return codes
