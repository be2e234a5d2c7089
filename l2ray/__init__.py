"""l2ray: the L² method (multilingual unification learning) on Ray.

Stages, each a plain library first and a Ray workload second: `l2ray.data` (seeds), `l2ray.text`
(segmentation, tags, language mix), `l2ray.student` (the offline student), and the stage packages
named in docs/architecture.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
