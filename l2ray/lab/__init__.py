"""The L² lab (docs/lab.md): a task a CPU student really learns, run through the real stages.

`tasks` (multi-step word problems, answers by construction), `render` (six languages, and the
inverse that parses lab text back), `teacher` (the programmatic Teacher, wrong at a set rate),
`data` (seeds, evaluation set, paraphrase baseline), `base` (the pre-trained base student, cached by
fingerprint), `study` (arms × k × seeds, sweeps, pilot) and `report` (recounted from samples).

Exports are imported on first use (`l2ray._lazy`): ``import l2ray.lab`` stays cheap.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "LabConfig": "config",
    "LabTeacher": "teacher",
    "ensure_base": "base",
    "load_lab_config": "study",
    "run_study": "study",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
