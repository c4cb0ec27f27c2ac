"""Online ingestion, data-size passes, stop rules and LR-by-loss-drop: their config checks and pure helpers."""

from __future__ import annotations

import pytest
import torch

from raycl.config import ConfigError, TrialConfig
from raycl.config.result import EvalRecord
from raycl.config.trial import StopRule, validate_config
from raycl.data.stream import Stage
from raycl.training.trial import adaptation_steps, new_rows_at, stage_steps, stop_reason, training_blocks

ONLINE = {"train": {"online": True}, "eval": {"every_steps": 10}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"train": {"lr": 0.01, "lr_at_loss_drop": 0.05}},
            "x.yaml: train.lr_at_loss_drop: give train.lr or train.lr_at_loss_drop, not both",
        ),
        ({"train": {"lr_at_loss_drop": 1.5}}, "x.yaml: train.lr_at_loss_drop: Input should be less than 1"),
        (
            {"train": {"online": True, "batch_size": 4}, "eval": {"every_steps": 5}},
            "x.yaml: train.batch_size: online training takes 1 or 2 examples a step, not 4",
        ),
        (
            {"train": {"online": True}},
            "x.yaml: eval.every_steps: online training evaluates on a schedule in steps; set it above 0",
        ),
        (
            {"train": {"examples_per_stage": 10, "steps_per_stage": 4}},
            "x.yaml: train.steps_per_stage: a single pass (online or examples_per_stage)",
        ),
        (
            {"train": {"stop_when": {"metric": "accuracy", "at_least": 0.8}}},
            "x.yaml: train.stop_when.metric: 'accuracy' is not measured at stage ends",
        ),
    ],
)
def test_impossible_combinations_fail_in_one_line_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(data, source="x.yaml")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_online_takes_one_example_a_step_unless_two_are_asked_for() -> None:
    assert validate_config(ONLINE, "x").train.batch_size == 1
    assert validate_config({**ONLINE, "train": {"online": True, "batch_size": 2}}, "x").train.batch_size == 2
    resolved = validate_config({"train": {"lr_at_loss_drop": 0.05}}, "x").with_overrides(
        {"train.lr": 2e-4, "train.lr_at_loss_drop": None}
    )
    assert resolved.train.lr == 2e-4


def stage(blocks: int) -> Stage:
    train = torch.arange(blocks * 4).view(blocks, 4)
    return Stage("s", train, train, [], [])


def test_a_single_pass_sees_every_example_once_in_order() -> None:
    config = validate_config(ONLINE | {"train": {"online": True, "batch_size": 2}}, "x")
    blocks, _ = training_blocks(config, stage(7))
    steps = stage_steps(config, stage(7))
    seen = torch.cat([new_rows_at(blocks, 2, step, seed=0, single_pass=True) for step in range(steps)])
    assert steps == 4 and torch.equal(seen, blocks)


def test_examples_per_stage_keeps_the_first_blocks_and_sets_the_steps() -> None:
    config = validate_config({"train": {"examples_per_stage": 5, "batch_size": 2}}, "x")
    blocks, labels = training_blocks(config, stage(9))
    assert torch.equal(blocks, stage(9).train_blocks[:5]) and torch.equal(labels, blocks)
    assert stage_steps(config, stage(9)) == 3
    assert stage_steps(TrialConfig(), stage(9)) == TrialConfig().train.steps_per_stage
    with pytest.raises(
        ValueError, match="train.examples_per_stage: 5, but stage s has 3 training blocks of 128 tokens"
    ):
        training_blocks(config, stage(3))


def test_adaptation_steps_are_the_steps_to_a_share_of_the_stage_drop() -> None:
    curve = [(10, 7.0), (20, 5.5), (30, 5.2)]
    assert adaptation_steps(8.0, curve, (40, 5.0), share=0.5) == 20  # half of the 3-nat drop: 6.5
    assert adaptation_steps(8.0, curve, (40, 5.0), share=0.3) == 10
    assert adaptation_steps(8.0, curve, (40, 5.0), share=0.99) == 40  # reached only at the stage end
    assert adaptation_steps(5.0, curve, (40, 5.1), share=0.5) is None  # the loss did not fall


def test_stop_when_stops_after_a_stage_end_where_the_metric_reaches_its_bound() -> None:
    rule = StopRule(metric="bench_raycl_retention", at_least=0.8)

    def stage_end(stage: int, retention: float | None = 0.82) -> EvalRecord:
        scores = {} if retention is None else {"bench_raycl_retention": retention}
        return EvalRecord(
            stage=stage,
            step=10 * stage,
            new_loss=4.0,
            base_loss=1.0,
            full_eval=True,
            learning=0.3,
            forgetting=0.1,
            **scores,
        )

    assert (
        stop_reason(rule, stage_end(1), stages=3)
        == "train.stop_when: bench_raycl_retention = 0.82 >= 0.8 after stage 1 of 3"
    )
    assert stop_reason(rule, stage_end(1, 0.79), 3) is None
    assert stop_reason(rule, stage_end(0), stages=3) is None  # step 0: nothing trained yet
    assert stop_reason(rule, stage_end(3), stages=3) is None  # the stream is over anyway
    measured = "new_loss, base_loss, learning, forgetting"
    with pytest.raises(
        ValueError,
        match=f"train.stop_when.metric: bench_raycl_retention is not measured by this trial .measured: {measured}.$",
    ):
        stop_reason(rule, stage_end(0, None), 3)


def test_a_config_asking_for_a_loss_drop_has_no_lr_until_resolved_and_reads_back_the_same() -> None:
    config = validate_config({"train": {"lr_at_loss_drop": 0.05}}, "x")
    dumped = config.model_dump(mode="json")
    assert "lr" not in dumped["train"] and validate_config(dumped, "x") == config
    resolved = config.with_overrides({"train.lr": 2e-4, "train.lr_at_loss_drop": None})
    assert resolved.model_dump(mode="json")["train"]["lr"] == 2e-4


def test_a_single_pass_config_reads_back_the_same_without_steps_per_stage() -> None:
    config = validate_config(ONLINE | {"train": {"online": True, "lr_at_loss_drop": 0.1}}, "x")
    dumped = config.model_dump(mode="json")
    assert "steps_per_stage" not in dumped["train"] and "lr" not in dumped["train"]
    assert validate_config(dumped, "x") == config
