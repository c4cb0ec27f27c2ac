"""What each trial costs the sweep's two stores: the driver's Optuna and MLflow writes of one trial, timed and sized.

    python bench/store_costs.py                     # 300 trials of `smoke` on sqlite: reports/store_costs.*
    python bench/store_costs.py --trials 20 --out /tmp/x

No Ray and no training: the driver's own code (raycl's OptunaSearcher and SweepTracker) makes the calls a trial of
`smoke` makes (ask with TPE, the child run with its params and config, `--evals` evaluation records, the final
metrics, stage record and tags, tell, end), so what is measured is the stores' side of a trial. Each store is a
fresh sqlite file on local disk; a PostgreSQL server on a cluster's head answers each call over the network instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from report import REPORTS, machine, write_report

from raycl.config.records import FinalReport, TrialAssignment
from raycl.config.result import REPORTED_METRICS, EvalRecord
from raycl.config.space import load_space
from raycl.sweep.study import OptunaSearcher, open_study
from raycl.sweep.tracking import SweepTracker


def final_report(key_number: int) -> dict:
    """A finished trial's last Tune result, numbers varied per trial."""
    metrics = {name: 1.0 + key_number * 1e-3 for name in REPORTED_METRICS}
    report = FinalReport(
        **metrics,
        stage_names=["a", "b"],
        stage_matrix=[[5.0, 5.0], [3.0, 4.5], [3.5, 3.0]],
        retention_losses=[1.0, 1.5, 2.0],
        stage_forgetting=[0.5, 0.0],
        node_ids=["node"],
    )
    return report.to_tune() | {"time_total_s": 9.0, "training_iteration": 3}


def evals(count: int) -> list[EvalRecord]:
    """A trial's evaluation records: quick ones, and full ones at its stage ends."""
    records = []
    for index in range(count):
        full = index in (0, count // 2, count - 1)
        extra = {"learning": 0.5, "forgetting": 0.1} if full else {}
        records.append(
            EvalRecord(stage=index * 2 // count, step=index * 10, new_loss=3.0, base_loss=2.0, full_eval=full, **extra)
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--evals", type=int, default=8, help="evaluation records per trial (smoke's trials: 8)")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    space = load_space("smoke", [f"budget.trials={args.trials}"])
    optuna_s, mlflow_s, ask_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="raycl-store-costs-") as folder:
        root = Path(folder)
        study = open_study(space, f"sqlite:///{root / 'optuna.db'}", resume=False)
        tracker = SweepTracker(f"sqlite:///{root / 'mlflow.db'}", space, root / "mlartifacts")
        tracker.open_parent({"raycl.study": space.name})
        searcher = OptunaSearcher(study, space, [], {"train.cpu_threads": 1}, root)
        sizes = {"optuna": [], "mlflow": []}
        records = evals(args.evals)
        for number in range(args.trials):
            trial_id = f"tune-{number}"
            started = time.perf_counter()
            suggestion = searcher.suggest(trial_id)
            asked = time.perf_counter()
            assignment = TrialAssignment.model_validate(suggestion)
            tracker.open_child(assignment)
            for record in records:
                tracker.log_eval(assignment.key, record)
            result = final_report(number)
            tracker.log_final(assignment.key, FinalReport.of(result))
            tracker.end_child(assignment.key, "FINISHED")
            logged = time.perf_counter()
            searcher.on_trial_complete(trial_id, result)
            told = time.perf_counter()
            ask_s.append(asked - started)
            optuna_s.append((asked - started) + (told - logged))
            mlflow_s.append(logged - asked)
            sizes["optuna"].append((root / "optuna.db").stat().st_size)
            sizes["mlflow"].append(
                (root / "mlflow.db").stat().st_size
                + sum(path.stat().st_size for path in (root / "mlartifacts").rglob("*") if path.is_file())
            )
    half = args.trials // 2

    def per_trial_bytes(name: str) -> float:
        return (sizes[name][-1] - sizes[name][half]) / (args.trials - 1 - half)

    def ends(seconds: list[float]) -> dict[str, float]:
        return {"first_20": statistics.median(seconds[:20]), "last_20": statistics.median(seconds[-20:])}

    data = {
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "trials": args.trials,
        "evals_per_trial": args.evals,
        "sampler": space.sampler.name,
        "optuna_s_per_trial": ends(optuna_s),
        "optuna_ask_s": ends(ask_s),
        "mlflow_s_per_trial": ends(mlflow_s),
        "optuna_bytes_per_trial": per_trial_bytes("optuna"),
        "mlflow_bytes_per_trial": per_trial_bytes("mlflow"),
        "optuna_s": optuna_s,
        "mlflow_s": mlflow_s,
    }

    def row(label: str, name: str) -> list[str]:
        return [label, f"{data[name]['first_20']:.3f}", f"{data[name]['last_20']:.3f}"]

    rows = [
        row("Optuna (ask with TPE, tell, user attrs), s per trial", "optuna_s_per_trial"),
        row("  of which ask (the sampler)", "optuna_ask_s"),
        row(f"MLflow (child run, params, config, {args.evals} evals, final, end), s per trial", "mlflow_s_per_trial"),
        ["Optuna database growth, KiB per trial (second half)", f"{data['optuna_bytes_per_trial'] / 1024:.1f}", ""],
        ["MLflow store and artifacts, KiB per trial (second half)", f"{data['mlflow_bytes_per_trial'] / 1024:.1f}", ""],
    ]
    print(
        write_report(
            "store_costs",
            "What each trial costs the Optuna and MLflow stores",
            [
                f"`python bench/store_costs.py --trials {args.trials}`: space `smoke`, sqlite stores on local disk; "
                f"{data['machine']}; {data['measured_at']}. Medians of the first and last 20 trials."
            ],  # fmt: skip
            ["measure", "first 20 trials", "last 20 trials"],
            rows,
            ["Used in docs/cluster.md to size a 1,000-trial sweep."],
            data,
            directory=args.out,
        )
    )


if __name__ == "__main__":
    main()
