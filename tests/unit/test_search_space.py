"""Search spaces, resource plans, frontier summaries and redaction: the sweep's pure parts."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from raycl.analysis.frontier import space_frontier
from raycl.cli import app
from raycl.config import ConfigError
from raycl.config.space import Budget, Constraint, SearchSpace, load_space, load_space_or_config, shipped_spaces
from raycl.sweep.plan import NodeCapacity, plan_resources
from raycl.sweep.redaction import is_secret, loggable_params, redact_url
from raycl.sweep.summary import frontier_csv

VALID: dict[str, Any] = {
    "objectives": {"learning": "maximize", "forgetting": "minimize"},
    "parameters": {
        "train.lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2},
        "method.name": {"type": "categorical", "choices": ["full", "lora", "galore"]},
        "method.lora_rank": {"type": "categorical", "choices": [4, 8], "when": {"method.name": "lora"}},
        "method.galore_rank": {"type": "int", "low": 2, "high": 16, "log": True, "when": {"method.name": ["galore"]}},
    },
    "fixed": {"world": {"num_stages": 2}, "train": {"steps_per_stage": 5}},
    "budget": {"trials": 4, "concurrency": 2},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "seed": 0,
}


def write_space(tmp_path: Path, data: dict[str, Any], name: str = "space") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edited(edit) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    edit(data)
    return data


def test_every_shipped_space_validates() -> None:
    checked = [load_space_or_config(path) for path in shipped_spaces()]
    assert {path.stem for path, _ in checked} >= {"smoke", "scaling_laws", "methods"}
    assert all(isinstance(space, SearchSpace) for _, space in checked)


def test_space_loads_with_name_source_and_base_config(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, VALID, name="mine"))
    assert space.name == "mine"
    assert space.source.endswith("mine.yaml")
    assert space.directions == ["maximize", "minimize"]
    assert space.fixed.world.num_stages == 2


MALFORMED = [
    ("unknown top-level key", lambda d: d.update(paramters={}), "paramters: unknown key"),
    ("unknown budget key", lambda d: d["budget"].update(concurrncy=2), "budget.concurrncy: unknown key"),
    (
        "unknown parameter option",
        lambda d: d["parameters"]["train.lr"].update(hgh=1),
        "parameters.train.lr.hgh: not used by a log_uniform parameter",
    ),
    ("empty range", lambda d: d["parameters"]["train.lr"].update(low=1e-2), "parameters.train.lr.high: empty range"),
    ("log range through zero", lambda d: d["parameters"]["train.lr"].update(low=0.0), "parameters.train.lr.low"),
    (
        "condition on a missing parameter",
        lambda d: d["parameters"]["method.lora_rank"].update(when={"method.nam": "lora"}),
        "parameters.method.lora_rank.when.method.nam: condition on a parameter that is not searched",
    ),
    (
        "condition on a later parameter",
        lambda d: d["parameters"]["train.lr"].update(when={"method.name": "lora"}),
        "parameters.train.lr.when.method.name",
    ),
    (
        "condition value never sampled",
        lambda d: d["parameters"]["method.lora_rank"].update(when={"method.name": "lorra"}),
        "parameters.method.lora_rank.when.method.name: 'lorra' is not among its choices",
    ),
    (
        "not a config key",
        lambda d: d["parameters"].update({"train.lrr": {"type": "uniform", "low": 0, "high": 1}}),
        "parameters.train.lrr: not a trial config key",
    ),
    (
        "choice the config rejects",
        lambda d: d["parameters"]["method.name"].update(choices=["full", "adapters"]),
        "parameters.method.name.choices: 'adapters'",
    ),
    (
        "bound the config rejects",
        lambda d: d["parameters"]["train.lr"].update(high=2.0),
        "parameters.train.lr.high: 2.0 is not a valid train.lr",
    ),
    (
        "fractional values for an int key",
        lambda d: d["parameters"].update({"train.batch_size": {"type": "uniform", "low": 1, "high": 9}}),
        "parameters.train.batch_size.type: train.batch_size takes whole numbers",
    ),
    (
        "option of another type",
        lambda d: d["parameters"]["train.lr"].update(choices=[1]),
        "parameters.train.lr.choices: not used by a log_uniform",
    ),
    (
        "no choices",
        lambda d: d["parameters"]["method.name"].update(choices=[]),
        "parameters.method.name.choices: needs at least one value",
    ),
    ("unknown fixed key", lambda d: d["fixed"]["train"].update(lrr=0.1), "fixed.train.lrr: unknown key"),
    ("invalid fixed value", lambda d: d["fixed"]["world"].update(num_stages=0), "fixed.world.num_stages"),
    (
        "searched and fixed",
        lambda d: d["fixed"]["train"].update(lr=0.1),
        "parameters.train.lr: also set in fixed.train.lr",
    ),
    (
        "unknown objective metric",
        lambda d: d["objectives"].update(accuracy="maximize"),
        "objectives.accuracy: not a metric trials report",
    ),
    ("bad direction", lambda d: d["objectives"].update(learning="up"), "objectives.learning"),
    (
        "malformed constraint",
        lambda d: d.update(constraints=["forgetting < 0.05"]),
        "constraints[0]: 'forgetting < 0.05' is not of the form",
    ),
    (
        "constraint on an unknown metric",
        lambda d: d.update(constraints=["loss <= 1"]),
        "constraints[0]: 'loss' is not a metric",
    ),
    ("sampler not pinned", lambda d: d.pop("sampler"), "sampler: Field required"),
    (
        "sampler option of another sampler",
        lambda d: d["sampler"].update(population_size=8),
        "sampler.population_size: not an option of the tpe sampler",
    ),
    (
        "reference point misses an objective",
        lambda d: d.update(reference_point={"learning": 0.0}),
        "reference_point: needs exactly the objectives",
    ),
    ("no budget", lambda d: d.pop("budget"), "budget: Field required"),
    ("zero trials", lambda d: d["budget"].update(trials=0), "budget.trials"),
    (
        "NaN bound",
        lambda d: d["parameters"]["train.lr"].update(high=float("nan")),
        "parameters.train.lr.high: Input should be a finite number",
    ),
    (
        "infinite fixed value",
        lambda d: d["fixed"]["train"].update(grad_clip=float("inf")),
        "fixed.train.grad_clip: Input should be a finite number",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_space_fails_with_one_line_naming_file_and_key(tmp_path: Path, edit, expected: str) -> None:
    path = write_space(tmp_path, edited(edit))
    with pytest.raises(ConfigError) as caught:
        load_space(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_unknown_space_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="no search space of that name.*smoke"):
        load_space("no_such_space")


def test_raycl_validate_reports_each_space(tmp_path: Path) -> None:
    good = write_space(tmp_path, VALID, name="good")
    bad = write_space(tmp_path, edited(lambda d: d["budget"].update(trials=0)), name="bad")
    result = CliRunner().invoke(app, ["validate", str(good), str(bad)])
    lines = result.output.splitlines()
    assert result.exit_code == 2 and len(lines) == 2
    assert lines[0] == f"ok {good}" and lines[1].startswith(f"error: {bad}: budget.trials")


def test_sampling_follows_conditions_and_builds_trial_configs(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, VALID))
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=1))
    methods = set()
    for _ in range(40):
        trial = study.ask()
        params = space.sample(trial)
        method = params["method.name"]
        methods.add(method)
        assert ("method.lora_rank" in params) == (method == "lora")
        assert ("method.galore_rank" in params) == (method == "galore")
        assert 1e-4 <= params["train.lr"] <= 1e-2
        config = space.trial_config(params)
        assert config.method.name == method and config.train.lr == params["train.lr"]
        assert config.train.steps_per_stage == 5
        study.tell(trial, [0.0, 0.0])
    assert methods == {"full", "lora", "galore"}


def test_fingerprint_ignores_budget_but_not_the_search(tmp_path: Path) -> None:
    base = load_space(write_space(tmp_path, VALID, "a")).fingerprint()
    more_trials = load_space(write_space(tmp_path, edited(lambda d: d["budget"].update(trials=40)), "b")).fingerprint()
    other_range = load_space(write_space(tmp_path, edited(lambda d: d["parameters"]["train.lr"].update(high=0.5)), "c"))
    assert base == more_trials
    assert base != other_range.fingerprint()


def test_constraints_follow_optunas_sign_convention() -> None:
    at_most = Constraint.model_validate("forgetting <= 0.05")
    at_least = Constraint.model_validate(" learning>=0.5 ")
    assert at_most.value({"forgetting": 0.08}) == pytest.approx(0.03)
    assert at_most.satisfied({"forgetting": 0.05}) and not at_most.satisfied({"forgetting": 0.08})
    assert at_least.value({"learning": 0.7}) == pytest.approx(-0.2)
    assert str(at_least) == "learning >= 0.5"


def budget(**values: Any) -> Budget:
    """A budget whose trials run Ray Train worker groups (the plan with coordinator slivers)."""
    return Budget(**({"trials": 8, "executor": "train"} | values))


def test_auto_executor_runs_single_cpu_workers_in_their_tune_actor() -> None:
    plan = plan_resources(Budget(trials=8, concurrency=2), [NodeCapacity("a", 2)])
    assert (plan.executor, plan.concurrency, plan.cpus_per_worker) == ("tune", 2, 1.0)
    assert plan.trial_resources == {"cpu": 1.0}  # the actor holds the whole share: no sliver, no worker group
    assert "executor: tune (auto: one CPU worker" in plan.describe(8)
    several = plan_resources(Budget(trials=8, workers_per_trial=2), [NodeCapacity("a", 4)])
    gpu = plan_resources(Budget(trials=8, gpus_per_worker=1), [NodeCapacity("a", 4, 1)])
    assert several.executor == gpu.executor == "train" and several.trial_resources == {"cpu": 0.01}
    with pytest.raises(ValueError, match="executor: tune runs a trial in one process"):
        Budget(trials=2, workers_per_trial=2, executor="tune")


def test_plan_shaves_trial_slivers_off_the_workers_on_one_node() -> None:
    plan = plan_resources(budget(concurrency=2, cpus_per_worker=1), [NodeCapacity("a", 2)])
    assert (plan.concurrency, plan.cpus_per_worker, plan.threads_per_worker) == (2, 0.99, 1)
    assert plan.trial_resources == {"cpu": 0.01}
    assert plan.worker_resources == {"CPU": 0.99}
    # Total demand fits exactly: no trial can hold a sliver while its workers wait forever.
    assert 2 * (0.01 + plan.cpus_per_worker) <= 2


def test_plan_survives_every_sliver_on_one_of_two_nodes() -> None:
    plan = plan_resources(budget(concurrency=2), [NodeCapacity("a", 1), NodeCapacity("b", 1)])
    assert (plan.concurrency, plan.cpus_per_worker) == (2, 0.98)
    # Worst case: both slivers on node a; it still fits one worker, node b the other.
    assert math.floor((1 - 0.02) / plan.cpus_per_worker) == 1


def test_plan_lowers_concurrency_instead_of_starving_workers() -> None:
    plan = plan_resources(budget(concurrency=2, workers_per_trial=2), [NodeCapacity("a", 2)])
    assert (plan.concurrency, plan.cpus_per_worker) == (1, 0.99)
    assert "concurrency lowered from 2 to 1" in plan.notes[0]
    assert "2 at a time" not in plan.describe(8)


def test_plan_never_runs_more_trials_at_once_than_the_budget_has() -> None:
    assert plan_resources(budget(trials=1, concurrency=4), [NodeCapacity("a", 8)]).concurrency == 1


def test_plan_counts_gpus_per_node() -> None:
    nodes = [NodeCapacity("head", 4), NodeCapacity("g1", 8, 1), NodeCapacity("g2", 8, 1)]
    plan = plan_resources(budget(concurrency=4, cpus_per_worker=3, gpus_per_worker=1), nodes)
    assert plan.concurrency == 2
    assert plan.worker_resources == {"CPU": 3.0, "GPU": 1.0}


def test_plan_refuses_a_trial_that_can_never_fit_unless_the_cluster_autoscales() -> None:
    too_big = budget(cpus_per_worker=4)
    with pytest.raises(ValueError, match="budget: one trial needs 1 worker"):
        plan_resources(too_big, [NodeCapacity("a", 2)])
    elastic = plan_resources(too_big, [NodeCapacity("head", 0)], elastic=True)
    assert elastic.cpus_per_worker == 4 and "autoscaler" in elastic.notes[0]


def test_summary_pareto_set_leaves_out_infeasible_trials(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, edited(lambda d: d.update(constraints=["forgetting <= 1.0"]))))
    metrics = [
        {"learning": 0.5, "forgetting": 0.5},  # front
        {"learning": 0.9, "forgetting": 2.0},  # best learning but infeasible
        {"learning": 0.4, "forgetting": 0.6},  # dominated by the first
        {"learning": 0.7, "forgetting": 0.9},  # front
        {"learning": 0.2, "forgetting": 0.1},  # front
    ]
    keys = [f"t{i:04d}" for i in range(len(metrics))]
    summary = space_frontier(space, keys, metrics)
    assert summary.feasible.tolist() == [True, False, True, True, True]
    assert summary.pareto_keys == ["t0000", "t0003", "t0004"]
    history = summary.history
    assert len(history) == 5 and all(a <= b for a, b in itertools.pairwise(history))
    assert history[1] == history[0]  # an infeasible trial adds no volume
    # The default reference lies past the worst *feasible* trial in each objective.
    assert summary.reference[0] < 0.2 and summary.reference[1] > 0.9
    params = [{"train.lr": 0.001 * (i + 1)} for i in range(len(metrics))]
    csv_lines = frontier_csv(summary, params, pareto_only=True).strip().splitlines()
    assert csv_lines[0] == "trial,learning,forgetting,feasible,pareto,train.lr"
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["t0000", "t0003", "t0004"]


def test_summary_uses_the_spaces_reference_point(tmp_path: Path) -> None:
    space = load_space(
        write_space(tmp_path, edited(lambda d: d.update(reference_point={"learning": 0.0, "forgetting": 1.0})))
    )
    summary = space_frontier(space, ["t0000"], [{"learning": 0.5, "forgetting": 0.5}])
    assert summary.reference == [0.0, 1.0] and summary.reference_source == "search space"
    assert summary.hypervolume == pytest.approx(0.25)


def test_secrets_never_become_params() -> None:
    config = {
        "model": {"name": "raycl-tiny-s", "hub_token": "abc", "pretrain_tokens_per_param": 20.0},
        "hub": {"api_key": "k", "revision": "hf_abcdef"},
        "train": {"lr": 0.001},
    }
    params = loggable_params(config)
    assert params == {"model.name": "raycl-tiny-s", "model.pretrain_tokens_per_param": "20.0", "train.lr": "0.001"}
    assert is_secret("aws.secret_access_key", "x") and is_secret("db.password", "x")
    assert not is_secret("train.cpu_threads", 1)
    assert (
        redact_url("postgresql://raycl:hunter2@10.0.0.5:5432/optuna") == "postgresql://raycl:***@10.0.0.5:5432/optuna"
    )
    assert redact_url("sqlite:///runs/smoke/optuna.db") == "sqlite:///runs/smoke/optuna.db"


def test_benchmark_retention_can_be_a_constraint_or_objective(tmp_path: Path) -> None:
    data = edited(
        lambda d: d.update(
            constraints=["bench_max_drop <= 3"],
            objectives={"learning": "maximize", "bench_raycl_retention_delta": "maximize"},
        )
    )
    space = load_space(write_space(tmp_path, data))
    assert [str(c) for c in space.constraints] == ["bench_max_drop <= 3"]
    # A task the trials do not run is caught before anything starts.
    typo = edited(lambda d: d.update(constraints=["bench_raycl_retension_delta >= -3"]))
    with pytest.raises(ConfigError, match=r"constraints\[0\]: 'bench_raycl_retension_delta' is not a metric"):
        load_space(write_space(tmp_path, typo))
    # Without benchmark tasks there is no benchmark metric.
    off = edited(
        lambda d: d.update(
            constraints=["bench_max_drop <= 3"], fixed={**d["fixed"], "eval": {"benchmarks": {"tasks": []}}}
        )
    )
    with pytest.raises(ConfigError, match="bench_max_drop"):
        load_space(write_space(tmp_path, off))
