"""Decoding intervention (pure Python + torch, no Ray): tag control, budget forcing, the engine."""
