"""Evaluation machinery on frozen features: extraction, the feature cache, the few-shot solver, metrics."""
