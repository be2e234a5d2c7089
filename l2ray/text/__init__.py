"""Pure text logic (no Ray): protected spans, segmentation, language tags, language-mix measurement."""

from l2ray.text.langmix import LanguageMix, detect_segment_language, measure_language_mix
from l2ray.text.segment import default_markers, reflection_boundaries, segment
from l2ray.text.spans import math_segments, protected_spans, strip_protected
from l2ray.text.tags import count_tag_switches, insert_tags, parse_tagged, strip_tags, tag_languages

__all__ = [
    "LanguageMix",
    "count_tag_switches",
    "default_markers",
    "detect_segment_language",
    "insert_tags",
    "math_segments",
    "measure_language_mix",
    "parse_tagged",
    "protected_spans",
    "reflection_boundaries",
    "segment",
    "strip_protected",
    "strip_tags",
    "tag_languages",
]
