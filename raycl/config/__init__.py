"""The contract layer: every record that crosses a boundary, as a typed, validated model.

Trial configs, search spaces, trial results, the assignment Optuna hands to Tune, and the names of
MLflow tags and artifacts. Pydantic and PyYAML only (no torch, Ray, MLflow, Optuna or lm-eval), so
validating a file takes well under a second and any layer can import it without cycles.
"""

from raycl.config.base import ConfigError, StrictModel, read_yaml
from raycl.config.benchmarks import BenchmarkConfig
from raycl.config.stream import StreamConfig
from raycl.config.trial import (
    EvalConfig,
    EWCConfig,
    FullMethod,
    GaLoreMethod,
    LoraMethod,
    MethodConfig,
    ModelConfig,
    ReplayConfig,
    TrainConfig,
    TrialConfig,
    WorldConfig,
    load_config,
    validate_config,
)

__all__ = [
    "BenchmarkConfig",
    "ConfigError",
    "EvalConfig",
    "EWCConfig",
    "FullMethod",
    "GaLoreMethod",
    "LoraMethod",
    "MethodConfig",
    "ModelConfig",
    "ReplayConfig",
    "StreamConfig",
    "StrictModel",
    "TrainConfig",
    "TrialConfig",
    "WorldConfig",
    "load_config",
    "read_yaml",
    "validate_config",
]
