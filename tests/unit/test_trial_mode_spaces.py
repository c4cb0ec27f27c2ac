"""The online and data-size spaces, and `train.lr_at_loss_drop` as a searched key."""

from __future__ import annotations

from pathlib import Path

import pytest

from raycl.config import ConfigError
from raycl.config.space import load_space

ROOT = Path(__file__).resolve().parents[2]
SPACE = """
objectives: {learning: maximize, forgetting: minimize}
parameters:
  train.lr_at_loss_drop: {type: categorical, choices: [0.01, 0.05, 0.1]}
  model.name: {type: categorical, choices: [raycl-tiny-xs, raycl-tiny-s]}
fixed: {train: {steps_per_stage: 20}}
budget: {trials: 4}
sampler: {name: random}
seed: 0
"""


def test_the_online_and_data_size_spaces_validate_and_use_their_keys() -> None:
    online = load_space(ROOT / "search_spaces" / "online.yaml")
    assert online.fixed.train.online and online.fixed.train.batch_size == 2
    data_size = load_space(ROOT / "search_spaces" / "data_size.yaml")
    assert "train.examples_per_stage" in data_size.parameters and data_size.fixed.stream is None


def test_a_space_may_search_the_loss_drop_but_not_beside_a_fixed_lr(tmp_path: Path) -> None:
    path = tmp_path / "drops.yaml"
    path.write_text(SPACE)
    assert (
        load_space(path)
        .trial_config({"train.lr_at_loss_drop": 0.05, "model.name": "raycl-tiny-xs"})
        .train.lr_at_loss_drop
        == 0.05
    )
    path.write_text(SPACE.replace("{steps_per_stage: 20}", "{steps_per_stage: 20, lr: 0.001}"))
    with pytest.raises(
        ConfigError,
        match=r"drops.yaml: parameters.train.lr_at_loss_drop.choices: 0.01 is not a valid "
        r"train.lr_at_loss_drop \(give train.lr or train.lr_at_loss_drop, not both\)",
    ):
        load_space(path)
