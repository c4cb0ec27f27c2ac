"""Forgetting mitigation side by side on one stream: none, replay 10% / 25%, self-generated replay
(next-token loss or KL to the base), EWC.

    python bench/replay.py            # writes reports/replay.{md,json}

One learning rate, high enough to forget (3e-3), the default offline world and raycl-tiny-s; every
number comes from this one run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from report import machine, write_report

from raycl.config import TrialConfig
from raycl.training.trial import run_trial

CONDITIONS = {
    "none": {},
    "replay 10%": {"replay.ratio": 0.1},
    "replay 25%": {"replay.ratio": 0.25},
    "self-generated 25%, NTP": {"replay.ratio": 0.25, "replay.source": "self_generated"},
    "self-generated 25%, KL (lambda 1)": {"replay.ratio": 0.25, "replay.source": "self_generated", "replay.loss": "kl"},
    "EWC (lambda 100)": {"ewc.weight": 100.0},
}


def main() -> None:
    base = TrialConfig().with_overrides({"train.lr": 3e-3})
    results = {}
    for label, overrides in CONDITIONS.items():
        with tempfile.TemporaryDirectory() as out:
            results[label] = run_trial(base.with_overrides(overrides), Path(out))
    none = results["none"]
    rows = [
        [
            label,
            f"{r.learning:.3f}",
            f"{r.forgetting:+.3f}",
            f"{r.forgetting / none.forgetting:.2f}",
            f"{r.tokens_per_s:,.0f}",
            f"{r.replay_generation_fraction:.1%}",
        ]
        for label, r in results.items()
    ]
    data = {
        "machine": machine(),
        "config": base.model_dump(mode="json"),
        "conditions": {
            label: r.model_dump(
                include={
                    "learning",
                    "forgetting",
                    "bwt",
                    "tokens_per_s",
                    "replay_generation_fraction",
                    "stage_matrix",
                    "retention_losses",
                }
            )
            | {"overrides": CONDITIONS[label]}
            for label, r in results.items()
        },
    }
    print(
        write_report(
            "replay",
            "Forgetting mitigation on the offline world",
            [
                f"One run of `python bench/replay.py` on {machine()}: raycl-tiny-s, "
                f"{len(none['stage_matrix']) - 1} stages x {base.train.steps_per_stage} steps, lr {base.train.lr}."
            ],
            ["condition", "learning", "forgetting (nats)", "forgetting vs none", "tokens/s", "sampling share of time"],
            rows,
            [
                "learning: 1 - ppl_after/ppl_before on the new stages' held-out split; forgetting: rise of held-out "
                "loss on the base corpus. Tokens/s counts replay rows too; the sampling share is the time spent "
                "generating self-replay over the stream's training and evaluation time."
            ],
            data,
        )
    )


if __name__ == "__main__":
    main()
