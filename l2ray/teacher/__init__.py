"""Teachers: the protocol, an OpenAI-compatible HTTP client, a local transformers model, and the
content-addressed response cache in front of them."""

from l2ray.teacher.base import SamplingParams, Teacher, TeacherError, TeacherReply, Usage, request_fingerprint
from l2ray.teacher.cache import CacheEntry, ResponseCache
from l2ray.teacher.client import Answer, CacheMissError, TeacherClient, build_teacher

__all__ = [
    "Answer",
    "CacheEntry",
    "CacheMissError",
    "ResponseCache",
    "SamplingParams",
    "Teacher",
    "TeacherClient",
    "TeacherError",
    "TeacherReply",
    "Usage",
    "build_teacher",
    "request_fingerprint",
]
