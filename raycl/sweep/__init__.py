"""Sweep orchestration: search spaces, resource plans, Ray Tune trials of Ray Train workers, the Optuna
study, MLflow records and the live progress table. `run_sweep` is the entry point."""

from raycl.sweep.service import SweepOutcome, run_sweep

__all__ = ["SweepOutcome", "run_sweep"]
