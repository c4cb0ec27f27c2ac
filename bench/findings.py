"""Seven published forgetting findings, reproduced on the offline world with seeds and 95% intervals.

    python bench/findings.py            # every trial (2 at a time), then reports/findings.{md,json} + figures
    python bench/findings.py --seeds 8  # more seeds: only the new ones train, the rest come from the cache
    python bench/findings.py --quick --out /tmp/findings   # a smoke check: 3 seeds, 10-step trials

Every trial is one fine-tuning stage of the offline world (stage 1, astronomy chats) run through the trial
engine; seeds are `train.seed` (data order, replay draws, LoRA init, self-generated samples): the world and
the pretrained ladder are the same in every seed, so the intervals cover training noise, not world or
pretraining noise. Finished trials are appended to `runs/findings/trials.jsonl`: a rerun after a crash
takes them from there instead of training them again (`--fresh` starts over).

Matched learning is by interpolation across steps: each trial evaluates every `every` steps on the same
held-out examples, and forgetting is read where the held-out new loss first reaches a common target
(linear between the two evaluations around it), which is what a stop rule at that target would give,
to within an evaluation interval. The target of a finding is the lowest new loss that every one of its
trials reaches, so no trial is extrapolated; it is chosen from learning alone, never from forgetting.
Where the compared base models start the stage at different new losses (findings 3 and 4), forgetting is also
read at an equal drop of new loss, as a secondary measure reported beside the effect.

Intervals: a Student-t 95% interval over per-seed values; where a value compares conditions, every
condition of a seed shares its data order, so the differences are seed-paired.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from report import REPORTS  # noqa: E402

from raycl.analysis.seeds import mean_interval  # noqa: E402
from raycl.config import TrialConfig  # noqa: E402
from raycl.evaluation.metrics import untrained_loss  # noqa: E402
from raycl.models.ladder import LADDER, PretrainRecipe, peak_lr  # noqa: E402
from raycl.training.trial import run_trial  # noqa: E402

CACHE = REPORTS.parent / "runs" / "findings" / "trials.jsonl"
SIZES = tuple(LADDER)  # smallest to largest


@dataclass(frozen=True)
class Scale:
    """How much of everything: the full run, or the smoke check."""

    seeds: int
    steps: int  # fine-tuning steps of a trial at the model's own learning rate
    every: int  # steps between evaluations
    max_examples: int  # held-out examples per split, the same ones at every evaluation
    sizes: tuple[str, ...]  # finding 3's ladder
    model: str  # the model of findings 2, 4, 5 and 6
    small: str  # the model of findings 1 and 7
    slow_factors: tuple[int, ...]  # finding 7: learning-rate divisors, each run that many times longer


# raycl-tiny-xl is left out of finding 3: it costs as much as the four smaller rungs together, and the ladder's
# own record shows it no better than raycl-tiny-l on the base corpus. Trials are short because learning is fast:
# at these learning rates the new loss falls most of the way within 60 steps.
FULL = Scale(
    seeds=5,
    steps=60,
    every=5,
    max_examples=64,
    sizes=SIZES[:4],
    model="raycl-tiny-m",
    small="raycl-tiny-s",
    slow_factors=(10,),
)
QUICK = Scale(
    seeds=3,
    steps=10,
    every=5,
    max_examples=16,
    sizes=SIZES[:2],
    model="raycl-tiny-xs",
    small="raycl-tiny-xs",
    slow_factors=(2,),
)


def finetune_lr(model: str) -> float:
    """A third of the rung's peak pretraining LR: the ladder's width scaling (1/width), one fine-tuning notch below."""
    return peak_lr(LADDER[model], PretrainRecipe()) / 3


def trial(
    scale: Scale, seed: int, model: str, steps: int | None = None, every: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """The overrides of one trial: one stage of the world, no lm-eval probes, evaluations every `every` steps."""
    every = scale.every if every is None else every
    return {
        "world.num_stages": 1,
        "model.name": model,
        "train.lr": finetune_lr(model),
        "train.steps_per_stage": steps or scale.steps,
        "train.seed": seed,
        "eval.every_steps": every,
        "eval.max_examples": scale.max_examples,
        "eval.quick_max_examples": scale.max_examples,
        "eval.benchmarks.tasks": [],
    } | overrides


def key(overrides: dict[str, Any]) -> str:
    """The whole trial config, so that two findings asking for the same trial in other words share it."""
    return json.dumps(TrialConfig().with_overrides(overrides).model_dump(mode="json"), sort_keys=True)


# ---- the designs: per finding, its conditions, each a function of the seed -------------------------------------


def replay_ratio_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    # Batch 32, so that one replay row is 3.1%: the smallest ratio a batch can hold, inside the published 1-5%.
    rows = (0, 1, 2, 4, 8)
    return {
        f"{r}/32": (
            lambda seed, r=r: trial(s, seed, s.small, every=0, **{"train.batch_size": 32, "replay.ratio": r / 32})
        )
        for r in rows
    }


def self_replay_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    return {
        "none": lambda seed: trial(s, seed, s.model),
        "real replay 25%": lambda seed: trial(s, seed, s.model, **{"replay.ratio": 0.25}),
        "self-generated 25% + KL": lambda seed: trial(
            s, seed, s.model, **{"replay.ratio": 0.25, "replay.source": "self_generated", "replay.loss": "kl"}
        ),
    }


def size_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    return {size: (lambda seed, size=size: trial(s, seed, size)) for size in s.sizes}


def budget_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    return {
        f"{b:g}": (lambda seed, b=b: trial(s, seed, s.model, **{"model.pretrain_tokens_per_param": b}))
        for b in (5.0, 10.0, 20.0, 40.0)
    }


def method_overrides(s: Scale) -> dict[str, dict[str, Any]]:
    # LoRA at 10x the full LR (Biderman et al. tune LoRA an order of magnitude higher), and at full's LR for a
    # second point of its front; GaLore at 1/galore_scale (4x), so its scaled update is AdamW's size.
    # Rank 8: LoRA's default, GaLore's d/4 on raycl-tiny-m.
    lr = finetune_lr(s.model)
    lora = {"method.name": "lora", "method.lora_rank": 8}
    return {
        "full": {},
        "LoRA r8": lora | {"train.lr": 10 * lr},
        "LoRA r8, full's LR": lora,
        "GaLore r8": {"method.name": "galore", "method.galore_rank": 8, "train.lr": 4 * lr},
    }


def method_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    return {label: (lambda seed, o=o: trial(s, seed, s.model, **o)) for label, o in method_overrides(s).items()}


def power_law_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    # LoRA, as Kalajdzievski fine-tunes; twice as long as the others, for more than a decade of steps.
    return {"LoRA r8": lambda seed: trial(s, seed, s.model, steps=2 * s.steps, **method_overrides(s)["LoRA r8"])}


def lr_replay_design(s: Scale) -> dict[str, Callable[[int], dict]]:
    lr = finetune_lr(s.small)
    design = {
        "lr": lambda seed: trial(s, seed, s.small),
        "lr + replay 12.5%": lambda seed: trial(s, seed, s.small, **{"replay.ratio": 0.125}),
    }
    for f in s.slow_factors:
        # Evaluated f/2 times less often: about as many evaluations before the target as at the full LR.
        design[f"lr/{f}"] = lambda seed, f=f: trial(
            s, seed, s.small, steps=s.steps * f, every=s.every * f // 2, **{"train.lr": lr / f}
        )
    return design


# ---- running the trials --------------------------------------------------------------------------------------


def run_one(overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one trial and keep what the findings read: final metrics and the (step, new loss, base loss) curve."""
    config, started_at = TrialConfig().with_overrides(overrides), time.time()
    with tempfile.TemporaryDirectory() as out:
        r = run_trial(config, Path(out))
    matrix, retention = r.stage_matrix, r.retention_losses
    curve = [[0, matrix[0][0], retention[0]]]
    curve += [[c["step"], c["stage_losses"][0], c["base_loss"]] for c in r.curves]
    curve.append([config.train.steps_per_stage, matrix[-1][0], retention[-1]])
    return {
        "key": key(overrides),
        "overrides": overrides,
        **{
            name: getattr(r, name)
            for name in (
                "learning",
                "learning_nats",
                "forgetting",
                "forgetting_fraction",
                "base_loss_before",
                "num_params_non_embedding",
                "train_tokens",
                "new_tokens",
                "wall_time_s",
            )
        },
        "base_loss_init": untrained_loss(r.config["world"]["vocab_size"]),
        "curve": curve,
        "started_at": started_at,
        "finished_at": time.time(),
        "load_average": os.getloadavg()[0],
    }


def run_all(pending: list[dict[str, Any]], cache: Path, workers: int) -> None:
    """Run the trials not in `cache` yet, `workers` at a time, appending each to the cache as it finishes."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Longest first (by steps x batch x width), so the last trials to start are short ones.
    pending = sorted(
        pending,
        key=lambda o: (
            -o["train.steps_per_stage"] * o.get("train.batch_size", 16) * LADDER[o["model.name"]].hidden_size ** 2
        ),
    )
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, cache.open("a") as sink:
        futures = [pool.submit(run_one, o) for o in pending]
        for done, future in enumerate(as_completed(futures), 1):
            record = future.result()
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"[{done}/{len(pending)}] {record['wall_time_s']:.0f}s {json.dumps(record['overrides'])}", flush=True)


def load_cache(cache: Path) -> dict[str, dict[str, Any]]:
    """The cached trials by key, recomputed from each one's overrides: a key written under an older TrialConfig
    (fewer fields) still finds its trial, since fields added since default to what the trial ran with."""
    if not cache.exists():
        return {}
    return {key(record["overrides"]): record for record in map(json.loads, cache.read_text().splitlines())}


# ---- statistics -----------------------------------------------------------------------------------------------


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval over per-seed values."""
    return (float(np.mean(values)), *mean_interval(values))


def at_target(curve: Sequence[Sequence[float]], target: float, base_loss_init: float) -> dict[str, float]:
    """Step, forgetting (nats) and forgetting fraction where the new loss first reaches `target`,
    linear between the evaluations around that point (what a stop rule at the target would see)."""
    steps, new, base = (np.array(column, dtype=float) for column in zip(*curve))
    i = int(np.argmax(new <= target + 1e-12))
    if new[i] > target + 1e-12:
        raise ValueError(f"the curve never reaches the target new loss {target:.4f} (lowest {new.min():.4f})")
    w = 0.0 if i == 0 else (new[i - 1] - target) / (new[i - 1] - new[i])
    j = max(i - 1, 0)
    step, base_loss = steps[j] + w * (steps[i] - steps[j]), base[j] + w * (base[i] - base[j])
    return {
        "step": float(step),
        "forgetting": float(base_loss - base[0]),
        "forgetting_fraction": float((base_loss - base[0]) / (base_loss_init - base[0])),
    }


def common_target(records: Sequence[dict[str, Any]]) -> float:
    """The lowest held-out new loss every trial reaches: a level of learning none has to extrapolate to."""
    return max(min(point[1] for point in r["curve"]) for r in records)


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])


# ---- one finding ----------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One row of the report: the effect of every seed, the published direction, and how to read it."""

    finding: str
    source: str
    setting: dict[str, Any]
    metric: str
    per_seed: list[float]  # the effect of each seed, from which effect and interval are computed
    direction: int  # +1 or -1: the sign the literature reports; 0: either sign is a reproduction
    threshold: float = 0.0  # the interval must clear this value in that direction
    prerequisite: bool = True  # a further part of the finding that must hold too (stated in the note)
    note: str = ""
    caveat: str = ""  # a part of the published finding that does not hold although the effect does (shown in the table)
    raw: dict[str, Any] | None = None  # per-seed values of every condition, to recompute everything

    def as_json(self) -> dict[str, Any]:
        effect, low, high = t_interval(self.per_seed)
        if self.direction > 0:
            reproduced = low > self.threshold
        elif self.direction < 0:
            reproduced = high < self.threshold
        else:
            reproduced = low > self.threshold or high < self.threshold
        reproduced = reproduced and self.prerequisite
        return {
            "finding": self.finding,
            "source": self.source,
            "setting": self.setting,
            "metric": self.metric,
            "effect": effect,
            "ci_low": low,
            "ci_high": high,
            "seeds": len(self.per_seed),
            "reproduced": bool(reproduced),
            "note": self.note,
            "caveat": self.caveat,
            "per_seed_effect": self.per_seed,
            "raw": self.raw,
        }


def by_seed(design: dict[str, Callable[[int], dict]], seeds: int, results: dict[str, dict]) -> dict[str, list[dict]]:
    """Each condition's records, in seed order."""
    return {label: [results[key(make(seed))] for seed in range(seeds)] for label, make in design.items()}


def setting_of(overrides: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a finding's reference trial trains: model, budget, optimisation and evaluation, plus `extra`."""
    c = TrialConfig().with_overrides(overrides)
    return {
        "model": c.model.name,
        "pretrain_tokens_per_param": c.model.pretrain_tokens_per_param,
        "lr": float(f"{c.train.lr:.3g}"),
        "steps": c.train.steps_per_stage,
        "batch_size": c.train.batch_size,
        "seq_len": c.train.seq_len,
        "eval_every_steps": c.eval.every_steps,
        "heldout_examples": c.eval.max_examples,
        "stages": c.world.num_stages,
    } | extra


def finding_replay_ratio(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = replay_ratio_design(s)
    runs = by_seed(design, s.seeds, results)
    ratios = [int(label.split("/")[0]) / 32 for label in runs]
    forgetting = {label: [r["forgetting"] for r in rs] for label, rs in runs.items()}
    none, smallest = forgetting["0/32"], forgetting["1/32"]
    slopes = [slope(ratios, [forgetting[label][i] for label in runs]) for i in range(s.seeds)]
    share = [1 - a / b for a, b in zip(smallest, none)]
    falls = all(np.mean(forgetting[a]) > np.mean(forgetting[b]) for a, b in zip(list(runs), list(runs)[1:]))
    note = (
        f"Equal steps and tokens (Ibrahim et al. compare at a fixed token budget, not at matched learning). "
        f"One replay row in 32 (3.1%) removes {np.mean(share):.0%} of the forgetting on average; mean forgetting "
        f"{'falls at every step of the ratio' if falls else 'does not fall at every step of the ratio'} "
        f"({', '.join(f'{label}: {np.mean(v):.3f}' for label, v in forgetting.items())} nats); least-squares slope "
        f"of forgetting on the ratio {ci_text(slopes, 2)} nats per unit ratio."
    )
    finding = Finding(
        "1. Forgetting falls with the replay ratio; 1-5% replay already helps",
        "Ibrahim et al. 2024; Bethune et al. 2025",
        setting_of(design["0/32"](0), replay_rows_of_32=[0, 1, 2, 4, 8]),
        "forgetting (nats) without replay minus with one replay "
        "row in 32 (3.1%), at equal steps; positive: replay helps",
        [a - b for a, b in zip(none, smallest)],
        direction=1,
        note=note,
        raw={
            "ratios": ratios,
            "forgetting": forgetting,
            "learning": {lb: [r["learning"] for r in rs] for lb, rs in runs.items()},
            "slope_per_seed": slopes,
        },
    )

    def figure(ax):
        for i in range(s.seeds):
            ax.plot(ratios, [forgetting[label][i] for label in runs], color="0.75", lw=0.8)
        ax.errorbar(
            ratios,
            [np.mean(v) for v in forgetting.values()],
            yerr=[t_interval(v)[2] - np.mean(v) for v in forgetting.values()],
            marker="o",
            capsize=3,
        )
        ax.set(xlabel="replay ratio (rows of 32)", ylabel="forgetting (nats)")

    return finding, figure


def matched_runs(design: dict[str, Callable[[int], dict]], s: Scale, results: dict) -> tuple[dict, float, dict]:
    """Each condition's records by seed, the finding's common target new loss, and each record's point at it."""
    runs = by_seed(design, s.seeds, results)
    target = common_target([r for rs in runs.values() for r in rs])
    return (
        runs,
        target,
        {label: [at_target(r["curve"], target, r["base_loss_init"]) for r in rs] for label, rs in runs.items()},
    )


def matched_by_drop(runs: dict[str, list[dict]]) -> tuple[float, dict[str, list[dict[str, float]]]]:
    """Each record's point at an equal drop of its own new loss: the largest drop every trial reaches."""
    records = [r for rs in runs.values() for r in rs]
    drop = min(r["curve"][0][1] - min(point[1] for point in r["curve"]) for r in records)
    return drop, {
        label: [at_target(r["curve"], r["curve"][0][1] - drop, r["base_loss_init"]) for r in rs]
        for label, rs in runs.items()
    }


def slope_by_seed(x: Sequence[float], at: dict[str, list[dict]], seeds: int, name: str = "forgetting") -> list[float]:
    """Per seed, the least-squares slope of `name` at the matched point on `x` (one x per condition)."""
    return [slope(x, [ms[i][name] for ms in at.values()]) for i in range(seeds)]


def ci_text(values: Sequence[float], digits: int = 3, sign: str = "+") -> str:
    mean, low, high = t_interval(values)
    return f"{mean:{sign}.{digits}f} (95% CI [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}])"


def listing(means: dict[str, float], unit: str = "") -> str:
    return ", ".join(f"{label} {value:.3f}" for label, value in means.items()) + unit


def sweep_figure(x: Sequence[float], at: dict[str, list[dict]], seeds: int, xlabel: str, target: float) -> Callable:
    """Forgetting at the target against a swept quantity: one grey line per seed, the mean over seeds on top."""

    def figure(ax):
        per_seed = np.array([[m["forgetting"] for m in ms] for ms in at.values()])  # conditions x seeds
        for i in range(seeds):
            ax.plot(x, per_seed[:, i], color="0.75", lw=0.8)
        ax.plot(x, per_seed.mean(axis=1), marker="o")
        ax.set(
            xscale="log",
            xlabel=xlabel,
            ylabel=f"forgetting at new loss {target:.3f} (nats)",
            xticks=x,
            xticklabels=[f"{v:g}" for v in x],
        )
        ax.minorticks_off()

    return figure


def trajectory_figure(runs: dict[str, list[dict]], target: float) -> Callable:
    """Forgetting against held-out new loss along each condition's training, mean over seeds, target marked."""

    def figure(ax):
        for label, rs in runs.items():
            new = np.mean([[p[1] for p in r["curve"]] for r in rs], axis=0)
            forgot = np.mean([[p[2] - r["curve"][0][2] for p in r["curve"]] for r in rs], axis=0)
            ax.plot(new, forgot, marker=".", label=label)
        ax.axvline(target, color="k", ls=":", lw=1, label=f"target {target:.3f}")
        ax.invert_xaxis()
        ax.set(xlabel="held-out new loss (nats; learning goes right)", ylabel="forgetting (nats)")
        ax.legend(fontsize=7)

    return figure


def finding_self_replay(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = self_replay_design(s)
    runs, target, at = matched_runs(design, s, results)
    f = {label: [m["forgetting"] for m in ms] for label, ms in at.items()}
    share = [1 - k / n for k, n in zip(f["self-generated 25% + KL"], f["none"])]
    real_share = [1 - k / n for k, n in zip(f["real replay 25%"], f["none"])]
    gap = [k - r for k, r in zip(f["self-generated 25% + KL"], f["real replay 25%"])]
    g = t_interval(gap)
    note = (
        f"At matched learning (new loss {target:.3f}). Real replay "
        f"removes {t_interval(real_share)[0]:.0%} of the forgetting; "
        f"forgetting with self-generated + KL minus with real replay: {ci_text(gap)} nats: "
        + (
            "about as good as real replay, as published."
            if g[1] <= 0 <= g[2]
            else "unlike the published result, not as good as real replay here."
            if g[1] > 0
            else "better than real replay here."
        )
        + " Reproduced means the interval of the share removed lies above one half ('most')."
    )
    finding = Finding(
        "2. Self-generated replay with KL to the base removes most forgetting",
        "Marek et al. 2026",
        setting_of(design["none"](0), replay_ratio=0.25, kl_weight=1.0, target_new_loss=round(target, 4)),
        "share of forgetting removed at matched learning, 1 - "
        "F(self-generated + KL) / F(none); positive: removes forgetting",
        share,
        direction=1,
        threshold=0.5,
        note=note,
        raw={"target_new_loss": target, "matched": at, "real_replay_share": real_share, "self_minus_real_nats": gap},
    )
    return finding, trajectory_figure(runs, target)


def finding_size(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = size_design(s)
    runs, target, at = matched_runs(design, s, results)
    params = [runs[size][0]["num_params_non_embedding"] for size in runs]
    log_n = np.log10(params)
    slopes = slope_by_seed(log_n, at, s.seeds)
    frac_slopes = slope_by_seed(log_n, at, s.seeds, "forgetting_fraction")
    drop, at_drop = matched_by_drop(runs)
    drop_slopes = slope_by_seed(log_n, at_drop, s.seeds)
    start = {size: rs[0]["curve"][0][1] for size, rs in runs.items()}
    mean = {size: float(np.mean([m["forgetting"] for m in ms])) for size, ms in at.items()}
    mean_drop = {size: float(np.mean([m["forgetting"] for m in ms])) for size, ms in at_drop.items()}
    note = (
        f"Matched as Marek et al. do, at one target new loss "
        f"({target:.3f}, the lowest every size reaches; each size at "
        f"its own fine-tuning LR). Mean forgetting there: {listing(mean, ' nats')}. The rungs do not start the stage "
        f"alike: held-out new loss before fine-tuning {listing(start, ' nats')}, "
        f"against {runs[s.sizes[0]][0]['base_loss_init']:.2f} "
        f"for a uniform guess. A better-trained base is more confident, so more surprised by "
        f"chats about facts it never saw; the smallest rung starts nearest the target and reaches "
        f"it after the least learning, so at one target it has learned (and forgotten) least. That is where this world "
        f"differs from real models, whose new-domain loss falls "
        f"with size. Matched instead at an equal drop of new loss "
        f"({drop:.3f} nats, the largest every trial reaches), mean forgetting is {listing(mean_drop, ' nats')} and the "
        f"slope {ci_text(drop_slopes)} per decade: larger models forget less. The effect above keeps the target-loss "
        f"rule fixed before the run. As a share of pretraining progress undone (Bethune et al.'s measure), at the "
        f"target: slope {ci_text(frac_slopes)} per decade."
    )
    finding = Finding(
        "3. Larger models forget less at matched learning",
        "Marek et al. 2026; Bethune et al. 2025",
        setting_of(
            design[s.sizes[0]](0),
            sizes=list(s.sizes),
            non_embedding_params=params,
            lr={size: float(f"{finetune_lr(size):.3g}") for size in runs},
            target_new_loss=round(target, 4),
        ),
        "least-squares slope of forgetting (nats) at the target new loss "
        "on log10(non-embedding parameters); negative: larger forget less",
        slopes,
        direction=-1,
        note=note,
        raw={
            "target_new_loss": target,
            "matched": at,
            "new_loss_before": start,
            "fraction_slope_per_seed": frac_slopes,
            "equal_drop_nats": drop,
            "matched_by_drop": at_drop,
            "drop_slope_per_seed": drop_slopes,
        },
    )
    return finding, sweep_figure(params, at, s.seeds, "non-embedding parameters", target)


def finding_budget(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = budget_design(s)
    runs, target, at = matched_runs(design, s, results)
    budgets = [float(b) for b in runs]
    slopes = slope_by_seed(np.log2(budgets), at, s.seeds)
    _, low, high = t_interval(slopes)
    drop, at_drop = matched_by_drop(runs)
    drop_slopes = slope_by_seed(np.log2(budgets), at_drop, s.seeds)
    start = {f"{b} tokens/param": rs[0]["curve"][0][1] for b, rs in runs.items()}
    mean = {f"{b} tokens/param": float(np.mean([m["forgetting"] for m in ms])) for b, ms in at.items()}
    mean_drop = {f"{b} tokens/param": float(np.mean([m["forgetting"] for m in ms])) for b, ms in at_drop.items()}
    shown = "more" if low > 0 else "less" if high < 0 else "no clearly different"
    note = (
        f"At one target new loss ({target:.3f}). The literature has both signs (Marek et al.: more forgetting when "
        f"overtrained on one setting, less on another; Springer et al.: overtrained models degrade more), so either "
        f"sign whose interval excludes zero counts. At the target this world shows {shown} forgetting with more "
        f"pretraining tokens: {listing(mean, ' nats')}. The direction rests on where the bases "
        f"start: held-out new loss before fine-tuning {listing(start, ' nats')}; the least-trained base is the least "
        f"surprised by the new chats and reaches the target after the least learning. At an equal drop of new loss "
        f"({drop:.3f} nats) forgetting is {listing(mean_drop, ' nats')}, "
        f"a slope of {ci_text(drop_slopes)} per doubling: "
        f"the sign depends on how learning is matched."
    )
    finding = Finding(
        "4. More pretraining tokens per parameter changes forgetting at matched learning",
        "Marek et al. 2026; Springer et al. 2025",
        setting_of(design["5"](0), pretrain_tokens_per_param=budgets, target_new_loss=round(target, 4)),
        "least-squares slope of forgetting (nats) at the target new "
        "loss per doubling of pretraining tokens per parameter; "
        "positive: more pretraining, more forgetting",
        slopes,
        direction=0,
        note=note,
        raw={
            "target_new_loss": target,
            "matched": at,
            "new_loss_before": start,
            "equal_drop_nats": drop,
            "matched_by_drop": at_drop,
            "drop_slope_per_seed": drop_slopes,
        },
    )
    return finding, sweep_figure(budgets, at, s.seeds, "pretraining tokens per non-embedding parameter", target)


def finding_methods(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = method_design(s)
    runs, target, at = matched_runs(design, s, results)
    end = {label: {m: [r[m] for r in rs] for m in ("learning_nats", "forgetting")} for label, rs in runs.items()}
    learns_less = [f - lo for f, lo in zip(end["full"]["learning_nats"], end["LoRA r8"]["learning_nats"])]
    forgets_less = [f - lo for f, lo in zip(end["full"]["forgetting"], end["LoRA r8"]["forgetting"])]
    front = {
        label: [a["forgetting"] - b["forgetting"] for a, b in zip(at["full"], at[label])]
        for label in runs
        if label != "full"
    }
    same_lr = {
        m: [f - lo for f, lo in zip(end["full"][m], end["LoRA r8, full's LR"][m])]
        for m in ("learning_nats", "forgetting")
    }
    width = LADDER[s.model].hidden_size
    note = (
        f"Equal steps ({s.steps}), each method at its LR, full minus "
        f"LoRA (10x LR): learning {ci_text(learns_less)} nats, "
        f"forgetting {ci_text(forgets_less)} nats; reproduced needs both intervals above zero (LoRA learns less and "
        f"forgets less). At full's LR instead (a second point of "
        f"LoRA's front, not the test set before the run), full minus "
        f"LoRA: learning {ci_text(same_lr['learning_nats'])}, forgetting {ci_text(same_lr['forgetting'])} nats"
        + (
            ": there LoRA learns less and forgets less, as published. "
            if min(t_interval(v)[1] for v in same_lr.values()) > 0
            else ". "
        )
        + "Forgetting at equal steps: "
        + listing({k: float(np.mean(v["forgetting"])) for k, v in end.items()}, " nats")
        + "; learning: "
        + listing({k: float(np.mean(v["learning_nats"])) for k, v in end.items()}, " nats")
        + f". Fronts at matched learning (new loss {target:.3f}), forgetting of full minus the method: "
        + "; ".join(f"{label} {ci_text(v)}" for label, v in front.items())
        + " nats: "
        + (
            "every other method forgets more than full at the same learning, so they are not on one curve here. "
            if all(t_interval(v)[2] < 0 for v in front.values())
            else "see the figure for each method's curve. "
        )
        + f"Where this world differs: Biderman et al.'s adapters change a sliver of a 7B model's rank (r <= 256 of "
        f"d = 4096), which is what holds LoRA back; here rank 8 is "
        f"a quarter of {s.model}'s width ({width}), so LoRA is "
        f"hardly low-rank, and at the 10x LR usual for LoRA it moves the model faster than full fine-tuning does."
    )
    finding = Finding(
        "5. LoRA learns less and forgets less than full fine-tuning, on roughly one trade-off curve",
        "Biderman et al. 2024",
        setting_of(design["full"](0), methods=method_overrides(s), target_new_loss=round(target, 4)),
        "forgetting (nats) of full minus LoRA (10x LR) at equal steps; positive: LoRA forgets less",
        forgets_less,
        direction=1,
        prerequisite=t_interval(learns_less)[1] > 0,
        note=note,
        raw={
            "end": end,
            "full_minus_lora_learning_nats": learns_less,
            "target_new_loss": target,
            "matched": at,
            "front_full_minus_method": front,
        },
    )
    return finding, trajectory_figure(runs, target)


def finding_power_law(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = power_law_design(s)
    (runs,) = by_seed(design, s.seeds, results).values()
    fits = []
    for r in runs:
        steps, forgot = np.array([p[0] for p in r["curve"]]), np.array([p[2] - r["curve"][0][2] for p in r["curve"]])
        # From the end of warm-up on, where every point has forgotten something (log needs it positive).
        keep = (steps >= 10) & (forgot > 0)
        b, log_a = np.polyfit(np.log(steps[keep]), np.log(forgot[keep]), 1)
        fits.append({"exponent": float(b), "scale": float(math.exp(log_a)), "points": int(keep.sum())})
    exponents = [f["exponent"] for f in fits]
    e = t_interval(exponents)
    first = np.mean([[p[2] - r["curve"][0][2] for p in r["curve"] if p[0] == 10][0] for r in runs])
    note = (
        f"Least-squares line of log forgetting on log step, per seed, over steps 10-{runs[0]['curve'][-1][0]} "
        f"(evaluations every {runs[0]['overrides']['eval.every_steps']} steps; {fits[0]['points']} points), LoRA r8 at "
        f"10x the full LR on {s.model}. Kalajdzievski reports about 0.15; this world's exponent is {e[0]:.2f}. "
        f"Forgetting is already {first:.2f} nats at step 10 and climbs slowly after, which is what a small exponent "
        f"describes."
    )
    finding = Finding(
        "6. Forgetting grows as a power law in fine-tuning steps",
        "Kalajdzievski 2024",
        setting_of(design["LoRA r8"](0), method="lora", lora_rank=8),
        "exponent b of forgetting = A * steps^b (log-log least squares); positive: forgetting grows with steps",
        exponents,
        direction=1,
        note=note,
        raw={"fits": fits, "curves": [r["curve"] for r in runs]},
    )

    def figure(ax):
        for r, fit in zip(runs, fits):
            steps = np.array([p[0] for p in r["curve"]][1:])
            ax.plot(steps, [p[2] - r["curve"][0][2] for p in r["curve"]][1:], ".", color="0.6", ms=3)
            fitted = steps[steps >= 10]
            ax.plot(fitted, fit["scale"] * fitted ** fit["exponent"], lw=0.8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"step (fit from 10: exponent {e[0]:.2f} [{e[1]:.2f}, {e[2]:.2f}])",
            ylabel="forgetting (nats)",
        )

    return finding, figure


def finding_lr_replay(s: Scale, results: dict) -> tuple[Finding, Callable]:
    design = lr_replay_design(s)
    runs, target, at = matched_runs(design, s, results)
    slow = f"lr/{s.slow_factors[-1]}"
    f = {label: [m["forgetting"] for m in ms] for label, ms in at.items()}
    steps = {label: [m["step"] for m in ms] for label, ms in at.items()}
    effect = [a - b for a, b in zip(f[slow], f["lr + replay 12.5%"])]
    lower = [a - b for a, b in zip(f["lr"], f[slow])]  # positive: the lower LR forgets less
    cost = [a / b for a, b in zip(steps[slow], steps["lr + replay 12.5%"])]
    premise = t_interval(lower)[1] > 0
    note = (
        f"At matched learning (new loss {target:.3f}); replay rows replace new rows in a batch of 16, so a step costs "
        f"the same with or without replay. Replay forgets less than lowering the LR {s.slow_factors[-1]}x, and the "
        f"lower LR takes {ci_text(cost, 1, sign='')} times the steps of replay to reach the target. "
        + (
            "As published, the lower LR forgets less than the full LR without replay: "
            if premise
            else "The premise does not hold here: the lower LR does not forget less than the full LR, it "
            "forgets more: per step it forgets more slowly, but by less than it learns more slowly, so by the time it "
            "reaches the target it has forgotten more. This world "
            "has no trade-off for replay to break, and replay wins "
            "outright. Forgetting at the full LR minus the lower: "
        )
        + f"{ci_text(lower)} nats. Mean forgetting at the target: "
        f"{listing({k: float(np.mean(v)) for k, v in f.items()}, ' nats')}."
    )
    finding = Finding(
        "7. A lower LR forgets less but needs many more steps; replay breaks the trade-off",
        "Marek et al. 2026",
        setting_of(
            design["lr"](0), slow_lr_factors=list(s.slow_factors), replay_ratio=0.125, target_new_loss=round(target, 4)
        ),
        f"forgetting (nats) at matched learning of the LR lowered "
        f"{s.slow_factors[-1]}x minus the LR with 12.5% replay; "
        "positive: replay forgets less",
        effect,
        direction=1,
        note=note,
        caveat="" if premise else "a lower LR forgets more here, not less",
        raw={
            "target_new_loss": target,
            "matched": at,
            "lr": {label: rs[0]["overrides"]["train.lr"] for label, rs in runs.items()},
            "full_minus_lower_lr_forgetting": lower,
            "step_ratio_lower_lr_to_replay": cost,
        },
    )
    return finding, trajectory_figure(runs, target)


FINDINGS = (
    (replay_ratio_design, finding_replay_ratio),
    (self_replay_design, finding_self_replay),
    (size_design, finding_size),
    (budget_design, finding_budget),
    (method_design, finding_methods),
    (power_law_design, finding_power_law),
    (lr_replay_design, finding_lr_replay),
)


# ---- the report -----------------------------------------------------------------------------------------------


def busy_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Wall time during which at least one trial ran: the trials' compute time, without the gaps between reruns."""
    busy, end = 0.0, -math.inf
    for start, finish in sorted(intervals):
        busy += max(0.0, finish - max(start, end))
        end = max(end, finish)
    return busy


def verdict(row: dict[str, Any]) -> str:
    if not row["reproduced"]:
        return "**no**"
    return f"yes ({row['caveat']})" if row["caveat"] else "yes"


def write(out: Path, findings: list[tuple[Finding, Callable]], run: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [f.as_json() for f, _ in findings]
    for i, ((_, draw), row) in enumerate(zip(findings, rows), 1):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        draw(ax)
        ax.set_title(row["finding"][:70] + ("..." if len(row["finding"]) > 70 else ""), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"findings_{i}.png", dpi=110)
        plt.close(fig)
    (out / "findings.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Seven published forgetting findings on the offline world",
        "",
        f"`python bench/findings.py` on {platform.machine()}, torch {torch.__version__}, one torch thread per trial: "
        f"{run['trials']} trials, {run['workers']} at a time, in "
        f"**{run['busy_s'] / 60:.1f} minutes** of wall time with trials "
        f"running ({run['trial_s'] / 60:.1f} trial-minutes). The {os.cpu_count()} "
        f"cores were shared with other engineers' jobs: the 1-minute "
        f"load average at trial ends ran from {run['load'][0]:.1f} "
        f"to {run['load'][2]:.1f} (median {run['load'][1]:.1f}), "
        f"so each trial had a fraction of a core; on an idle machine the run is shorter.",
        "",
        "Every trial fine-tunes a ladder model on one stage of the world (astronomy chats, 175 blocks of 128 tokens) "
        "through the trial engine. **Seeds** are `train.seed` (data order, replay draws, LoRA init, self-generated "
        "samples); the world and the pretrained models are the same in every seed. **Matched learning** is by "
        "interpolation across steps: forgetting is read where the held-out new loss first reaches a target that "
        "every trial of the finding reaches, linear between evaluations (what a stop rule at the target would see); "
        "held-out losses are on the same examples at every evaluation. "
        "Where the compared base models start the stage at "
        "different new losses (findings 3 and 4), forgetting is "
        "also read at an equal drop of new loss, reported in the "
        "note beside the effect. **Intervals** are Student-t 95% intervals over "
        "per-seed values, seed-paired where conditions are compared. `reproduced`: the interval excludes zero in the "
        "published direction (finding 2: lies above one half; finding 4: either sign, the literature has both). "
        "`findings.json` keeps every per-seed value to recompute effects and intervals; `findings_trials.jsonl` keeps "
        "every trial's evaluation curve, and `python bench/findings.py "
        "--cache reports/findings_trials.jsonl` recomputes "
        "this report from it without training.",
        "",
        "| finding | source | metric | effect | 95% CI | seeds | reproduced |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['finding']} | {r['source']} | {r['metric']} | "
        f"{r['effect']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
        f"| {r['seeds']} | {verdict(r)} |"
        for r in rows
    ]
    lines += ["", f"**{sum(r['reproduced'] for r in rows)} of {len(rows)} reproduced.**", ""]
    for i, r in enumerate(rows, 1):
        setting = ", ".join(f"{k} {v}" for k, v in r["setting"].items() if k not in ("methods",))
        lines += [
            f"## {r['finding']}",
            "",
            f"![finding {i}](findings_{i}.png)",
            "",
            f"Setting: {setting}.",
            "",
            r["note"],
            "",
        ]
    (out / "findings.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10-step trials of the two smallest rungs")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where findings.{md,json} and the figures go")
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"trial cache (default {CACHE}, or OUT/trials.jsonl with --quick)"
    )
    parser.add_argument("--workers", type=int, default=2, help="trials at a time, one torch thread each")
    parser.add_argument("--fresh", action="store_true", help="ignore (and replace) the trial cache")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per condition (default 5 in the full run, 3 with --quick); more adds to the cached ones",
    )
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.seeds:
        scale = replace(scale, seeds=args.seeds)
    cache = args.cache or (args.out / "trials.jsonl" if args.quick else CACHE)
    if args.fresh and cache.exists():
        cache.unlink()

    started = time.perf_counter()
    wanted = {
        key(make(seed)): make(seed)
        for design, _ in FINDINGS
        for make in design(scale).values()
        for seed in range(scale.seeds)
    }
    done = load_cache(cache)
    pending = [o for k, o in wanted.items() if k not in done]
    print(f"{len(wanted)} trials, {len(pending)} to run", flush=True)
    run_all(pending, cache, args.workers)
    results = load_cache(cache)
    findings = [analyse(scale, results) for _, analyse in FINDINGS]
    records = [results[k] for k in wanted]
    # Every trial's curve beside the report: `--cache OUT/findings_trials.jsonl` recomputes it without training.
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "findings_trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # Only what the trial records hold goes into the report, so that a rebuild from them writes the same report.
    write(
        args.out,
        findings,
        {
            "trials": len(wanted),
            "workers": args.workers,
            "busy_s": busy_seconds([(r["started_at"], r["finished_at"]) for r in records]),
            "trial_s": sum(r["wall_time_s"] for r in records),
            "load": np.percentile([r["load_average"] for r in records], [0, 50, 100]),
        },
    )
    print((args.out / "findings.md").read_text())
    print(f"computed {len(pending)} of {len(wanted)} trials in {(time.perf_counter() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
