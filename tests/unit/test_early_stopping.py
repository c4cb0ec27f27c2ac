"""Multi-objective early stopping: the NSGA-II promotion rule on hand-made fronts, and the Tune
scheduler's decisions."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from raycl.config import ConfigError
from raycl.config.records import Tags, TrialAssignment
from raycl.config.result import EvalRecord
from raycl.config.space import EarlyStopping, load_space
from raycl.config.trial import TrialConfig
from raycl.sweep.progress import ProgressTable
from raycl.sweep.promotion import as_losses, crowding_distances, kept, nondominated_fronts, nsga2_order, promoted
from raycl.sweep.scheduler import StageHalving
from raycl.sweep.study import OptunaSearcher, finished_trials, open_study, rung_history
from raycl.sweep.tracking import SweepTracker, TrackingCallback

MIXED = ("maximize", "minimize")  # (learning, forgetting)


def test_fronts_on_a_hand_made_set() -> None:
    losses = as_losses([[3, 3], [2, 1], [1, 0.5], [2, 2], [1, 1], [0.5, 0.5], [0.4, 2.5]], MIXED)
    assert nondominated_fronts(losses) == [[0, 1, 2], [3, 4, 5], [6]]


def test_crowding_distance_ends_are_infinite_and_middle_is_the_normalised_gap() -> None:
    # a straight front: (0,4) (1,3) (3,1) (4,0); middles: (3-0)/4 per objective, twice
    distance = crowding_distances(np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]]))
    assert np.isinf(distance[[0, 3]]).all()
    assert distance[1] == pytest.approx(2 * 3 / 4) and distance[2] == pytest.approx(2 * 3 / 4)


def test_order_is_front_first_then_crowding_and_is_a_ranking_not_priorities() -> None:
    # front 0: rows 1 (end), 3 (middle, crowded), 0 (middle, isolated), 2 (end); then dominated row 4
    losses = np.array([[1.0, 3.0], [0.0, 4.0], [4.0, 0.0], [0.9, 3.2], [5.0, 5.0]])
    order = nsga2_order(losses)
    assert order[:2] == [1, 2]  # the two ends, by index
    assert order[2:] == [0, 3, 4]
    # Reading the order as "priority of row i" would rank row 0 (value 1 at index 0) worst-but-one: not so.
    assert order.index(4) == 4 and order.index(0) == 2


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9, 27])
def test_a_trial_dominating_every_other_is_always_promoted(count: int) -> None:
    rng = np.random.default_rng(count)
    others = rng.uniform(0.1, 1.0, size=(count - 1, 2)).tolist()
    best = [2.0, 0.0]  # more learning and less forgetting than any other
    for position in range(count):
        arrived = others[:position] + [best]
        assert promoted(as_losses(arrived, MIXED), reduction=3), (count, position)
    # ... and keeps its place at the top whatever arrives after it.
    assert nsga2_order(as_losses([best, *others], MIXED))[0] == 0


def test_a_dominated_late_arrival_is_stopped_and_a_new_front_member_is_kept() -> None:
    front = [[0.9, 0.5], [0.5, 0.1], [0.7, 0.3]]
    assert not promoted(as_losses([*front, [0.4, 0.6]], MIXED), reduction=3)  # dominated, 2 of 4 kept
    assert promoted(as_losses([*front, [0.95, 0.55]], MIXED), reduction=3)  # new best learning: an end of the front


def test_the_first_arrival_continues_and_a_tie_favours_the_arrival() -> None:
    assert promoted(as_losses([[0.1, 0.9]], MIXED), reduction=3)
    assert promoted(as_losses([[0.5, 0.5], [0.5, 0.5]], MIXED), reduction=3)


@pytest.mark.parametrize(("count", "reduction", "expected"), [(1, 3, 1), (3, 3, 1), (4, 3, 2), (9, 3, 3), (10, 2, 5)])
def test_kept_is_the_ceiling_of_a_fraction(count: int, reduction: float, expected: int) -> None:
    assert kept(count, reduction) == expected


def test_asynchronous_promotion_keeps_about_one_in_reduction() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(81, 2))
    decisions = [promoted(as_losses(values[: n + 1], MIXED), reduction=3) for n in range(len(values))]
    # Early arrivals face a small field, so ASHA-style promotion keeps more than a third, but not much more.
    assert 81 / 3 <= sum(decisions) <= 81 / 2


def _trial(key_number: int, num_stages: int = 3) -> SimpleNamespace:
    config = TrialConfig().with_overrides({"world.num_stages": num_stages})
    return SimpleNamespace(config=TrialAssignment.create(key_number, {}, config).model_dump(mode="json"))


def _stage(stage: int, learning: float, forgetting: float) -> dict:
    """A stage end's report, as Tune receives it."""
    record = EvalRecord(
        stage=stage,
        step=10 * stage,
        new_loss=4.0,
        base_loss=1.0,
        full_eval=True,
        learning=learning,
        forgetting=forgetting,
    )
    return record.to_report()


def test_scheduler_stops_at_stage_ends_only_and_records_why() -> None:
    scheduler = StageHalving({"learning": "maximize", "forgetting": "minimize"}, EarlyStopping(reduction=3))
    good, bad = _trial(0), _trial(1)
    assert scheduler.on_trial_result(None, good, _stage(1, 0.5, 0.1)) == "CONTINUE"
    quick = EvalRecord(stage=1, step=15, new_loss=9.0, base_loss=1.0, full_eval=False)
    assert scheduler.on_trial_result(None, bad, quick.to_report()) == "CONTINUE"
    assert scheduler.on_trial_result(None, bad, _stage(1, 0.2, 0.3)) == "STOP"
    record = scheduler.stopped["t0001"]
    assert (record.stage, record.values, record.at_rung) == (1, {"learning": 0.2, "forgetting": 0.3}, 2)
    # The last stage is no rung, and a repeated report (a resumed trial) keeps the earlier decision.
    assert scheduler.on_trial_result(None, _trial(2), _stage(3, 0.0, 9.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, good, _stage(1, 0.5, 0.1)) == "CONTINUE"
    assert scheduler.rung_values("t0000") == {1: [0.5, 0.1]}


def test_scheduler_with_a_grace_period_stops_nothing_before_its_first_rung() -> None:
    scheduler = StageHalving(
        {"learning": "maximize", "forgetting": "minimize"}, EarlyStopping(rungs="stages", reduction=3, first_rung=2)
    )
    assert scheduler.on_trial_result(None, _trial(0, 4), _stage(1, 0.9, 0.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, _trial(1, 4), _stage(1, 0.1, 0.9)) == "CONTINUE"
    assert scheduler.on_trial_result(None, _trial(0, 4), _stage(2, 0.9, 0.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, _trial(1, 4), _stage(2, 0.1, 0.9)) == "STOP"
    assert scheduler.stopped["t0001"].stage == 2


def test_scheduler_with_listed_rungs_ranks_only_at_those_stage_ends() -> None:
    scheduler = StageHalving({"learning": "maximize", "forgetting": "minimize"}, EarlyStopping(rungs=[1], reduction=3))
    assert scheduler.on_trial_result(None, _trial(0, 4), _stage(1, 0.9, 0.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, _trial(1, 4), _stage(1, 0.8, 0.1)) == "STOP"
    assert scheduler.on_trial_result(None, _trial(0, 4), _stage(2, 0.9, 0.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, _trial(2, 4), _stage(2, 0.1, 0.9)) == "CONTINUE"  # stage 2 is no rung
    assert scheduler.rung_values("t0002") == {}
    assert "of stages [1]" in scheduler.debug_string()


def test_scheduler_seeded_with_an_earlier_drivers_rungs_ranks_against_them() -> None:
    history = {"t0000": {1: [0.9, 0.0]}, "t0001": {1: [0.8, 0.01]}}
    scheduler = StageHalving({"learning": "maximize", "forgetting": "minimize"}, EarlyStopping(reduction=3), history)
    assert scheduler.on_trial_result(None, _trial(2), _stage(1, 0.1, 0.5)) == "STOP"


def _space_file(tmp_path: Path, **extra) -> Path:
    space = {
        "parameters": {"train.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
        "budget": {"trials": 3},
        "sampler": {"name": "random"},
        "seed": 0,
    } | extra
    path = tmp_path / "es.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_space_early_stopping_key_validates_and_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    plain = load_space(_space_file(tmp_path)).fingerprint()
    space = load_space(_space_file(tmp_path, early_stopping={"rungs": "stages", "reduction": 3}))
    assert space.early_stopping.reduction == 3 and space.fingerprint() == plain
    assert isinstance(StageHalving.of(space), StageHalving)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"early_stopping": {"reduction": 1}}, "early_stopping.reduction"),
        ({"early_stopping": {"rungs": "steps"}}, "early_stopping.rungs"),
        (
            {"early_stopping": {"rungs": "stages", "first_rung": 3}},
            "early_stopping.first_rung: 3 leaves no rung before the last of 3 stages",
        ),
        ({"early_stopping": {"rungs": [1, 3]}}, "early_stopping.rungs: stage end 3 is not before the last of 3 stages"),
        (
            {"early_stopping": {"rungs": [2, 1]}},
            r"early_stopping.rungs: \[2, 1\] must list stage ends in increasing order",
        ),
        ({"early_stopping": {"rungs": [0]}}, "early_stopping.rungs"),
        ({"early_stopping": {"first_rung": 2}}, "early_stopping.first_rung: only with rungs: stages"),
        (
            {"early_stopping": {}, "objectives": {"learning": "maximize", "forgetting_fraction": "minimize"}},
            "objective forgetting_fraction is not reported at stage ends",
        ),
        (
            {"early_stopping": {}, "budget": {"trials": 3, "seeds": 2}},
            "early_stopping: ranks one run per trial at each stage end; budget.seeds is 2",
        ),
    ],
)
def test_space_early_stopping_errors_name_the_key(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_space(_space_file(tmp_path, **extra))


@pytest.mark.parametrize("budget", [{"executor": "train"}, {"workers_per_trial": 2}, {"gpus_per_worker": 0.5}])
def test_early_stopping_is_accepted_under_the_train_executor(tmp_path: Path, budget: dict) -> None:
    space = load_space(_space_file(tmp_path, early_stopping={}, budget={"trials": 3} | budget))
    assert space.budget.resolved_executor()[0] == "train" and space.early_stopping is not None


def test_every_arrival_order_promotes_the_dominating_trial() -> None:
    points = [[0.3, 0.2], [0.6, 0.4], [0.2, 0.05], [1.0, 0.0]]  # the last dominates
    for order in itertools.permutations(range(4)):
        arrived = [points[i] for i in order[: order.index(3) + 1]]
        assert promoted(as_losses(arrived, MIXED), reduction=4)


def test_a_stopped_trial_is_pruned_in_optuna_tagged_in_mlflow_and_shown_in_the_table(tmp_path: Path) -> None:
    space = load_space(_space_file(tmp_path, early_stopping={"reduction": 3}))
    study = open_study(space, f"sqlite:///{tmp_path / 'optuna.db'}", resume=False)
    scheduler = StageHalving.of(space)
    searcher = OptunaSearcher(study, space, interrupted=[], defaults={}, scheduler=scheduler)
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", space, tmp_path / "artifacts")
    tracker.open_parent({})
    table = ProgressTable(space, Console(file=io.StringIO()), scheduler.stopped)
    tracking = TrackingCallback(tracker, scheduler.stopped)
    trials = []
    for number, (learning, forgetting) in enumerate([(0.5, 0.1), (0.2, 0.3)]):
        trial = SimpleNamespace(config=searcher.suggest(f"tune-{number}"))
        tracking.on_trial_start(0, [], trial)
        table.on_trial_start(0, [], trial)
        decision = scheduler.on_trial_result(None, trial, _stage(1, learning, forgetting))
        trials.append((trial, decision))
    assert [decision for _, decision in trials] == ["CONTINUE", "STOP"]
    stopped = trials[1][0]
    searcher.on_trial_complete("tune-1", _stage(1, 0.2, 0.3))
    tracking.on_trial_complete(0, [], stopped)
    table.on_trial_complete(0, [], stopped)

    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned in finished_trials(study)
    assert pruned.user_attrs[Tags.PRUNED] == {"stage": 1, "values": {"learning": 0.2, "forgetting": 0.3}, "at_rung": 2}
    assert rung_history(study) == {"t0001": {1: [0.2, 0.3]}}
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(tracker.child("t0001"))
    assert run.data.tags[Tags.PRUNED] == "1" and run.info.status == "FINISHED"
    assert table.rows["t0001"].state == "stopped@1" and table.rows["t0000"].state == "running"
