"""Seven published forgetting findings, on the offline world across world seeds, and on a real model.

    python bench/findings.py --pilot    # once, before any scored trial: the band of every finding (world seed 99)
    python bench/findings.py            # every trial (2 at a time), then reports/findings.{md,json} + figures
    python bench/findings.py --model smollm2-135m-instruct   # the findings one real model can test (real_findings.py),
                                                             # then reports/world_vs_real.{md,json}
    python bench/findings.py --quick --out /tmp/findings     # a smoke check: small rungs, short trials

The protocol (bench/findings_protocol.yaml) was committed before the trials it scores: each finding's published
direction, the band of learning levels, the seeds and the verdict rule. The world is the single-epoch world with
familiar domains (`WORLD`): the base corpus describes other entities of every stage domain, so a stage starts below
a uniform guess and teaches new facts in familiar words, and a stage holds more unique blocks than any trial trains
on, so no block repeats. Every trial fine-tunes a ladder rung on that world's first stage through the trial engine.

Matched learning is a curve: forgetting is read where a trial's held-out new loss has dropped by each level of the
band (learning_nats from its own base's start; linear between evaluations, never extrapolated), and a finding's
effect is its mean over the band. The band's levels are fractions of the final drop of the finding's reference
condition in a pilot on world seed 99 that no finding scores (`reports/findings_bands.json`).

Seeds: each condition runs at every world seed (its own corpus, tokenizer and pretrained ladder) crossed with every
data-order seed (`train.seed`: data order, replay draws, LoRA init, self-generated samples). Intervals are
Student-t over the world seeds' means, so they include what varies between worlds; both variance components are
reported. Finished trials are appended to `runs/findings/trials.jsonl`; a rerun takes them from there.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from report import REPORTS  # noqa: E402

from raycl.analysis.seeds import mean_interval  # noqa: E402
from raycl.config import TrialConfig, WorldConfig  # noqa: E402
from raycl.evaluation.metrics import untrained_loss  # noqa: E402
from raycl.models.builds import build_rungs, missing, rungs_of  # noqa: E402
from raycl.models.ladder import LADDER, PretrainRecipe, peak_lr  # noqa: E402
from raycl.training.trial import run_trial  # noqa: E402
from raycl.world.offline import load_world  # noqa: E402
from raycl.world.stream import offline_stream  # noqa: E402

BENCH = Path(__file__).parent
PROTOCOL = yaml.safe_load((BENCH / "findings_protocol.yaml").read_text())
CACHE = REPORTS.parent / "runs" / "findings" / "trials.jsonl"
BANDS = REPORTS / "findings_bands.json"
SIZES = tuple(LADDER)  # smallest to largest
Cell = tuple[int, int]  # (world seed, data seed)
Runs = dict[str, dict[Cell, dict[str, Any]]]  # condition -> cell -> trial record

# The single-epoch world with familiar domains: 40 entities of every stage domain in the base corpus, and stages of
# 400 entities (2,936 blocks of 128 tokens on world seed 99), more than the longest trial's 180 steps x 16 rows.
WORLD = {"world.familiar_entities": 40, "world.stage_entities": 400, "world.num_stages": 1}


@dataclass(frozen=True)
class Scale:
    """How much of everything: the full run, or the smoke check."""

    world_seeds: tuple[int, ...]
    data_seeds: tuple[int, ...]
    steps: int  # fine-tuning steps of a trial at the model's own learning rate
    every: int  # steps between evaluations
    max_examples: int  # held-out examples per split, the same ones at every evaluation
    sizes: tuple[str, ...]  # finding 3's ladder
    model: str  # the model of findings 2, 4, 5 and 6
    small: str  # the model of findings 1 and 7
    slow_factor: int  # finding 7: the learning-rate divisor, run that many times longer

    @property
    def cells(self) -> list[Cell]:
        return [(w, d) for w in self.world_seeds for d in self.data_seeds]


# raycl-tiny-xl is left out of finding 3: it costs as much as the four smaller rungs together.
FULL = Scale(
    world_seeds=tuple(PROTOCOL["seeds"]["world_seeds"]),
    data_seeds=tuple(PROTOCOL["seeds"]["data_seeds"]),
    steps=60,
    every=5,
    max_examples=64,
    sizes=SIZES[:4],
    model="raycl-tiny-m",
    small="raycl-tiny-s",
    slow_factor=3,
)
QUICK = replace(
    FULL,
    world_seeds=(0, 1),
    data_seeds=(0, 1),
    steps=10,
    max_examples=16,
    sizes=SIZES[:2],
    model="raycl-tiny-xs",
    small="raycl-tiny-xs",
    slow_factor=2,
)


def finetune_lr(model: str) -> float:
    """A thirtieth of the rung's peak pretraining LR (the ladder's width scaling, 1/width), the ratio of a usual
    fine-tuning LR to pretraining's (2e-4 against 3e-3 for SmolLM2, 2e-5 against 3e-4 for 7B models), halved."""
    return peak_lr(LADDER[model], PretrainRecipe()) / 30


def trial(
    s: Scale, cell: Cell, model: str, steps: int | None = None, every: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """The overrides of one trial: the world's first stage, no lm-eval probes, evaluations every `every` steps."""
    world_seed, data_seed = cell
    return (
        WORLD
        | {
            "world.seed": world_seed,
            "model.name": model,
            "train.lr": finetune_lr(model),
            "train.steps_per_stage": steps or s.steps,
            "train.seed": data_seed,
            "eval.every_steps": s.every if every is None else every,
            "eval.max_examples": s.max_examples,
            "eval.quick_max_examples": s.max_examples,
            "eval.benchmarks.tasks": [],
        }
        | overrides
    )


def key(overrides: dict[str, Any]) -> str:
    """The whole trial config, so that two findings asking for the same trial in other words share it."""
    return json.dumps(TrialConfig().with_overrides(overrides).model_dump(mode="json"), sort_keys=True)


# ---- the designs: per finding, its conditions, each a function of the cell ------------------------------------

Design = dict[str, Callable[[Cell], dict[str, Any]]]


def replay_ratio_design(s: Scale) -> Design:
    # Batch 32, so that one replay row is 3.1%: the smallest ratio a batch can hold, inside the published 1-5%.
    return {
        f"{r}/32": (lambda c, r=r: trial(s, c, s.small, **{"train.batch_size": 32, "replay.ratio": r / 32}))
        for r in (0, 1, 2, 4, 8)
    }


def self_replay_design(s: Scale) -> Design:
    return {
        "none": lambda c: trial(s, c, s.model),
        "real replay 25%": lambda c: trial(s, c, s.model, **{"replay.ratio": 0.25}),
        "self-generated 25% + KL": lambda c: trial(
            s, c, s.model, **{"replay.ratio": 0.25, "replay.source": "self_generated", "replay.loss": "kl"}
        ),
    }


def size_design(s: Scale) -> Design:
    return {size: (lambda c, size=size: trial(s, c, size)) for size in s.sizes}


def budget_design(s: Scale) -> Design:
    return {
        f"{b:g}": (lambda c, b=b: trial(s, c, s.model, **{"model.pretrain_tokens_per_param": b}))
        for b in (5.0, 10.0, 20.0, 40.0)
    }


def method_overrides(s: Scale) -> dict[str, dict[str, Any]]:
    # LoRA at 10x the full LR (Biderman et al. tune LoRA an order of magnitude higher); GaLore at 1/galore_scale
    # (4x), so its scaled update is AdamW's size. Rank 8: LoRA's default, GaLore's d/4 on raycl-tiny-m.
    lr = finetune_lr(s.model)
    return {
        "full": {},
        "LoRA r8": {"method.name": "lora", "method.lora_rank": 8, "train.lr": 10 * lr},
        "GaLore r8": {"method.name": "galore", "method.galore_rank": 8, "train.lr": 4 * lr},
    }


def method_design(s: Scale) -> Design:
    return {label: (lambda c, o=o: trial(s, c, s.model, **o)) for label, o in method_overrides(s).items()}


def power_law_design(s: Scale) -> Design:
    # LoRA, as Kalajdzievski fine-tunes; twice as long as the others, for more than a decade of steps.
    return {"LoRA r8": lambda c: trial(s, c, s.model, steps=2 * s.steps, **method_overrides(s)["LoRA r8"])}


def lr_replay_design(s: Scale) -> Design:
    f = s.slow_factor
    return {
        "lr": lambda c: trial(s, c, s.small),
        "lr + replay 12.5%": lambda c: trial(s, c, s.small, **{"replay.ratio": 0.125}),
        # Evaluated f times less often: as many evaluations as at the full LR.
        f"lr/{f}": lambda c: trial(
            s, c, s.small, steps=s.steps * f, every=s.every * f, **{"train.lr": finetune_lr(s.small) / f}
        ),
    }


# ---- running the trials --------------------------------------------------------------------------------------


@functools.cache
def stage_tokens(world_json: str, seq_len: int) -> int:
    """Tokens in the first stage's train blocks of the world of `world_json`: what one epoch of the stage is."""
    world = load_world(WorldConfig.model_validate_json(world_json))
    return offline_stream(world, world.tokenizer, seq_len).stages[0].train_blocks.numel()


# What a trial record keeps of a trial's result, beside its curve.
METRICS = (
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


def trial_record(overrides: dict[str, Any], result: Any, curve: list[list[float]], started_at: float) -> dict[str, Any]:
    """The record of a finished trial: its overrides, final metrics, (step, new loss, retention loss) curve, times."""
    return {
        "key": key(overrides),
        "overrides": overrides,
        **{name: getattr(result, name) for name in METRICS},
        "curve": curve,
        "started_at": started_at,
        "finished_at": time.time(),
        "load_average": os.getloadavg()[0],
    }


def run_one(overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one trial and keep what the findings read: final metrics and the (step, new loss, base loss) curve."""
    config, started_at = TrialConfig().with_overrides(overrides), time.time()
    with tempfile.TemporaryDirectory() as out:
        r = run_trial(config, Path(out))
    matrix, retention = r.stage_matrix, r.retention_losses
    curve = [[0, matrix[0][0], retention[0]]]
    curve += [[c["step"], c["stage_losses"][0], c["base_loss"]] for c in r.curves]
    curve.append([config.train.steps_per_stage, matrix[-1][0], retention[-1]])
    return trial_record(overrides, r, curve, started_at) | {
        "epochs_per_stage": r.new_tokens / stage_tokens(config.world.model_dump_json(), config.train.seq_len),
        "base_loss_init": untrained_loss(r.config["world"]["vocab_size"]),
    }


def run_all(pending: list[dict[str, Any]], cache: Path, workers: int) -> None:
    """Build the rungs the trials need, then run the trials `workers` at a time, appending each to `cache`."""
    build_rungs(missing(rungs_of(TrialConfig().with_overrides(o) for o in pending)), processes=workers)
    # Longest first (by steps x batch x width), so the last trials to start are short ones.
    pending = sorted(
        pending,
        key=lambda o: (
            -o["train.steps_per_stage"] * o.get("train.batch_size", 16) * LADDER[o["model.name"]].hidden_size ** 2
        ),
    )
    run_pool(pending, run_one, cache, workers, lambda record: json.dumps(record["overrides"]))


def run_pool(
    jobs: list[Any],
    run: Callable[[Any], dict[str, Any]],
    cache: Path,
    workers: int,
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """`run` every job, `workers` at a time in spawned processes, appending each record to `cache` as it finishes
    (so a crash loses no finished trial) and printing a line per trial."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, cache.open("a") as sink:
        futures = [pool.submit(run, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            record = future.result()
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"[{done}/{len(jobs)}] {record['wall_time_s']:.0f}s {describe(record)}", flush=True)


def load_cache(cache: Path) -> dict[str, dict[str, Any]]:
    """The cached trials by key, recomputed from each one's overrides (a key written under an older TrialConfig
    still finds its trial, since fields added since default to what the trial ran with)."""
    if not cache.exists():
        return {}
    return {key(record["overrides"]): record for record in map(json.loads, cache.read_text().splitlines())}


# ---- matched learning over a band ----------------------------------------------------------------------------


def at_target(curve: Sequence[Sequence[float]], target: float, base_loss_init: float) -> dict[str, float] | None:
    """Step, forgetting (nats) and forgetting fraction where the new loss first reaches `target`, linear between
    the evaluations around that point (what a stop rule at the target would see); None if it never does."""
    steps, new, base = (np.array(column, dtype=float) for column in zip(*curve))
    i = int(np.argmax(new <= target + 1e-12))
    if new[i] > target + 1e-12:
        return None
    w = 0.0 if i == 0 else (new[i - 1] - target) / (new[i - 1] - new[i])
    j = max(i - 1, 0)
    step, base_loss = steps[j] + w * (steps[i] - steps[j]), base[j] + w * (base[i] - base[j])
    return {
        "step": float(step),
        "forgetting": float(base_loss - base[0]),
        "forgetting_fraction": float((base_loss - base[0]) / (base_loss_init - base[0])),
    }


def at_level(record: dict[str, Any], level: float) -> dict[str, float] | None:
    """The record's point where its held-out new loss has dropped by `level` nats from its base's start."""
    return at_target(record["curve"], record["curve"][0][1] - level, record["base_loss_init"])


def covered(runs: Runs, levels: Sequence[float]) -> list[float]:
    """The band's levels every trial of a finding reaches: none is extrapolated to."""
    return [lv for lv in levels if all(at_level(r, lv) is not None for rs in runs.values() for r in rs.values())]


def band_values(
    runs: Runs, levels: Sequence[float], value: Callable[[dict[str, float]], float], name: str = "forgetting"
) -> dict[Cell, list[float]]:
    """Per cell, `value` of every condition's `name` at each level."""
    cells = next(iter(runs.values()))
    return {c: [value({lb: at_level(rs[c], lv)[name] for lb, rs in runs.items()}) for lv in levels] for c in cells}  # type: ignore[index]


def mean_over_band(pointwise: dict[Cell, list[float]]) -> dict[Cell, float]:
    return {c: float(np.mean(v)) for c, v in pointwise.items()}


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])


# ---- statistics over world and data seeds ----------------------------------------------------------------------


def seed_summary(per_cell: dict[Cell, float]) -> dict[str, float]:
    """Mean and 95% interval: Student-t over the world seeds' means where there are several worlds, else over the
    data seeds; plus the standard deviation between world means and the pooled one between data seeds."""
    worlds = sorted({w for w, _ in per_cell})
    by_world = [[v for (w, _), v in per_cell.items() if w == world] for world in worlds]
    units = [float(np.mean(vs)) for vs in by_world] if len(worlds) > 1 else list(per_cell.values())
    low, high = mean_interval(units)
    within = [np.var(vs, ddof=1) for vs in by_world if len(vs) > 1]
    return {
        "effect": float(np.mean(list(per_cell.values()))),
        "ci_low": low,
        "ci_high": high,
        "sd_between_worlds": float(np.std(units, ddof=1)) if len(worlds) > 1 else float("nan"),
        "sd_within_world": float(np.sqrt(np.mean(within))) if within else float("nan"),
    }


def ci_text(per_cell: dict[Cell, float], digits: int = 3) -> str:
    s = seed_summary(per_cell)
    return f"{s['effect']:+.{digits}f} [{s['ci_low']:+.{digits}f}, {s['ci_high']:+.{digits}f}]"


def listing(means: dict[str, float], unit: str = "") -> str:
    return ", ".join(f"{label} {value:.3f}" for label, value in means.items()) + unit


@dataclass
class Finding:
    """One row of the report: the effect of every cell, over the band where it is banded, and how to read it."""

    name: str  # its key in the protocol
    finding: str
    source: str
    setting: dict[str, Any]
    metric: str
    per_cell: dict[Cell, float]  # the effect of each (world seed, data seed): mean over the band where banded
    band: dict[str, Any]
    pointwise: dict[Cell, list[float]] | None = None  # the effect at each covered level of the band
    epochs_per_stage: float = 0.0  # of its stage, the most any trial had trained by the last point the finding reads
    epochs_trained: float = 0.0  # the same by the trials' ends
    note: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def level_summaries(self) -> list[dict[str, float]] | None:
        """The effect and its interval at each covered level of the band (None for a finding read over steps)."""
        if not self.pointwise:
            return None
        return [seed_summary({c: v[i] for c, v in self.pointwise.items()}) for i in range(len(self.band["covered"]))]

    def verdict(self, summary: dict[str, float], levels: list[dict[str, float]] | None) -> bool | str:
        """The protocol's rule: a sign change inside the band first, then the interval against the threshold."""
        if levels and any(p["ci_low"] > 0 for p in levels) and any(p["ci_high"] < 0 for p in levels):
            return "depends on the level"
        rule = PROTOCOL["findings"][self.name]
        if rule["direction"] > 0:
            return summary["ci_low"] > rule["threshold"]
        return summary["ci_high"] < rule["threshold"]

    def as_json(self) -> dict[str, Any]:
        summary, levels = seed_summary(self.per_cell), self.level_summaries()
        rule = PROTOCOL["findings"][self.name]
        worlds = sorted({w for w, _ in self.per_cell})
        return {
            "finding": self.finding,
            "source": self.source,
            "setting": self.setting,
            "metric": self.metric,
            "band": self.band,
            **summary,
            "seeds": len({d for _, d in self.per_cell}),
            "world_seeds": len(worlds),
            "direction": rule["direction"],
            "threshold": rule["threshold"],
            "reproduced": self.verdict(summary, levels),
            "epochs_per_stage": self.epochs_per_stage,
            "epochs_trained": self.epochs_trained,
            "pointwise": None
            if levels is None
            else [{"level": lv, **p} for lv, p in zip(self.band["covered"], levels)],
            "note": self.note,
            "per_cell_effect": [[w, d, v] for (w, d), v in self.per_cell.items()],
            "raw": self.raw,
        }


def band_of(levels: Sequence[float], used: Sequence[float]) -> dict[str, Any]:
    return {"metric": "learning_nats", "levels": list(levels), "covered": list(used)}


def epochs(runs: Runs, upto: float | None = None) -> float:
    """The most of its stage any trial of a finding had trained on, in epochs: by the point where it reaches the
    learning level `upto` (the last thing the finding reads), or by its end (NaN where the records do not say)."""
    read = []
    for r in (r for rs in runs.values() for r in rs.values() if "epochs_per_stage" in r):
        point = at_level(r, upto) if upto is not None else None
        share = point["step"] / r["overrides"]["train.steps_per_stage"] if point else 1.0
        read.append(r["epochs_per_stage"] * share)
    return max(read, default=math.nan)


def banded(
    runs: Runs, levels: Sequence[float], value: Callable[[dict[str, float]], float]
) -> tuple[list[float], dict[str, Any]]:
    """A comparison read over the band: the levels every trial reaches, and the `Finding` fields of `value` there
    (per cell its mean over those levels, the band, the pointwise values, and how much of the stage was trained)."""
    used = covered(runs, levels)
    pointwise = band_values(runs, used, value)
    return used, {
        "per_cell": mean_over_band(pointwise),
        "band": band_of(levels, used),
        "pointwise": pointwise,
        "epochs_per_stage": epochs(runs, used[-1] if used else None),
        "epochs_trained": epochs(runs),
    }


# ---- the findings, each from its runs and its band --------------------------------------------------------------


def finding_replay_ratio(runs: Runs, levels: Sequence[float], none: str, replay: str, share: str) -> Finding:
    used, fields = banded(runs, levels, lambda f: f[none] - f[replay])
    end = {label: {c: r["forgetting"] for c, r in rs.items()} for label, rs in runs.items()}
    at_end = {c: end[none][c] - end[replay][c] for c in end[none]}
    return Finding(
        "replay_ratio",
        "1. Forgetting falls with the replay ratio; 1-5% replay already helps",
        "Ibrahim et al. 2024; Bethune et al. 2025",
        {"conditions": list(runs), "replay_share": share},
        f"forgetting (nats) without replay minus with {share} replay, mean over the band; positive: replay helps",
        **fields,
        note=(
            f"At equal steps (Ibrahim et al.'s comparison) the difference is {ci_text(at_end)} nats. Mean forgetting "
            f"at the end of the stage: {listing({k: float(np.mean(list(v.values()))) for k, v in end.items()})} nats."
        ),
        raw={"end_forgetting": {k: list(v.values()) for k, v in end.items()}},
    )


def finding_self_replay(runs: Runs, levels: Sequence[float], none: str, real: str, self_kl: str) -> Finding:
    used, fields = banded(runs, levels, lambda f: f[none] - f[self_kl])
    mean_f = {lb: band_values({lb: rs}, used, lambda f, lb=lb: f[lb]) for lb, rs in runs.items()}
    band_mean = {lb: mean_over_band(v) for lb, v in mean_f.items()}
    share = {c: 1 - band_mean[self_kl][c] / band_mean[none][c] for c in band_mean[none]}
    real_share = {c: 1 - band_mean[real][c] / band_mean[none][c] for c in band_mean[none]}
    return Finding(
        "self_replay",
        "2. Self-generated replay with KL to the base removes most forgetting",
        "Marek et al. 2026",
        {"conditions": list(runs)},
        "share of forgetting removed over the band, 1 - F(self-generated + KL) / F(none), forgetting averaged over "
        "the band's levels; reproduced when the interval lies above one half ('most')",
        **(fields | {"per_cell": share}),
        note=f"Real replay at the same ratio removes {ci_text(real_share)} of the forgetting. The pointwise curve "
        "(figure, and the sign rule) is forgetting without replay minus with self-generated replay + KL, in nats.",
        raw={"band_mean_forgetting": {lb: list(v.values()) for lb, v in band_mean.items()}},
    )


def finding_size(runs: Runs, levels: Sequence[float]) -> Finding:
    log_n = [float(np.log10(next(iter(rs.values()))["num_params_non_embedding"])) for rs in runs.values()]
    used, fields = banded(runs, levels, lambda f: slope(log_n, list(f.values())))
    frac = band_values(runs, used, lambda f: slope(log_n, list(f.values())), "forgetting_fraction")
    start = {lb: float(np.mean([r["curve"][0][1] for r in rs.values()])) for lb, rs in runs.items()}
    return Finding(
        "size",
        "3. Larger models forget less at matched learning",
        "Marek et al. 2026; Bethune et al. 2025",
        {"sizes": list(runs), "log10_non_embedding_params": log_n},
        "least-squares slope of forgetting (nats) on log10(non-embedding parameters), mean over the band; "
        "negative: larger forget less",
        **fields,
        note=f"In forgetting fraction the slope is {ci_text(mean_over_band(frac))} per decade. Held-out new loss "
        f"before fine-tuning: {listing(start, ' nats')}; every size is matched on its own drop.",
    )


def finding_budget(runs: Runs, levels: Sequence[float]) -> Finding:
    log_b = [math.log2(float(lb)) for lb in runs]
    used, fields = banded(runs, levels, lambda f: slope(log_b, list(f.values())))
    start = {f"{lb} tokens/param": float(np.mean([r["curve"][0][1] for r in rs.values()])) for lb, rs in runs.items()}
    return Finding(
        "budget",
        "4. More pretraining tokens per parameter, more forgetting at matched learning",
        "Springer et al. 2025; Marek et al. 2026",
        {"pretrain_tokens_per_param": [float(lb) for lb in runs]},
        "least-squares slope of forgetting (nats) per doubling of pretraining tokens per parameter, mean over the "
        "band; positive: more pretraining, more forgetting",
        **fields,
        note=f"Held-out new loss before fine-tuning: {listing(start, ' nats')}.",
    )


def finding_methods(runs: Runs, levels: Sequence[float], full: str, lora: str) -> Finding:
    used, fields = banded(runs, levels, lambda f: f[full] - f[lora])
    others = {lb: mean_over_band(band_values(runs, used, lambda f, lb=lb: f[full] - f[lb])) for lb in runs}
    learned = {c: runs[full][c]["learning_nats"] - runs[lora][c]["learning_nats"] for c in runs[full]}
    return Finding(
        "methods",
        "5. LoRA forgets less than full fine-tuning",
        "Biderman et al. 2024",
        {"conditions": list(runs)},
        "forgetting (nats) of full fine-tuning minus LoRA r8 (10x LR), mean over the band; positive: LoRA forgets less",
        **fields,
        note=f"At equal steps full learns {ci_text(learned)} nats more than LoRA. Full minus each method over the "
        f"band: {'; '.join(f'{lb} {ci_text(v)}' for lb, v in others.items() if lb != full)} nats.",
    )


def finding_power_law(runs: Runs) -> Finding:
    ((label, rs),) = runs.items()
    fits = {}
    for c, r in rs.items():
        steps = np.array([p[0] for p in r["curve"]])
        forgot = np.array([p[2] - r["curve"][0][2] for p in r["curve"]])
        keep = (steps >= 10) & (forgot > 0)  # from the end of warm-up on, where log needs it positive
        fits[c] = float(np.polyfit(np.log(steps[keep]), np.log(forgot[keep]), 1)[0]) if keep.sum() > 2 else math.nan
    last = int(next(iter(rs.values()))["curve"][-1][0])
    return Finding(
        "power_law",
        "6. Forgetting grows as a power law in fine-tuning steps",
        "Kalajdzievski 2024",
        {"condition": label},
        "exponent b of forgetting = A * steps^b (log-log least squares over steps 10 to the end); positive: "
        "forgetting grows with steps",
        fits,
        {"metric": "step", "levels": [10, last], "covered": [10, last]},
        epochs_per_stage=epochs(runs),
        epochs_trained=epochs(runs),
        note="Kalajdzievski reports about 0.15. Not a matched comparison: the band is the range of steps fitted.",
        raw={"curves": [r["curve"] for r in rs.values()]},
    )


def finding_lr_replay(runs: Runs, levels: Sequence[float], lr: str, slow: str, replay: str) -> Finding:
    used, fields = banded(runs, levels, lambda f: f[slow] - f[replay])
    premise = mean_over_band(band_values(runs, used, lambda f: f[lr] - f[slow]))
    cost = mean_over_band(band_values(runs, used, lambda f: f[slow] / f[replay], "step"))
    return Finding(
        "lr_replay",
        "7. A lower LR forgets less but needs many more steps; replay breaks the trade-off",
        "Marek et al. 2026",
        {"conditions": list(runs)},
        f"forgetting (nats) of the LR lowered ({slow}) minus the full LR with replay, mean over the band; positive: "
        "replay forgets less",
        **fields,
        note=f"The premise, forgetting at the full LR minus the lowered LR without replay: {ci_text(premise)} nats "
        f"(positive: the lower LR forgets less, as published). The lowered LR takes {ci_text(cost, 1)} times the "
        "steps of replay to reach the same levels.",
    )


def slowed(runs: Runs) -> str:
    """The label of the lowered-LR condition (`lr/3`)."""
    return next(label for label in runs if label.startswith("lr/"))


def world_runs(design: Design, s: Scale, results: dict[str, dict]) -> Runs:
    return {label: {c: results[key(make(c))] for c in s.cells} for label, make in design.items()}


# The world's findings: (protocol key, design, analysis of its runs and band).
WORLD_FINDINGS: tuple[tuple[str, Callable[[Scale], Design], Callable[[Runs, Sequence[float]], Finding]], ...] = (
    ("replay_ratio", replay_ratio_design, lambda r, lv: finding_replay_ratio(r, lv, "0/32", "1/32", "1/32 (3.1%)")),
    ("self_replay", self_replay_design, lambda r, lv: finding_self_replay(r, lv, *r)),
    ("size", size_design, finding_size),
    ("budget", budget_design, finding_budget),
    ("methods", method_design, lambda r, lv: finding_methods(r, lv, "full", "LoRA r8")),
    ("power_law", power_law_design, lambda r, lv: finding_power_law(r)),
    ("lr_replay", lr_replay_design, lambda r, lv: finding_lr_replay(r, lv, "lr", slowed(r), "lr + replay 12.5%")),
)


# ---- the pilot: the bands, from a world no finding scores --------------------------------------------------------


def pilot_cell() -> Cell:
    return PROTOCOL["band"]["pilot_world_seed"], PROTOCOL["band"]["pilot_data_seed"]


def band_levels(final_drop: float) -> list[float]:
    return [round(f * final_drop, 4) for f in PROTOCOL["band"]["fractions"]]


def run_pilot(s: Scale, workers: int, cache: Path, out: Path) -> None:
    """Train each finding's reference (first) condition once on the pilot world and write every band."""
    reference = {name: next(iter(design(s).values()))(pilot_cell()) for name, design, _ in WORLD_FINDINGS}
    done = load_cache(cache)
    run_all([o for o in {key(o): o for o in reference.values()}.values() if key(o) not in done], cache, workers)
    results = load_cache(cache)
    bands = {}
    for name, overrides in reference.items():
        record = results[key(overrides)]
        drop = record["curve"][0][1] - record["curve"][-1][1]
        bands[name] = {"pilot": overrides, "final_drop": drop, "levels": band_levels(drop)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bands, indent=2))
    print(json.dumps({k: v["levels"] for k, v in bands.items()}, indent=1))


# ---- the report -----------------------------------------------------------------------------------------------


def busy_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Wall time during which at least one trial ran: the trials' compute time, without the gaps between reruns."""
    busy, end = 0.0, -math.inf
    for start, finish in sorted(intervals):
        busy += max(0.0, finish - max(start, end))
        end = max(end, finish)
    return busy


def draw(ax: Any, finding: Finding) -> None:
    """A banded finding: its effect at each level, per world and overall with the interval; power law: exponents."""
    row = finding.as_json()
    if row["pointwise"] is None:
        ax.hist(list(finding.per_cell.values()), bins=9)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel="exponent b per trial", ylabel="trials")
        return
    levels = [p["level"] for p in row["pointwise"]]
    assert finding.pointwise is not None
    for world in sorted({w for w, _ in finding.per_cell}):
        cells = [v for (w, _), v in finding.pointwise.items() if w == world]
        ax.plot(levels, np.mean(cells, axis=0), color="0.7", lw=0.8)
    ax.plot(levels, [p["effect"] for p in row["pointwise"]], marker="o", label="mean")
    ax.fill_between(
        levels, [p["ci_low"] for p in row["pointwise"]], [p["ci_high"] for p in row["pointwise"]], alpha=0.2
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="learning level: drop of held-out new loss (nats)", ylabel="effect (grey: one world each)")


def verdict(row: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**"}.get(row["reproduced"], str(row["reproduced"]))


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| finding | metric | band (nats) | effect | 95% CI | sd worlds / data | seeds x worlds "
        "| epochs read / trained | reproduced |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        band = r["band"]["covered"]
        lines.append(
            f"| {r['finding']} | {r['metric']} | {band[0]:g}-{band[-1]:g} ({len(band)}/{len(r['band']['levels'])}) | "
            f"{r['effect']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | "
            f"{r['sd_between_worlds']:.3f} / {r['sd_within_world']:.3f} | {r['seeds']} x {r['world_seeds']} | "
            f"{r['epochs_per_stage']:.2f} / {r['epochs_trained']:.2f} | {verdict(r)} |"
        )
    return lines


def write(out: Path, findings: list[Finding], run: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [f.as_json() for f in findings]
    for i, (finding, row) in enumerate(zip(findings, rows), 1):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        draw(ax, finding)
        ax.set_title(row["finding"][:70], fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"findings_{i}.png", dpi=110)
        plt.close(fig)
    (out / "findings.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Seven published forgetting findings on the offline world, across world seeds",
        "",
        f"`python bench/findings.py` on {platform.machine()}, torch {torch.__version__}, one torch thread per trial: "
        f"{run['trials']} trials, {run['workers']} at a time, {run['busy_s'] / 60:.1f} minutes of wall time with "
        f"trials running ({run['trial_s'] / 60:.1f} trial-minutes; 1-minute load average at trial ends "
        f"{run['load'][0]:.1f}-{run['load'][2]:.1f}, median {run['load'][1]:.1f}), after the ladders were built.",
        "",
        "**Protocol** (bench/findings_protocol.yaml, committed before these trials): each finding's published "
        "direction; a band of learning levels (drops of held-out new loss, in nats, from each trial's own base) set "
        "by a pilot on world seed 99 that no finding scores (reports/findings_bands.json); the effect is the mean "
        "over the band's levels that every trial reaches (`band_covered`); the interval is Student-t over the "
        'world seeds\' means; `reproduced` is "depends on the level" when pointwise intervals at two levels '
        "exclude zero in opposite directions, else whether the interval clears the threshold in the published "
        "direction. **The world**: single-epoch (epochs read: the most of its stage any trial of a finding had "
        "trained on by the last point the finding reads, the top of its band; trained: by the trials' ends. No block "
        f"repeats before a finding's last reading: at most {max(r['epochs_per_stage'] for r in rows):.2f} epochs "
        f"read, {max(r['epochs_trained'] for r in rows):.2f} trained) with familiar domains (the base corpus "
        "describes 40 other entities of every stage domain), "
        "so stages start below a uniform guess. Its fine-tuning LR is a thirtieth of each rung's peak "
        "pretraining LR; that ratio was chosen on the pilot world, after seeing its forgetting.",
        "",
        "Held-out new-data loss before fine-tuning, mean over the trials of each base (every world and budget): "
        + listing(run["start"], " nats")
        + f", against a uniform guess of {run['uniform']:.2f} nats (ln V).",
        "",
        *table(rows),
        "",
        f"**{sum(r['reproduced'] is True for r in rows)} of {len(rows)} reproduced, "
        f"{sum(r['reproduced'] == 'depends on the level' for r in rows)} depend on the level.**",
        "",
    ]
    for i, r in enumerate(rows, 1):
        lines += [f"## {r['finding']}", "", f"![finding {i}](findings_{i}.png)", "", r["note"], ""]
    (out / "findings.md").write_text("\n".join(lines))


def run_world(args: argparse.Namespace, scale: Scale) -> None:
    cache = args.cache or (args.out / "trials.jsonl" if args.quick else CACHE)
    if args.fresh and cache.exists():
        cache.unlink()
    if args.pilot:
        run_pilot(scale, args.workers, cache.with_name("pilot.jsonl"), args.out / BANDS.name)
        return
    bands = json.loads((args.out / BANDS.name if args.quick else BANDS).read_text())
    started = time.perf_counter()
    wanted = {
        key(make(c)): make(c) for _, design, _ in WORLD_FINDINGS for make in design(scale).values() for c in scale.cells
    }
    done = load_cache(cache)
    pending = [o for k, o in wanted.items() if k not in done]
    print(f"{len(wanted)} trials, {len(pending)} to run", flush=True)
    run_all(pending, cache, args.workers)
    results = load_cache(cache)
    findings = [
        analyse(world_runs(design(scale), scale, results), bands[name]["levels"])
        for name, design, analyse in WORLD_FINDINGS
    ]
    records = [results[k] for k in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    # Every trial's curve beside the report: `--cache OUT/findings_trials.jsonl` recomputes it without training.
    (args.out / "findings_trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write(
        args.out,
        findings,
        {
            "trials": len(wanted),
            "workers": args.workers,
            "busy_s": busy_seconds([(r["started_at"], r["finished_at"]) for r in records]),
            "trial_s": sum(r["wall_time_s"] for r in records),
            "load": np.percentile([r["load_average"] for r in records], [0, 50, 100]),
            "start": {
                m: float(np.mean([r["curve"][0][1] for r in records if r["overrides"]["model.name"] == m]))
                for m in dict.fromkeys(r["overrides"]["model.name"] for r in records)
            },
            "uniform": records[0]["base_loss_init"],
        },
    )
    print((args.out / "findings.md").read_text())
    print(f"computed {len(pending)} of {len(wanted)} trials in {(time.perf_counter() - started) / 60:.1f} minutes")


# ---- the real model beside the world ---------------------------------------------------------------------------

REAL_PILOT = REPORTS / "findings_real_pilot.json"
# The findings one real model can test: (protocol key, its conditions in real_findings.py, analysis). Size and
# pretraining budget cannot be varied on one pretrained model.
REAL_FINDINGS: tuple[tuple[str, tuple[str, ...], Callable[[Runs, Sequence[float]], Finding]], ...] = (
    (
        "replay_ratio",
        ("none", "replay 25%"),
        lambda r, lv: finding_replay_ratio(r, lv, "none", "replay 25%", "1/4 (25%)"),
    ),
    ("self_replay", ("none", "replay 25%", "self-generated 25% + KL"), lambda r, lv: finding_self_replay(r, lv, *r)),
    ("methods", ("none", "LoRA r8", "GaLore"), lambda r, lv: finding_methods(r, lv, "none", "LoRA r8")),
    ("power_law", ("LoRA r8",), lambda r, lv: finding_power_law(r)),
    ("lr_replay", ("none", "replay 25%", "lr/3"), lambda r, lv: finding_lr_replay(r, lv, "none", "lr/3", "replay 25%")),
)
# Where magnitudes are compared: each side's plain full fine-tuning without replay (the world's on raycl-tiny-m).
WORLD_REFERENCE = ("self_replay", "none")


def real_runs(records: Sequence[dict[str, Any]], model: str, labels: Sequence[str]) -> Runs:
    """The real model's records by condition and (0, data seed): one pretrained model, so one "world"."""
    mine = [r for r in records if r["overrides"]["model.name"] == model]
    return {
        label: {(0, r["seed"]): r for r in sorted(mine, key=lambda r: r["seed"]) if r["label"] == label}
        for label in labels
    }


def middle_fractions(runs: dict[Cell, dict[str, Any]], level: float) -> list[float]:
    """Each trial's forgetting fraction where its new loss has dropped by `level` (trials that never do: left out)."""
    points = [at_level(r, level) for r in runs.values()]
    return [p["forgetting_fraction"] for p in points if p is not None]


def benchmark_deltas(runs: Runs) -> dict[str, dict[str, dict[str, float]]]:
    """Per condition and benchmark, accuracy after minus before, mean and interval over the data seeds."""
    deltas: dict[str, dict[str, dict[str, float]]] = {}
    for label, rs in runs.items():
        tasks = sorted({t for r in rs.values() for t in r.get("benchmarks", {})})
        deltas[label] = {
            t: seed_summary({c: r["benchmarks"][t]["after"] - r["benchmarks"][t]["before"] for c, r in rs.items()})
            for t in tasks
        }
    return deltas


def direction_of(row: dict[str, Any], finding: Finding | None = None) -> int:
    """The sign a finding's result points in: of the mean pointwise difference in nats over the band where it is
    banded (for finding 2 that is forgetting without minus with self-generated replay, whose sign the share loses
    when there is no forgetting to remove), else of the effect; where a power-law exponent is undefined because
    forgetting never rises above zero, of the slope of forgetting on log step."""
    if row["pointwise"]:
        return int(np.sign(np.mean([p["effect"] for p in row["pointwise"]])))
    if not math.isnan(row["effect"]) or finding is None:
        return int(np.sign(row["effect"]))
    curves = finding.raw["curves"]
    slopes = [slope(np.log([p[0] for p in c[1:]]), [p[2] - c[0][2] for p in c[1:]]) for c in curves]
    return int(np.sign(np.mean(slopes)))


def world_vs_real(args: argparse.Namespace) -> None:
    """The real model's findings (trials from real_findings.py's cache) beside the world's, and their magnitudes."""
    records = [
        json.loads(line)
        for path in sorted(REPORTS.glob("findings_real*_trials.jsonl"))  # the model's, and others' descriptive rows
        for line in path.read_text().splitlines()
    ]
    pilot = json.loads(REAL_PILOT.read_text())
    model = pilot["model"]  # the scored model; others' trials are descriptive rows
    levels = band_levels(pilot["curve"][0][1] - pilot["curve"][-1][1])
    world_rows = {r["finding"].split(".")[0]: r for r in json.loads((REPORTS / "findings.json").read_text())}
    keys = {name: i for i, (name, _, _) in enumerate(WORLD_FINDINGS, 1)}
    rows, findings = [], {}
    for name, labels, analyse in REAL_FINDINGS:
        finding = analyse(real_runs(records, model, labels), levels)
        real, world = finding.as_json(), world_rows[str(keys[name])]
        findings[name] = finding
        rows.append(
            {
                "finding": world["finding"],
                "key": name,
                "direction": real["direction"],
                "world": {k: world[k] for k in ("metric", "effect", "ci_low", "ci_high", "reproduced", "band")},
                "real": {k: real[k] for k in ("metric", "effect", "ci_low", "ci_high", "reproduced", "band")},
                "real_seeds": real["seeds"],
                "world_seeds": world["world_seeds"],
                "world_direction": direction_of(world),
                "real_direction": direction_of(real, finding),
                "agree": direction_of(world) == direction_of(real, finding),
                "real_note": real["note"],
            }
        )
    world_bands = json.loads(BANDS.read_text())
    world_design = dict((n, d) for n, d, _ in WORLD_FINDINGS)[WORLD_REFERENCE[0]](FULL)
    world_records = load_cache(REPORTS / "findings_trials.jsonl")
    world_none = world_runs(world_design, FULL, world_records)[WORLD_REFERENCE[1]]
    world_middle = world_bands[WORLD_REFERENCE[0]]["levels"][len(levels) // 2]
    real_none = real_runs(records, model, ("none",))["none"]
    world_ff = float(np.median(middle_fractions(world_none, world_middle)))
    real_ff = float(np.median(middle_fractions(real_none, levels[len(levels) // 2])))
    all_real = real_runs(records, model, sorted({r["label"] for r in records}))
    others = sorted({r["overrides"]["model.name"] for r in records} - {model})
    summary = {
        "model": model,
        "findings": rows,
        "agree": sum(r["agree"] for r in rows),
        "forgetting_fraction_ratio": world_ff / real_ff,
        "world_forgetting_fraction_at_band_middle": world_ff,
        "real_forgetting_fraction_at_band_middle": real_ff,
        "world_band_middle_nats": world_middle,
        "real_band_middle_nats": levels[len(levels) // 2],
        "real_band": levels,
        "benchmark_deltas": benchmark_deltas(all_real),
        "descriptive": {
            m: {
                k: float(np.mean([r[k] for r in records if r["overrides"]["model.name"] == m and r["label"] == "none"]))
                for k in ("learning_nats", "forgetting", "forgetting_fraction", "wall_time_s")
            }
            for m in [model, *others]
        },
        "real_wall_s": busy_seconds([(r["started_at"], r["finished_at"]) for r in records]),
        "real_trial_s": sum(r["wall_time_s"] for r in records),
        "real_trials_forgetting_below_zero": sum(r["forgetting"] < 0 for rs in all_real.values() for r in rs.values()),
        "real_trials": sum(len(rs) for rs in all_real.values()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "world_vs_real.json").write_text(json.dumps(summary, indent=2))
    (args.out / "world_vs_real.md").write_text(world_vs_real_text(summary))
    print((args.out / "world_vs_real.md").read_text())


def world_vs_real_text(summary: dict[str, Any]) -> str:
    def cell(side: dict[str, Any]) -> str:
        return f"{side['effect']:+.3f} [{side['ci_low']:+.3f}, {side['ci_high']:+.3f}]"

    lines = [
        f"# The offline world beside a real model ({summary['model']})",
        "",
        f"Every finding one pretrained model can test, run by `python bench/findings.py --model {summary['model']}` "
        f"({summary['real_wall_s'] / 60:.0f} minutes of wall time, {summary['real_trial_s'] / 60:.0f} trial-minutes "
        "on the 2 CPU cores), beside the world's (reports/findings.md). Same protocol: effects are means over a band "
        "of learning levels set by a pilot that is never scored (data seed 99 here); the real model's intervals are "
        "over its data seeds only, the world's over world seeds. `agree`: both point the same way (the sign of the "
        "mean difference in nats over the band; of the exponent for finding 6, or of forgetting's slope on log step "
        "where the exponent is undefined because forgetting never rises above zero). Size "
        "and pretraining budget (findings 3 and 4) cannot be varied on one pretrained model.",
        "",
        "| finding | world effect | world reproduced | real effect | real reproduced | real seeds | agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["findings"]:
        lines.append(
            f"| {r['finding']} | {cell(r['world'])} | {r['world']['reproduced']} | {cell(r['real'])} | "
            f"{r['real']['reproduced']} | {r['real_seeds']} | {'yes' if r['agree'] else '**no**'} |"
        )
    lines += [
        "",
        f"**The world agrees in direction on {summary['agree']} of {len(summary['findings'])}.**",
        "",
        "**Magnitude**: forgetting fraction of plain full fine-tuning at the band's middle: world (raycl-tiny-m, "
        f"{summary['world_band_middle_nats']:g} nats learned) "
        f"{summary['world_forgetting_fraction_at_band_middle']:.4f}, real ({summary['real_band_middle_nats']:g} nats "
        f"learned) {summary['real_forgetting_fraction_at_band_middle']:.4f}: "
        f"ratio **{summary['forgetting_fraction_ratio']:.2f}**. The real model's retention loss fell (forgetting "
        f"below zero) in {summary['real_trials_forgetting_below_zero']} of its {summary['real_trials']} trials.",
        "",
        "Benchmark accuracy after minus before (lm-eval on local subsets), mean [95% CI] over the data seeds:",
        "",
    ]
    for label, tasks in summary["benchmark_deltas"].items():
        lines.append(
            f"- {label}: "
            + "; ".join(f"{t} {s['effect']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]" for t, s in tasks.items())
        )
    lines += ["", "Descriptive, plain full fine-tuning (not a size law: two model families):", ""]
    for model, d in summary["descriptive"].items():
        lines.append(
            f"- {model}: learning {d['learning_nats']:.3f} nats, forgetting {d['forgetting']:+.3f} nats "
            f"(fraction {d['forgetting_fraction']:.4f}), {d['wall_time_s']:.0f} s a trial"
        )
    lines += ["", *(f"- {r['finding']} (real): {r['real_note']}" for r in summary["findings"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short trials of the two smallest rungs, 2 x 2 seeds")
    parser.add_argument("--pilot", action="store_true", help="run the pilot and write the bands (before scoring)")
    parser.add_argument("--model", default=None, help="a real model: run real_findings.py's trials and compare")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where the reports and figures go")
    parser.add_argument("--cache", type=Path, default=None, help=f"trial cache (default {CACHE})")
    parser.add_argument("--workers", type=int, default=2, help="trials at a time, one torch thread each")
    parser.add_argument("--fresh", action="store_true", help="ignore (and replace) the trial cache")
    args = parser.parse_args()
    if args.model:
        from real_findings import main as run_real

        cache = ["--cache", str(args.cache)] if args.cache else []
        run_real(["--model", args.model, "--workers", str(args.workers), *cache])
        world_vs_real(args)
        return
    run_world(args, QUICK if args.quick else FULL)


if __name__ == "__main__":
    main()
