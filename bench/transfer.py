"""Scaling-law-guided transfer, checked: fit the scaling_laws sweep below its largest rung, predict, run there.

    python bench/transfer.py              # runs/scaling_laws, raycl-tiny-xl (~10 min on 2 busy cores)
    python bench/transfer.py --out-root /path/to/runs --model raycl-tiny-xl

What `raycl predict scaling_laws --model raycl-tiny-xl --verify` does: the registered laws are ranked
leave-one-size-out on the trials of the four smaller rungs only (raycl/analysis/protocol.yaml) and the best
fitted on them, the pick (least predicted forgetting at the fitted trials'
median learning) and a random search over the same ranges run at raycl-tiny-xl, and the measured
objectives are compared with the bootstrap intervals. Writes reports/transfer.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def main() -> None:
    from raycl.reporting import transfer
    from raycl.sweep import run_sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="scaling_laws")
    parser.add_argument("--model", default="raycl-tiny-xl")
    parser.add_argument("--out-root", type=Path, default=Path("runs"))
    parser.add_argument("--search-trials", type=int, default=6)
    parser.add_argument("--bootstrap", type=int, default=50)
    args = parser.parse_args()
    console = Console()
    source = transfer.load_source(args.sweep, args.out_root, REPORTS)
    record = transfer.predict(source, args.model, bootstrap=args.bootstrap, progress=console.print)
    record = transfer.verify(
        source,
        args.model,
        record,
        overrides={},
        search_trials=args.search_trials,
        out_root=args.out_root,
        seed=0,
        run=lambda path, root: run_sweep(path, out_root=root, console=console),
        bootstrap=args.bootstrap,
    )
    logged = transfer.log_on_parent(source, record)
    (REPORTS / "transfer.json").write_text(
        json.dumps(record | {"logged_on_parent_run": source.parent_run_id if logged else None}, indent=2)
    )
    (REPORTS / "transfer.md").write_text(markdown(record, transfer.describe(record)))
    console.print(transfer.describe(record), highlight=False, markup=False)


def markdown(record: dict, summary: str) -> str:
    rows = [
        f"| {name} | {entry['predicted']:.4g} | [{entry['low']:.4g}, {entry['high']:.4g}] | {entry['measured']:.4g} | "
        f"{entry['measured'] - entry['predicted']:+.3g} | {_verdict(entry)} | "
        f"{record['laws'][name]['name']}: `{record['laws'][name]['expression']}` |"
        for name, entry in record["comparison"].items()
    ]
    selection = [f"- {name}: {law['name']}, {law['selection']}{_score(law)}." for name, law in record["laws"].items()]
    search = record["random_search"]
    least = search["least_forgetting_meeting_requirement"]
    return "\n".join(
        [
            f"# Scaling-law-guided transfer: {record['sweep']} to {record['model']}",
            "",
            f"`python bench/transfer.py` (what `raycl predict {record['sweep']} "
            f"--model {record['model']} --verify` runs). Laws fitted on "
            f"{record['fitted_trials']} complete trials of sizes "
            f"{', '.join(f'{n:.3g}' for n in record['fitted_sizes'])} only, from "
            f"{record['source']}; {record['model']} has N = "
            f"{record['model_size']:.3g} non-embedding parameters. Context: "
            f"{', '.join(f'{k} = {v}' for k, v in record['context'].items())}. "
            f"Pick: lr {record['pick']['train.lr']:.3g}, replay ratio "
            f"{record['pick']['replay.ratio']:g}, the least predicted "
            f"forgetting at learning >= {record['required_learning']:.3g} (the "
            f"fitted trials' median). Intervals: 2.5-97.5 percentiles of "
            f"{record['bootstrap']} bootstrap refits (they cover the fit's "
            "uncertainty, not a trial's own noise).",
            "",
            "| objective | predicted | 95% interval | measured | measured - predicted | inside | law |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Inside is not the same as close: an interval whose high end exceeds its low end more than "
            "tenfold (the protocol's ratio) is marked uninformative and not counted as a hit.",
            "",
            f"Laws (each size below {record['model']} held out in turn):",
            "",
            *selection,
            "",
            f"Random search at {record['model']} over the sweep's ranges: {search['trials']} trials, "
            f"{search['meeting_requirement']} reached the required learning (least forgetting among them: "
            f"{'none' if least is None else least}); "
            f"{search['picked_dominated_by']} dominate the pick.",
            "",
            "| lr | replay ratio | learning | forgetting |",
            "|---|---|---|---|",
            *(
                f"| {row['train.lr']:.3g} | {row['replay.ratio']:g} | {row['learning']:.4g} | {row['forgetting']:.4g} |"
                for row in search["results"]
            ),
            "",
            f"Compute: one trial at {record['model']} took {record['compute']['trial_seconds_at_target']:.0f} s "
            f"({record['compute']['trial_flops_at_target']:.3g} FLOPs, 6 N "
            f"T); a {record['compute']['search_at_target_trials']}-trial "
            f"search there would cost about {record['compute']['search_at_target_seconds']:.0f} s "
            f"({record['compute']['search_at_target_flops']:.3g} FLOPs); the transfer ran one.",
            "",
            "```",
            summary,
            "```",
            "",
        ]
    )


def _verdict(entry: dict) -> str:
    if entry.get("uninformative"):
        return "uninformative interval"
    return "no interval" if entry["inside"] is None else "yes" if entry["inside"] else "no"


def _score(law: dict) -> str:
    if law.get("loso_error") is None or not law.get("best_baseline"):
        return ""
    return (
        f"; leave-one-size-out error {law['loso_error']:.1%} against the best baseline's "
        f"{law['best_baseline']['loso_error']:.1%} ({law['best_baseline']['name']}), difference "
        f"{_difference(law['best_law_vs_best_baseline'])}"
    )


def _difference(comparison: dict | None) -> str:
    if comparison is None:
        return "not computed"
    return f"{comparison['mean']:+.1%} [{comparison['ci_low']:+.1%}, {comparison['ci_high']:+.1%}]" + (
        " (excludes zero)" if comparison["excludes_zero"] else " (includes zero)"
    )


if __name__ == "__main__":
    main()
