"""Every shipped space evaluates in at most a fifth of its trials' time, at its own settings (half, for a space
whose quick checks on a schedule in steps are its measurement, as online ingestion's adaptation curve is)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raycl.config.space import load_space, shipped_spaces
from raycl.training.trial import run_trial

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def middle_params(space) -> dict:
    """One trial of the space: each range's (geometric) middle, each categorical's first choice, conditions honoured."""
    params: dict = {}
    for name, parameter in space.parameters.items():
        if not all(params.get(key) in (allowed if isinstance(allowed, list) else [allowed]) for key, allowed in parameter.when.items()):
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
def test_evaluation_takes_at_most_a_fifth_of_a_trial(path: Path, tmp_path: Path) -> None:
    space = load_space(path)
    config = space.trial_config(middle_params(space))
    if config.stream is not None and not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    result = run_trial(config, tmp_path / "trial")
    bound = 0.5 if config.eval.every_steps else 0.2
    assert 0 < result["eval_time_fraction"] <= bound, (path.stem, result["eval_time_s"], result["wall_time_s"])
