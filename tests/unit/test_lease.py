"""Two drivers on one study: a live driver's running trials are never taken over, a dead one's are,
and the budget holds across both (a real sqlite study with Optuna's heartbeat table)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from ray.tune.search import Searcher

from raycl.config.records import TrialAssignment
from raycl.config.space import load_space
from raycl.sweep import lease
from raycl.sweep.study import OptunaSearcher, interrupted_trials, open_study

SPACE = {
    "objectives": {"learning": "maximize", "forgetting": "minimize"},
    "parameters": {"train.lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
    "fixed": {"world": {"num_stages": 2}},
    "budget": {"trials": 3},
    "sampler": {"name": "random"},
    "seed": 0,
}


@pytest.fixture()
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The space, and a way for each driver to open the shared study (a 1 s heartbeat, 2 s grace)."""
    monkeypatch.setattr(lease, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(lease, "GRACE_PERIOD_S", 2)
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    space = load_space(path)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return space, lambda: open_study(space, url, resume=True)


def test_only_a_dead_drivers_trials_are_taken_over(shared, tmp_path: Path) -> None:
    space, open_shared = shared
    a_dir, b_dir = tmp_path / "a" / "shared", tmp_path / "b" / "shared"
    study_a = open_shared()
    searcher_a = OptunaSearcher(study_a, space, [], {}, a_dir)
    live = TrialAssignment.model_validate(searcher_a.suggest("a-1"))
    dead = TrialAssignment.model_validate(searcher_a.suggest("a-2"))

    study_b = open_shared()
    assert interrupted_trials(study_b, b_dir) == []  # both of A's trials beat just now
    assert [t.number for t in interrupted_trials(study_b, a_dir)] == [live.number, dead.number]  # A's own folder
    # Two of three taken by A: B may ask one trial more, then the budget is spent.
    searcher_b = OptunaSearcher(study_b, space, [], {}, b_dir)
    assert TrialAssignment.model_validate(searcher_b.suggest("b-1")).number == 2
    assert searcher_b.suggest("b-2") == Searcher.FINISHED

    # A keeps beating for one trial only (and B for its own): the other's driver is as good as dead,
    # and a third driver may continue it.
    with lease.heartbeats(study_a, lambda: [study_a.trials[live.number]._trial_id, study_b.trials[2]._trial_id]):
        time.sleep(3.5)
        assert [t.number for t in interrupted_trials(open_shared(), tmp_path / "c" / "shared")] == [dead.number]


def test_an_unmarked_trial_is_left_alone_until_the_grace_period_ends(shared, tmp_path: Path) -> None:
    space, open_shared = shared
    study = open_shared()
    study.ask()  # a driver that died right after asking: no mark, no heartbeat
    assert interrupted_trials(study, tmp_path) == []
    time.sleep(2.5)
    assert len(interrupted_trials(study, tmp_path)) == 1
