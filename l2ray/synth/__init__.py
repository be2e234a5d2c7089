"""Multilingual trace synthesis: whole-CoT annotation and step-wise code-switching on Ray Data.

The entry points are `l2ray.synth.api.synthesize` and `l2ray.synth.api.translate_questions`
(imported from there: this package is imported by the recipe schema and stays light).
"""
