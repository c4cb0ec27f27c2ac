"""cluster.yaml passes Ray's own cluster-config validation (offline: no cloud credentials needed)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.slow

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    config = prepare_config(load())
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["max_workers"] <= config["max_workers"]
    # The head serves MLflow on its private address (not the 127.0.0.1 default, not 0.0.0.0) and
    # every node installs raycl from the synced checkout.
    head_start = " ".join(config["head_start_ray_commands"])
    assert "mlflow server --host $HEAD_IP" in head_start and "0.0.0.0" not in head_start
    assert any("pip install -e ~/raycl" in command for command in config["setup_commands"])
    assert config["file_mounts"] == {"~/raycl": "."}


def test_validation_catches_what_it_should() -> None:
    """Guards the guard: the same validation rejects an unknown key and min_workers > max_workers."""
    unknown = copy.deepcopy(load())
    unknown["available_node_types"]["gpu_worker"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(unknown))
    too_many = copy.deepcopy(load())
    too_many["available_node_types"]["gpu_worker"]["min_workers"] = 20
    with pytest.raises(ValueError):
        validate_config(prepare_config(too_many))
