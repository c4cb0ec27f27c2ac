"""LR range test: the learning rates at which a model's held-out loss on new data falls by set fractions.

    raycl lr-range --out runs/lr_range                 # the default trial's model on its first stage
    raycl lr-range my_trial.yaml --out runs/lr_range   # any trial config: its model, method, batch, first stage

From the base model, LRs on an exponential grid each train `steps_per_point` steps of the first stage, and
the held-out losses on that stage (new data) and on the original distribution (base data) are measured
after each. The baseline is the mean new-data loss of the burn-in (the smallest LRs, too small to move it);
the LR of a drop d is where the loss first stays at or below `baseline x (1 - d)` for `consecutive` points,
interpolated on log LR between that point and the one before. The ramp stops when the loss diverges (not
finite, or above `train.divergence_factor` x the baseline); a drop never held has no LR (null), and the
record keeps the best LR and its drop instead.

Two ramps: `restart` trains every LR for the same steps from the base weights; `single` is the usual LR
finders' one run whose LR rises point by point. `restart` is the default because its answer does not depend
on the ramp. Measured on raycl-tiny-s (10 steps per LR): over three batch seeds both modes agree with
themselves within 2%; but with 16, 24 and 32 points on the same range, `restart` found the 5% drop at
2.32e-4, 2.33e-4 and 2.35e-4 and `single` at 1.32e-4, 1.00e-4 and 0.80e-4, because each point of a single
ramp inherits every earlier point's training, so a denser ramp reaches a drop at a lower LR. A trial, too,
starts from the base weights, which is what `restart` measures.

Results are cached per model, method, batch and first stage, so `train.lr_at_loss_drop` in a trial or a
sweep runs the test once and reads it afterwards.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from pydantic import BaseModel
from rich.progress import Progress as ProgressBar

from raycl.artifacts.cache import cached_build
from raycl.config import TrialConfig
from raycl.data.tokens import batch_at
from raycl.models.heldout import heldout_loss
from raycl.models.loading import load_base_model
from raycl.models.optimizer_step import Optimizer, optimizer_step
from raycl.training.methods import prepare_method
from raycl.training.parts import autocast_for, load_stream, next_token_loss, resolve_device, write_json
from raycl.world.offline import load_world

DROPS = (0.01, 0.05, 0.1)
RECORD_FILE = "lr_range.json"
FIGURE_FILE = "lr_range.png"
RANGE_TEST_VERSION = 1  # part of the cache key: raise it when the measurement changes


@dataclass(frozen=True)
class RangeSettings:
    """The LR grid and how a drop is read from it."""

    mode: Literal["restart", "single"] = "restart"
    min_lr: float = 1e-5
    max_lr: float = 0.5
    points: int = 24
    steps_per_point: int = 10
    burn_in: int = 3  # the first points, whose mean new-data loss is the baseline
    consecutive: int = 3  # points in a row at or below a threshold before a drop counts as held
    eval_examples: int = 64  # held-out examples of the stage and of the original distribution, per point


class RangeRecord(BaseModel):
    """What `lr_range.json` holds. Losses are None where they were not finite."""

    model: str
    stage: str
    mode: str
    lrs: list[float]
    new_losses: list[float | None]
    base_losses: list[float | None]
    baseline_loss: float
    targets: dict[str, float | None]
    best_lr: float
    best_drop: float
    diverged_at_lr: float | None
    settings: dict[str, Any]
    wall_time_s: float


class LossDropUnreachable(ValueError):
    """A trial's `train.lr_at_loss_drop` that its range test never held: the trial stops before training."""


def lr_grid(settings: RangeSettings) -> list[float]:
    return np.geomspace(settings.min_lr, settings.max_lr, settings.points).tolist()


def lr_at_drop(
    lrs: list[float], losses: list[float | None], baseline: float, drop: float, burn_in: int, consecutive: int
) -> float | None:
    """The LR where `losses` first stay at or below `baseline x (1 - drop)` for `consecutive` points after
    the burn-in, interpolated on log LR from the point before; None when no run of points holds it."""
    threshold = baseline * (1 - drop)
    held = [loss is not None and loss <= threshold for loss in losses]
    for index in range(max(burn_in, 1), len(losses) - consecutive + 1):
        if all(held[index : index + consecutive]):
            before, after = losses[index - 1], losses[index]
            if before is None or before <= threshold:
                return lrs[index]
            assert after is not None  # held: at or below the threshold
            share = (before - threshold) / (before - after)
            return math.exp(math.log(lrs[index - 1]) + share * (math.log(lrs[index]) - math.log(lrs[index - 1])))
    return None


def ramp_diverged(loss: float, baseline: float | None, factor: float) -> bool:
    """Not finite, or (once the burn-in gave a baseline) above `factor` times it."""
    return not math.isfinite(loss) or (baseline is not None and loss > factor * baseline)


def measure_ramp(config: TrialConfig, settings: RangeSettings) -> RangeRecord:
    """Run the range test of `config`'s model and method on its first stage (uncached)."""
    started = time.perf_counter()
    device = resolve_device(config.train.device)
    torch.set_num_threads(config.train.cpu_threads)
    world = load_world(config.world)
    base_model, tokenizer = load_base_model(config.model, world)
    stream = load_stream(config, world, tokenizer)
    stage, count = stream.stages[0], settings.eval_examples
    # transformers wraps `to` with `functools.wraps(Module.to)`, which hides the bound `self` from pyright.
    base_model.to(device)  # pyright: ignore[reportArgumentType]

    pad_id = cast(int, tokenizer.pad_token_id)  # set by `load_base_model`; typed by an untyped `__getattr__`

    def heldout(model: torch.nn.Module, examples: list[list[int]], labels: list[list[int]] | None) -> float:
        return heldout_loss(
            model,
            examples[:count],
            labels[:count] if labels else None,
            pad_id=pad_id,
            batch_size=config.eval.batch_size,
            device=device,
            autocast=autocast_for(device),
        )

    def fresh_model() -> tuple[torch.nn.Module, Optimizer]:
        torch.manual_seed(config.train.seed)
        prepared = prepare_method(copy.deepcopy(base_model), config.method, config.train)
        return prepared.model.train(), prepared.optimizer

    lrs, new_losses, base_losses = lr_grid(settings), [], []
    baseline, diverged_at_lr = None, None
    model, optimizer = fresh_model()
    with ProgressBar(transient=True) as bar:
        task = bar.add_task(f"LR range test ({settings.mode})", total=len(lrs))
        for point, lr in enumerate(lrs):
            if settings.mode == "restart" and point:
                model, optimizer = fresh_model()
            for local_step in range(settings.steps_per_point):
                # restart: every LR sees the same batches; single: the run goes on through fresh ones.
                step = local_step if settings.mode == "restart" else point * settings.steps_per_point + local_step
                blocks = batch_at(stage.train_blocks, config.train.batch_size, step, config.train.seed).to(device)
                labels = batch_at(stage.train_labels, config.train.batch_size, step, config.train.seed).to(device)
                with autocast_for(device):
                    loss = next_token_loss(model(input_ids=blocks).logits, labels)
                optimizer_step(loss, model, optimizer, lr, config.train.grad_clip)
            model.eval()
            new_loss, base_loss = (
                heldout(model, stage.heldout, stage.heldout_labels),
                heldout(model, stream.retention, None),
            )
            model.train()
            new_losses.append(new_loss)
            base_losses.append(base_loss)
            if point + 1 == settings.burn_in:
                baseline = float(np.mean(new_losses))
            bar.update(
                task,
                advance=1,
                description=f"LR range test ({settings.mode}): lr {lr:.2e} new {new_loss:.3f} base {base_loss:.3f}",
            )
            if ramp_diverged(new_loss, baseline, config.train.divergence_factor):
                diverged_at_lr = lr
                break
    lrs = lrs[: len(new_losses)]
    if baseline is None:
        raise ValueError(
            f"{config.model.name}: the LR range test diverged at lr {diverged_at_lr:.3g}, within its burn-in: no "
            "baseline to read drops from"
        )
    finite = [(loss, lr) for loss, lr in zip(new_losses, lrs) if math.isfinite(loss)]
    best_loss, best_lr = min(finite)
    new_losses = [loss if math.isfinite(loss) else None for loss in new_losses]
    return RangeRecord(
        model=config.model.name,
        stage=stage.name,
        mode=settings.mode,
        lrs=lrs,
        new_losses=new_losses,
        base_losses=[loss if math.isfinite(loss) else None for loss in base_losses],
        baseline_loss=baseline,
        targets={
            f"{drop:g}": lr_at_drop(lrs, new_losses, baseline, drop, settings.burn_in, settings.consecutive)
            for drop in DROPS
        },
        best_lr=best_lr,
        best_drop=1 - best_loss / baseline,
        diverged_at_lr=diverged_at_lr,
        settings=asdict(settings),
        wall_time_s=time.perf_counter() - started,
    )


def draw_range(record: RangeRecord, path: Path) -> None:
    """New-data and base-data loss against LR, with each drop's threshold and the LR found for it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 6), tight_layout=True)
    FigureCanvasAgg(figure)
    new_axes, base_axes = figure.subplots(2, 1, sharex=True)
    new_axes.plot(record.lrs, [np.nan if v is None else v for v in record.new_losses], "o-", color="tab:blue")
    base_axes.plot(record.lrs, [np.nan if v is None else v for v in record.base_losses], "o-", color="tab:orange")
    for (drop, lr), color in zip(record.targets.items(), ("tab:green", "tab:olive", "tab:red")):
        new_axes.axhline(record.baseline_loss * (1 - float(drop)), color=color, linestyle="--", linewidth=0.8)
        if lr is not None:
            for axes in (new_axes, base_axes):
                axes.axvline(lr, color=color, linestyle=":", label=f"{float(drop):.0%} drop: lr {lr:.2e}")
    new_axes.set(
        xscale="log",
        ylabel=f"held-out loss, {record.stage} (nats)",
        title=f"LR range test ({record.mode}) of {record.model}: {record.settings['steps_per_point']} steps per LR",
    )
    base_axes.set(xscale="log", xlabel="learning rate", ylabel="held-out loss, base data (nats)")
    new_axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def range_spec(config: TrialConfig, settings: RangeSettings) -> dict[str, Any]:
    """Everything that decides a range test's answer: the model, its data's first stage, method, batches, grid."""
    train = config.train
    return {
        "version": RANGE_TEST_VERSION,
        "model": config.model.model_dump(mode="json"),
        # The offline world's first stage is the same at every stream length, so one test serves them all.
        "data": config.stream.model_dump(mode="json")
        if config.stream
        else config.world.model_dump(mode="json", exclude={"num_stages"}),
        "method": config.method.model_dump(mode="json"),
        "train": {
            "batch_size": train.batch_size,
            "seq_len": train.seq_len,
            "seed": train.seed,
            "grad_clip": train.grad_clip,
            "weight_decay": train.weight_decay,
            "divergence_factor": train.divergence_factor,
            "layer_lr_slope": train.layer_lr_slope,
        },
        "eval_batch_size": config.eval.batch_size,
        "settings": asdict(settings),
    }


def range_test(config: TrialConfig, settings: RangeSettings = RangeSettings()) -> tuple[RangeRecord, Path]:
    """The range test of `config` (run once, then read from the raycl cache) and its cache directory."""

    def build(directory: Path) -> None:
        record = measure_ramp(config, settings)
        write_json(directory / RECORD_FILE, record.model_dump())
        draw_range(record, directory / FIGURE_FILE)

    directory = cached_build("lr_range", range_spec(config, settings), build)
    return RangeRecord.model_validate_json((directory / RECORD_FILE).read_text()), directory


def write_range_test(config: TrialConfig, out_dir: Path, settings: RangeSettings = RangeSettings()) -> RangeRecord:
    """The range test of `config`, with its record and figure copied to `out_dir`."""
    record, directory = range_test(config, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (RECORD_FILE, FIGURE_FILE):
        shutil.copyfile(directory / name, out_dir / name)
    return record


def resolve_lr(config: TrialConfig) -> tuple[TrialConfig, dict[str, Any] | None]:
    """`config` with `train.lr_at_loss_drop` replaced by the LR its range test found for that drop, and a
    record of it; `config` itself when it names an LR. Raises `LossDropUnreachable` for a drop never held."""
    drop = config.train.lr_at_loss_drop
    if drop is None:
        return config, None
    record, directory = range_test(config)
    settings = RangeSettings(**record.settings)
    lr = lr_at_drop(record.lrs, record.new_losses, record.baseline_loss, drop, settings.burn_in, settings.consecutive)
    if lr is None:
        raise LossDropUnreachable(
            f"train.lr_at_loss_drop: {drop:g}: the LR range test of {record.model} on stage {record.stage} never held "
            f"a {drop:.1%} drop (best {record.best_drop:.1%} at lr {record.best_lr:.3g}; {directory / RECORD_FILE}); "
            "trial stopped before training"
        )
    resolved = config.with_overrides({"train.lr": lr, "train.lr_at_loss_drop": None})
    return resolved, {"loss_drop": drop, "lr": lr, "record": str(directory / RECORD_FILE)}
