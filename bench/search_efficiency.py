"""The searcher against random search: hypervolume against trials, TPE vs random, over seeds.

    python bench/search_efficiency.py                 # 4 seeds x 2 samplers x 24 trials (~15 min on 2 cores)
    python bench/search_efficiency.py --seeds 0 1 --trials 12

The scaling_laws space's parameters made cheaper (the two smallest rungs, 2 stages of 15 or 30 steps, a
lighter evaluation), run once per sampler and seed. Hypervolume of the first n trials (by trial number)
against one reference point for every run (10% of the range past the worst trial of them all); 95%
t-intervals over seeds. `trials_random_needs`: the fewest trials at which random search's mean hypervolume
reaches TPE's at the full budget (None when it never does within the budget). Writes
reports/search_efficiency.{md,json}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from report import machine, write_report
from rich.console import Console

from raycl.analysis.pareto import default_reference, hypervolume_history
from raycl.analysis.seeds import mean_interval

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")


def space(sampler: str, seed: int, trials: int) -> dict:
    return {
        "description": f"scaling_laws made cheap, {sampler} sampler",
        "objectives": {"learning": "maximize", "forgetting": "minimize"},
        "parameters": {
            "model.name": {"type": "categorical", "choices": ["raycl-tiny-xs", "raycl-tiny-s"]},
            "model.pretrain_tokens_per_param": {"type": "categorical", "choices": [5.0, 10.0, 20.0, 40.0]},
            "train.lr": {"type": "log_uniform", "low": 3.0e-5, "high": 3.0e-4},
            "replay.ratio": {"type": "categorical", "choices": [0.0, 0.125, 0.25]},
            "train.steps_per_stage": {"type": "categorical", "choices": [15, 30]},
        },
        "fixed": {
            "world": {"num_stages": 2},
            "method": {"name": "full"},
            "eval": {"max_examples": 32, "benchmarks": {"limit": 16}},
        },
        "budget": {"trials": trials, "concurrency": 2, "workers_per_trial": 1, "cpus_per_worker": 1},
        "sampler": {"name": sampler},
        "seed": seed,
    }


def run(sampler: str, seed: int, trials: int, scratch: Path) -> dict:
    """One sweep: its objectives in trial-number order (NaN for a trial that did not complete) and wall time."""
    import optuna

    from raycl.sweep import run_sweep

    path = scratch / f"search_{sampler}_{seed}.yaml"
    path.write_text(yaml.safe_dump(space(sampler, seed, trials), sort_keys=False))
    started = time.perf_counter()
    outcome = run_sweep(path, out_root=scratch / "runs", console=Console(quiet=True))
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=outcome.name, storage=outcome.storage)
    values = [
        list(trial.values) if trial.state.name == "COMPLETE" else [float("nan")] * 2
        for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ]
    return {"sampler": sampler, "seed": seed, "values": values, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs = [run(sampler, seed, args.trials, Path(scratch)) for seed in args.seeds for sampler in SAMPLERS]
    every = np.array([v for r in runs for v in r["values"]], dtype=float)
    reference = default_reference(every, DIRECTIONS)
    curves: dict[str, list[list[float]]] = {sampler: [] for sampler in SAMPLERS}
    for r in runs:
        history = hypervolume_history(np.array(r["values"], dtype=float), DIRECTIONS, reference)
        curves[r["sampler"]].append(history.tolist())
    summary = {}
    for sampler, histories in curves.items():
        table = np.array(histories)
        intervals = [mean_interval(table[:, n]) for n in range(table.shape[1])]
        summary[sampler] = [
            {"trials": n + 1, "mean": float(table[:, n].mean()), "ci_low": low, "ci_high": high}
            for n, (low, high) in enumerate(intervals)
        ]
    target = summary["tpe"][-1]["mean"]
    needs = next((row["trials"] for row in summary["random"] if row["mean"] >= target), None)
    differences = np.array(curves["tpe"])[:, -1] - np.array(curves["random"])[:, -1]  # paired by seed
    low, high = mean_interval(differences)
    data = {
        "machine": machine(), "seeds": args.seeds, "trials": args.trials, "reference": reference.tolist(),
        "samplers": summary, "trials_random_needs": needs, "default_sampler": "tpe",
        "tpe_minus_random_at_budget": {"mean": float(differences.mean()), "ci_low": low, "ci_high": high},
        "wall_s": time.perf_counter() - started, "runs": runs,
    }  # fmt: skip
    checkpoints = sorted({4, 8, 12, 16, 20, args.trials} & set(range(1, args.trials + 1)))
    rows = [
        [str(n), *(f"{summary[s][n - 1]['mean']:.4f} [{summary[s][n - 1]['ci_low']:.4f}, "
                   f"{summary[s][n - 1]['ci_high']:.4f}]" for s in SAMPLERS)]
        for n in checkpoints
    ]  # fmt: skip
    verdict = (
        f"TPE minus random at {args.trials} trials (paired by seed): "
        f"{differences.mean():+.4f} [{low:+.4f}, {high:+.4f}]; "
        + (
            f"random search reaches TPE's mean hypervolume at {args.trials} trials after {needs} trials."
            if needs is not None
            else f"random search does not reach TPE's mean hypervolume at {args.trials} trials within {args.trials}."
        )
    )
    print(
        write_report(
            "search_efficiency",
            "The searcher against random search: hypervolume by trials",
            [
                f"One run of `python bench/search_efficiency.py` on {machine()}, {len(args.seeds)} seeds x "
                f"{len(SAMPLERS)} samplers x {args.trials} trials, {data['wall_s'] / 60:.1f} min. The scaling_laws "
                "parameters on the two smallest rungs, 2 stages of 15 or 30 steps; one reference point for all "
                "runs; 95% t-intervals over seeds."
            ],
            ["trials", *(f"hypervolume, {s}" for s in SAMPLERS)],
            rows,
            [verdict],
            data,
        )
    )


if __name__ == "__main__":
    main()
