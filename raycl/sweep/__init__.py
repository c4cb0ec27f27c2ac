"""Sweep orchestration: search spaces, resource plans, Ray Tune trials of Ray Train workers, the Optuna
study, MLflow records and the live progress table. `run_sweep` and `validate_spaces` are the entry points."""

from raycl.config.space import validate_spaces
from raycl.sweep.service import SweepOutcome, run_sweep

__all__ = ["SweepOutcome", "run_sweep", "validate_spaces"]
