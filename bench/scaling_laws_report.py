"""The shipped example report: `raycl report scaling_laws` written to reports/scaling_laws/.

    raycl sweep scaling_laws                   # runs/scaling_laws (~30 min on 2 cores)
    python bench/scaling_laws_report.py        # reports/scaling_laws/report.md, .html, pareto.csv, fits.json
    python bench/scaling_laws_report.py --out-root /path/to/runs --bootstrap 500

`raycl report NAME` writes a user's report under runs/NAME/report/; this script is the one writer of the
example in reports/ that the README links (and that `raycl predict` falls back on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def main() -> None:
    from raycl.reporting.report import build_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="scaling_laws")
    parser.add_argument("--out-root", type=Path, default=Path("runs"))
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    outcome = build_report(
        args.sweep, out_root=args.out_root, out=REPORTS / args.sweep, bootstrap=args.bootstrap, progress=print
    )
    print(
        f"{outcome.directory / 'report.md'}: {outcome.complete} complete trials, "
        f"Pareto set {', '.join(outcome.pareto_keys)}"
    )


if __name__ == "__main__":
    main()
