"""Evaluation: the metrics derived from held-out losses, and lm-eval benchmarks with their probes."""
