"""Evaluation never dominates a shipped space's trial, at the space's own settings.

Measured with the world and base model already built (as in a sweep, where the first trial builds them):
tiny trials spend 10-55% of their time evaluating (a fifth or less for smoke, methods and replay; scaling_laws
about 27%, conversations 40%, data_size's short passes and online's quick checks about half), so the bound
is 60%: a config that evaluates far more than it trains fails.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raycl.artifacts.real_models import is_real_model
from raycl.config.space import load_space, shipped_spaces
from raycl.models.ladder import BUDGET_CAPS
from raycl.models.loading import load_base_model
from raycl.training.trial import run_trial
from raycl.world.offline import load_world

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def middle_params(space) -> dict:
    """One trial of the space: each range's (geometric) middle, each categorical's first choice, conditions honoured."""
    params: dict = {}
    for name, parameter in space.parameters.items():
        if not all(
            params.get(key) in (allowed if isinstance(allowed, list) else [allowed])
            for key, allowed in parameter.when.items()
        ):
            continue
        if parameter.type == "categorical":
            params[name] = parameter.choices[0]
        elif parameter.log_scale:
            middle = math.sqrt(parameter.low * parameter.high)
            params[name] = round(middle) if parameter.type == "int" else middle
        else:
            middle = (parameter.low + parameter.high) / 2
            params[name] = round(middle) if parameter.type == "int" else middle
    return params


@pytest.mark.parametrize("path", shipped_spaces(), ids=lambda path: path.stem)
def test_evaluation_takes_at_most_three_fifths_of_a_trial(path: Path, tmp_path: Path) -> None:
    space = load_space(path)
    config = space.trial_config(middle_params(space))
    if config.stream is not None and not SHARED.is_dir():
        pytest.skip(f"{path.name} reads real data: needs the samples at {SHARED}")
    if is_real_model(config.model.name):  # minutes a trial on 2 cores
        pytest.skip(f"{path.name} trains a real model: its evaluation share is in reports/real_models.md")
    if config.model.name in BUDGET_CAPS:  # 13 CPU minutes to pretrain; scaling_laws measures the same settings
        pytest.skip(f"{path.name} trains the out-of-sample rung {config.model.name}")
    load_base_model(config.model, load_world(config.world))  # built outside the timed trial
    result = run_trial(config, tmp_path / "trial")
    assert 0 < result.eval_time_fraction <= 0.6, (path.stem, result.eval_time_s, result.wall_time_s)
