"""Out-of-sample test of the registered scaling laws on a sixth rung: predict before it exists, score after.

    python bench/out_of_sample.py predict --rung raycl-tiny-xxl --non-embedding-params 630000
    git add reports/scaling_laws/out_of_sample.json && git commit   # before the rung is pretrained
    ... pretrain the rung, run its trials (the same configurations as the largest rung's), report them ...
    python bench/out_of_sample.py measure --results runs/scaling_laws_xxl        # a sweep folder (mlflow.db)
    python bench/out_of_sample.py measure --results path/to/report/pareto.csv    # or its report's table

`predict` fits every registered law and baseline (raycl/analysis/protocol.yaml) on the sweep's sizes (its store
under --out-root, else reports/NAME/pareto.csv) and writes each one's predicted objectives for the new rung at every
configuration its largest rung ran, with the frozen parameters, a timestamp and the git commit, to
reports/NAME/out_of_sample.json. It refuses to overwrite predictions already there (--force to redo them).
`measure` adds the rung's measured trials, each frozen predictor's prediction from their measured inputs, the errors
(protocol scoring) and the measuring commit, and writes out_of_sample.md beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports"
ROOT = REPORTS.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["predict", "measure"])
    parser.add_argument("--sweep", default="scaling_laws")
    parser.add_argument("--out-root", type=Path, default=Path("runs"))
    parser.add_argument("--rung", help="predict: the new rung's model name")
    parser.add_argument("--non-embedding-params", type=float, help="predict: the new rung's non-embedding parameters")
    parser.add_argument("--results", type=Path, help="measure: the rung's sweep folder or a report's pareto.csv")
    parser.add_argument("--force", action="store_true", help="predict: replace predictions already written")
    args = parser.parse_args()
    path = REPORTS / args.sweep / "out_of_sample.json"
    if args.step == "predict":
        if args.rung is None or args.non_embedding_params is None:
            parser.error("predict needs --rung and --non-embedding-params")
        predict(args, path)
    else:
        if args.results is None:
            parser.error("measure needs --results")
        measure(args, path)


def predict(args: argparse.Namespace, path: Path) -> None:
    from raycl.reporting import out_of_sample, transfer

    if path.is_file() and not args.force:
        raise SystemExit(
            f"{path}: predictions exist already (made {json.loads(path.read_text())['predicted_at']}); "
            "--force replaces them"
        )
    source = transfer.load_source(args.sweep, args.out_root, REPORTS)
    record = out_of_sample.predict_rung(
        source.rows, list(source.space.parameters), args.rung, args.non_embedding_params, progress=print
    )
    record = {"sweep": args.sweep, "source": source.origin} | record | out_of_sample.git_commit(ROOT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    configurations = len(record["targets"]["forgetting"]["configurations"])
    print(
        f"{path}: {configurations} configurations of {args.rung}, predicted at commit {record['git_commit']}"
        + (" (uncommitted changes)" if record["git_dirty"] else "")
    )


def measure(args: argparse.Namespace, path: Path) -> None:
    from raycl.reporting import out_of_sample, transfer
    from raycl.reporting.report import load_sweep

    if not path.is_file():
        raise SystemExit(f"{path}: no predictions (run `python bench/out_of_sample.py predict` first)")
    record = json.loads(path.read_text())
    results = args.results
    rows = transfer.read_table(results) if results.suffix == ".csv" else load_sweep(results.name, results.parent).rows
    scored = out_of_sample.score_rung(record, rows)
    commit = out_of_sample.git_commit(ROOT)
    scored |= {"results": str(results), "measured_commit": commit["git_commit"], "measured_dirty": commit["git_dirty"]}
    path.write_text(json.dumps(scored, indent=2))
    path.with_suffix(".md").write_text(markdown(scored))
    print(markdown(scored))


def markdown(record: dict) -> str:
    lines = [
        f"# Out-of-sample: {record['rung']} ({record['non_embedding_params']:.3g} non-embedding parameters)",
        "",
        f"Predicted {record['predicted_at']} at commit {record['git_commit']} from sizes "
        f"{', '.join(f'{n:.3g}' for n in record['fitted_sizes'])} (protocol sha256 {record['protocol_sha256'][:12]}); "
        f"measured {record['measured_at']} at commit {record['measured_commit']}: {record['measured_trials']} trials "
        f"from {record['results']}. Error: mean |relative error| of the objective; frozen parameters at each measured "
        "trial's inputs, and the numbers written before the rung existed on the configurations that match.",
        "",
    ]
    for target, entry in record["measurements"].items():
        lines += [
            f"## {target}",
            "",
            "| predictor | kind | error | absolute error | preregistered error (trials) |",
            "|---|---|---|---|---|",
        ]
        for error in entry["errors"]:
            lines.append(
                f"| {error['name']} | {error['kind']} | {_percent(error['error'])} | "
                f"{'n/a' if error['abs_error'] is None else format(error['abs_error'], '.3g')} | "
                f"{_percent(error['preregistered_error'])} ({error['preregistered_trials']}) |"
            )
        lines.append("")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    main()
