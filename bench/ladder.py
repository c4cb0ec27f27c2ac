"""The offline model ladder: held-out base loss by model size and pretraining budget.

    python bench/ladder.py              # builds what the cache lacks (in parallel), writes reports/ladder.{md,json}

Builds every rung of the default world (or finds it in `$RAYCL_CACHE`), then tabulates the
held-out base loss (the retention probe) of each size at each budget, the parameter counts and the
minutes each rung took to build, and checks that loss falls along both axes.
"""

from __future__ import annotations

import argparse
import json

from report import machine, write_report

from raycl.config import WorldConfig
from raycl.models.builds import RungBuild, build_rungs
from raycl.models.ladder import (
    BUDGET_CAPS,
    LADDER,
    PretrainRecipe,
    budget_dirname,
    ladder_rung_dir,
    ladder_violations,
    peak_lr,
    pretrain_record,
)
from raycl.world.offline import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=None, help="rungs built at once; default one per core")
    args = parser.parse_args()
    world = load_world(WorldConfig())
    recipe = PretrainRecipe()
    # The grid of sizes x budgets; a rung pretrained only to a cap (the out-of-sample rung) is not part of it.
    grid = {name: rung for name, rung in LADDER.items() if name not in BUDGET_CAPS}
    build_rungs([RungBuild(name, WorldConfig()) for name in grid], args.processes)
    rungs = {}
    for name, rung in grid.items():
        rung_dir = ladder_rung_dir(name, world.text.base, world.tokenizer, world.id, recipe)
        build = json.loads((rung_dir / "rung.json").read_text())
        records = {budget: pretrain_record(rung_dir / budget_dirname(budget)) for budget in recipe.budgets}
        rungs[name] = {
            "architecture": vars(rung),
            "peak_lr": peak_lr(rung, recipe),
            "build_minutes": build["build_minutes"],
            "build_cpu_minutes": build["build_cpu_minutes"],
            "build_threads": build["threads"],
            "build_load_average": build["load_average"],
            "budgets": {f"{budget:g}": record for budget, record in records.items()},
        }

    losses = {
        name: {budget: r["budgets"][f"{budget:g}"]["heldout_base_loss"] for budget in recipe.budgets}
        for name, r in rungs.items()
    }
    problems = ladder_violations(losses)
    minutes = sum(r["build_minutes"] for r in rungs.values())
    cpu_minutes = sum(r["build_cpu_minutes"] for r in rungs.values())
    threads = "/".join(str(t) for t in sorted({r["build_threads"] for r in rungs.values()}))
    config = WorldConfig()
    intro = (
        f"One run of `python bench/ladder.py` on {machine()}. The rungs were built on {threads} torch thread(s) "
        f"in {minutes:.1f} minutes ({cpu_minutes:.1f} CPU minutes) on a 2-core machine shared with other jobs: "
        "wall minutes are noisy, CPU minutes measure the cost. Default offline world (seed "
        f"{config.seed}, {config.base_entities} base towns, vocab {config.vocab_size}). Each size is pretrained "
        "once with a warmup-stable-decay schedule; every budget is a cool-down branch "
        f"({recipe.cooldown:.0%} of its steps, LR linear to 0) of that one run. Budgets count tokens per "
        f"non-embedding parameter; batch {recipe.batch_size} x {recipe.block_size} tokens; peak LR "
        f"{recipe.lr:g} x {recipe.lr_width} / width."
    )
    header = [
        "size",
        "non-embedding params",
        "embedding params",
        "build minutes",
        "build CPU minutes",
        *(f"loss @ {budget:g} tok/param" for budget in recipe.budgets),
    ]
    rows = []
    for name, r in rungs.items():
        params = r["budgets"][f"{recipe.budgets[0]:g}"]
        rows.append(
            [
                name,
                f"{params['non_embedding_params']:,}",
                f"{params['embedding_params']:,}",
                f"{r['build_minutes']:.1f}",
                f"{r['build_cpu_minutes']:.1f}",
                *(f"{losses[name][budget]:.3f}" for budget in recipe.budgets),
            ]
        )
    verdict = (
        ["Held-out base loss falls along both axes: with size at every budget and with budget at every size."]
        if not problems
        else ["Where held-out base loss does **not** fall:", *(f"- {problem}" for problem in problems)]
    )
    notes = [
        (
            "Loss: mean next-token loss in nats on the base held-out split (`World.text.base.heldout`, examples "
            f"cut to {recipe.block_size} tokens), the retention probe of the continual stream."
        ),
        "",
        *verdict,
    ]
    data = {
        "machine": machine(), "world": config.model_dump(mode="json"), "world_id": world.id, "recipe": vars(recipe),
        "build_minutes_total": minutes, "build_cpu_minutes_total": cpu_minutes, "rungs": rungs,
        "violations": problems,
    }  # fmt: skip
    print(
        write_report(
            "ladder",
            "The offline model ladder: held-out base loss by size and pretraining budget",
            [intro],
            header,
            rows,
            notes,
            data,
        )
    )


if __name__ == "__main__":
    main()
