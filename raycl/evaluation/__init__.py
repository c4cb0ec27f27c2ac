"""Evaluation: held-out losses and the metrics derived from them."""
