"""The uniform-guess divergence rule: a loss above ln(vocab) for some steps after it was below."""

from __future__ import annotations

import math

from raycl.config import TrialConfig
from raycl.config.result import Divergence
from raycl.training.trial import TrialProgress, stayed_above_uniform

LADDER, SMOLLM2 = math.log(512), math.log(49152)


def steps_until_diverged(
    losses: list[float], uniform: float, steps: int = 3, stage_starts: tuple[int, ...] = ()
) -> int | None:
    """The 1-based step at which the rule fires, or None; a new stage begins at each index in `stage_starts`."""
    progress = TrialProgress(config={})
    for index, loss in enumerate(losses):
        stage = sum(start <= index for start in stage_starts)
        if stayed_above_uniform(progress, loss, uniform, steps, stage):
            return index + 1
    return None


def test_a_model_driven_above_a_uniform_guess_diverges_after_the_patience() -> None:
    # The ladder at lr 0.9: first loss 6.1 (3x is 18.4, never reached), then 8-12 nats.
    assert steps_until_diverged([6.1, 7.5, 9.0, 12.2, 11.0, 10.8], LADDER) == 4
    # A real model (first loss ~2.7) wrecked the same way is caught at its own scale.
    assert steps_until_diverged([2.7, 6.0, 11.5, 12.0, 11.9], SMOLLM2) == 5


def test_healthy_streams_and_single_spikes_do_not_diverge() -> None:
    assert steps_until_diverged([4.0, 5.9, 6.5, 6.0, 6.6, 6.7, 5.5, 5.0], LADDER) is None  # spikes of 1-2 steps
    assert steps_until_diverged([2.7, 3.4, 4.1, 3.0, 2.6], SMOLLM2) is None  # a new stage starts higher
    # A new stage of unseen data starting just above it (GaLore at lr 0.03, measured) is not a divergence,
    # where the default patience of 10 steps waits; lr 0.9, measured, stays above it from its second step.
    assert steps_until_diverged([6.13, 3.0, 0.95, 6.66, 6.29, 6.3, 5.43, 5.14], LADDER, steps=10) is None
    lr_09 = [6.13, 12.19, 16.31, 11.43, 14.47, 13.67, 10.23, 12.2, 10.95, 10.51, 8.77, 8.6]
    assert steps_until_diverged(lr_09, LADDER, steps=10) == 11
    # A model that never was below a uniform guess (trained from scratch) is not judged by it.
    assert steps_until_diverged([6.3, 6.4, 6.35, 6.3, 6.28], LADDER) is None


def test_a_new_stage_that_starts_above_a_uniform_guess_is_not_a_divergence() -> None:
    # lr 1e-6 on the offline world: stage 1 below ln(512), stage 2's new data at 6.7 nats throughout.
    slow_learner = [6.1, 5.9, 5.8, 5.8] + [6.72] * 12
    assert steps_until_diverged(slow_learner, LADDER, steps=10, stage_starts=(4,)) is None
    # The same losses within one stage are a rise from below, and fire after the patience.
    assert steps_until_diverged(slow_learner, LADDER, steps=10) == 14
    # Within the new stage, a dip below and a rise again counts as before.
    dips = [6.1, 5.9] + [6.72, 6.0] + [6.9] * 10
    assert steps_until_diverged(dips, LADDER, steps=10, stage_starts=(2,)) == 14


def test_the_record_says_which_rule_stopped_it() -> None:
    uniform = Divergence(step=4, stage=1, loss=12.2, first_loss=6.1, bound=18.3, uniform_loss=LADDER, config={})
    assert "stayed above 6.238, a uniform guess's (ln vocab)" in uniform.reason()
    factor = Divergence(step=4, stage=1, loss=19.0, first_loss=6.1, bound=18.3, config={})
    assert "train.divergence_factor" in factor.reason()
    assert TrialConfig().train.divergence_above_uniform_steps == 10
