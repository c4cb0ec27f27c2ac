"""One continual-learning trial, top to bottom.

Load the base model once, evaluate it (step 0), then for each stage of the stream: train on the
stage, evaluate on the schedule, checkpoint at the stage boundary. A rerun with the same `out_dir`
resumes after the last finished stage and ends with the same metrics.

    raycl run --out runs/first                 # the default trial on the offline world
    raycl run my_trial.yaml --out runs/mine    # any TrialConfig YAML

Inside a Ray Train worker group (torch.distributed initialised) the model is wrapped in DDP and each
rank trains on its slice of every batch; rank 0 writes checkpoints and the result.
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.progress import Progress as ProgressBar
from torch import nn

from raycl.config import ReplayConfig, TrialConfig
from raycl.config.result import BENCHMARK_PREFIX, Divergence, TrialDiverged, TrialResult
from raycl.config.trial import StopRule
from raycl.data.stream import Stage, Stream
from raycl.data.tokens import batch_at
from raycl.evaluation import metrics
from raycl.evaluation.harness import benchmark_deltas, load_harness, run_benchmarks, shared_task_dir
from raycl.mitigation.penalties import EWC, kl_to_base
from raycl.mitigation.replay import Replay
from raycl.models.heldout import heldout_loss
from raycl.models.ladder import parameter_counts
from raycl.models.loading import load_base_model, pretraining_facts
from raycl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, stage_checkpoint_dir
from raycl.training.lr_range import resolve_lr
from raycl.training.memory import StepMemory
from raycl.training.methods import optimizer_state_bytes, prepare_method
from raycl.training.parts import autocast_for, finite_or_none, load_stream, next_token_loss, resolve_device, write_json
from raycl.world.offline import load_world

# Called with an evaluation's metrics, and the stage checkpoint written with it (full evaluations).
Report = Callable[[dict[str, float], Path | None], None]


@dataclass
class TrialProgress:
    """Where a trial stands. Saved as progress.json in every stage checkpoint; a resumed trial goes on from it."""

    config: dict[str, Any]
    stages_done: int = 0
    step: int = 0
    stage_matrix: list[list[float]] = field(default_factory=list)  # one row per full evaluation
    retention_losses: list[float] = field(default_factory=list)
    benchmarks: list[dict[str, float]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)  # quick evaluations between stage ends
    train_tokens: int = 0
    new_tokens: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    stage_time_s: list[float] = field(default_factory=list)
    replay_generation_s: float = 0.0
    elapsed_s: float = 0.0
    first_loss: float | None = None  # the reference of the divergence bound
    train_memory: dict[str, int] = field(default_factory=dict)  # peak of one step by part, once measured
    untimed_tokens: int = 0  # tokens of that step, whose time (slowed by the tracker) is not counted
    stopped: str | None = None  # why train.stop_when ended the stream early


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory on GPU; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def learning_rate(config: TrialConfig, step: int) -> float:
    """Linear warm-up over the first steps of the stream, then constant, as continual streams have no end."""
    warmup = config.train.warmup_steps
    return config.train.lr * min(1.0, (step + 1) / warmup) if warmup else config.train.lr


def training_blocks(config: TrialConfig, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage's training blocks and labels: all of them, or the first `train.examples_per_stage`."""
    count = config.train.examples_per_stage
    if count is None:
        return stage.train_blocks, stage.train_labels
    if count > len(stage.train_blocks):
        raise ValueError(
            f"train.examples_per_stage: {count}, but stage {stage.name} has {len(stage.train_blocks)} training blocks of {config.train.seq_len} tokens"
        )
    return stage.train_blocks[:count], stage.train_labels[:count]


def stage_steps(config: TrialConfig, stage: Stage) -> int:
    """`train.steps_per_stage`, or in a single pass one step per batch of the stage's new rows."""
    if not config.train.single_pass:
        return config.train.steps_per_stage
    return math.ceil(len(training_blocks(config, stage)[0]) / (config.train.batch_size - config.replay_rows))


def new_rows_at(blocks: torch.Tensor, rows: int, local_step: int, seed: int, single_pass: bool) -> torch.Tensor:
    """The new-data rows of a step: the next `rows` blocks in order in a single pass, else a seeded shuffle's."""
    if single_pass:
        return blocks[local_step * rows : (local_step + 1) * rows]
    return batch_at(blocks, rows, local_step, seed)


def adaptation_steps(start_loss: float, curve: list[tuple[int, float]], end: tuple[int, float], share: float) -> int | None:
    """Steps into a stage until its held-out loss first fell by `share` of the stage's whole drop.

    `curve` holds the stage's evaluations as (steps into the stage, loss), `end` its last step and final loss;
    None when the loss did not fall over the stage.
    """
    drop = start_loss - end[1]
    if not drop > 0:
        return None
    target = start_loss - share * drop
    return next(step for step, loss in [*curve, end] if loss <= target)


def stop_reason(rule: StopRule | None, values: dict[str, float], stages_done: int, stages: int) -> str | None:
    """Why `train.stop_when` ends the stream after `stages_done` stages, or None to go on (never before the
    first stage or after the last); a metric the trial does not measure is an error, also at step 0."""
    if rule is None:
        return None
    if rule.metric not in values:
        measured = ", ".join(name for name in values if name not in ("stage", "step", "full_eval"))
        raise ValueError(f"train.stop_when.metric: {rule.metric} is not measured by this trial (measured: {measured})")
    if 0 < stages_done < stages and values[rule.metric] >= rule.at_least:
        return f"train.stop_when: {rule.metric} = {values[rule.metric]:.4g} >= {rule.at_least:g} after stage {stages_done} of {stages}"
    return None


def needs_frozen_base(replay: ReplayConfig) -> bool:
    """Whether replay reads the frozen base model: KL targets, samples of it, or its loss to rank blocks."""
    return replay.loss == "kl" or replay.source == "self_generated" or replay.selection in ("hardest", "easiest")


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a plain model would have them (LoRA adapters merged into a copy)."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return model.state_dict()


def evaluate(
    model: nn.Module, stream: Stream, config: TrialConfig, pad_id: int, device: torch.device, max_examples: int | None
) -> tuple[list[float], float]:
    """Held-out loss on every stage and on the retention probe (the first `max_examples` of each)."""

    def loss(examples: list[list[int]], labels: list[list[int]] | None = None) -> float:
        return heldout_loss(
            model,
            examples[:max_examples],
            labels[:max_examples] if labels is not None else None,
            pad_id=pad_id,
            batch_size=config.eval.batch_size,
            device=device,
            autocast=autocast_for(device),
        )

    return [loss(stage.heldout, stage.heldout_labels) for stage in stream.stages], loss(stream.retention)


def step_loss(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrialConfig,
    frozen_base: nn.Module | None,
    ewc: EWC | None,
) -> torch.Tensor:
    """One forward over new and replay rows: next-token loss on both, or on the new rows with KL to
    the base on the replay rows; plus the EWC penalty."""
    new, new_labels, old, old_labels = batch
    logits = model(input_ids=torch.cat([new, old])).logits
    if config.replay.loss == "kl" and len(old):
        with torch.no_grad():
            base_logits = frozen_base(input_ids=old).logits
        kl = kl_to_base(logits[len(new) :], base_logits, old_labels)
        loss = next_token_loss(logits[: len(new)], new_labels) + config.replay.kl_weight * kl
    else:
        loss = next_token_loss(logits, torch.cat([new_labels, old_labels]))
    if ewc is not None:
        loss = loss + config.ewc.weight * ewc.penalty()
    return loss


def mean_over_ranks(loss: torch.Tensor, world_size: int) -> float:
    """The step's loss averaged over ranks, so that every rank takes the same decision to stop."""
    value = loss.detach().float().clone()
    if world_size > 1:
        dist.all_reduce(value)
        value /= world_size
    return value.item()


def has_diverged(loss: float, first_loss: float, factor: float) -> bool:
    """A NaN or infinite loss, or one above `factor` times the trial's first step's loss.

    A healthy continual stream starts each new stage above the previous one's final loss, but far
    below several times the untrained model's first loss; a blow-up passes that within a few steps.
    """
    return not math.isfinite(loss) or loss > factor * first_loss


def stop_if_diverged(progress: TrialProgress, loss: float, stage_index: int, config: TrialConfig, out_dir: Path | None) -> None:
    """Raise `TrialDiverged` if this step's `loss` diverged, after writing its `Divergence` to
    `out_dir/result.json` (rank 0 passes `out_dir`); the trial's first loss is kept in `progress`."""
    if progress.first_loss is None:
        progress.first_loss = loss
    if not has_diverged(loss, progress.first_loss, config.train.divergence_factor):
        return
    divergence = Divergence(
        step=progress.step + 1,
        stage=stage_index + 1,
        loss=finite_or_none(loss),
        first_loss=finite_or_none(progress.first_loss),
        bound=finite_or_none(config.train.divergence_factor * progress.first_loss),
        config=config.model_dump(mode="json"),
    )
    if out_dir is not None:
        write_json(out_dir / "result.json", divergence.model_dump())
    raise TrialDiverged(divergence)


def eval_metrics(progress: TrialProgress, full: bool) -> dict[str, float]:
    """What an evaluation reports: losses, and at stage ends learning, forgetting and benchmark scores."""
    if full:
        row, retention = progress.stage_matrix[-1], progress.retention_losses[-1]
    else:
        row, retention = progress.curves[-1]["stage_losses"], progress.curves[-1]["base_loss"]
    values = {
        "stage": float(progress.stages_done),
        "step": float(progress.step),
        "new_loss": metrics.mean_new_loss(row),
        "base_loss": retention,
        "full_eval": float(full),
    }
    if full:
        values["learning"] = metrics.learning(metrics.mean_new_loss(progress.stage_matrix[0]), values["new_loss"])
        values["forgetting"] = metrics.forgetting(progress.retention_losses[0], retention)
        values |= {f"{BENCHMARK_PREFIX}{task}": score for task, score in progress.benchmarks[-1].items() if "/" not in task}
    return values


def run_trial(config: TrialConfig, out_dir: Path, report: Report | None = None) -> dict[str, Any]:
    """Run (or resume) the trial `config` in `out_dir`; return its result, also written to `result.json`.

    Raises `TrialDiverged` when a step's loss diverges (`has_diverged`): training stops there, and
    result.json holds the `Divergence` instead of a result. With `train.lr_at_loss_drop`, the trial trains
    at the LR its range test found (`raycl.training.lr_range`), and raises `LossDropUnreachable`, before
    training, where the test never held that drop.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config, lr_range = resolve_lr(config)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)
    torch.set_num_threads(config.train.cpu_threads)

    # The base model, its stream, and what replay and EWC keep of it.
    world = load_world(config.world)
    base_model, tokenizer = load_base_model(config.model, world)
    stream = load_stream(config, world, tokenizer)
    initial_weights = {name: t.detach().clone() for name, t in base_model.state_dict().items() if t.ndim == 2}
    base_model.to(device)
    frozen_base = copy.deepcopy(base_model).eval().requires_grad_(False) if needs_frozen_base(config.replay) else None
    replay_rows = config.replay_rows
    replay = Replay(config.replay, stream.replay_pool, frozen_base, tokenizer, config.train.seed) if replay_rows else None
    # Counted before LoRA injects its adapters into the base model in place.
    counts = parameter_counts(base_model)
    prepared = prepare_method(base_model, config.method, config.train)
    model, optimizer = prepared.model, prepared.optimizer
    # The Fisher is measured at the base weights, before any checkpoint is restored over them.
    ewc = EWC(model, stream.replay_pool, config.ewc.fisher_batches, config.train.seed) if config.ewc.weight else None
    train_model = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    model.train()

    # lm-eval scores on rank 0 (the model is the same on every rank).
    bench = config.eval.benchmarks
    task_dir = shared_task_dir(world, bench, tokenizer) if bench.tasks and rank == 0 else None
    if task_dir:
        load_harness(task_dir, bench)

    def benchmarks(limit: int | None) -> dict[str, float]:
        return run_benchmarks(model, tokenizer, bench, task_dir, limit) if task_dir else {}

    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None:
        progress = TrialProgress(**load_checkpoint(checkpoint, model, optimizer))
        # The clocks go on from where the checkpoint left them.
        started -= progress.elapsed_s
        if replay is not None:
            replay.generation_time_s = progress.replay_generation_s
        # Said again: a driver that died after the checkpoint but before recording its evaluation
        # learns it now (its tracker skips an evaluation it already has).
        if report is not None and progress.stages_done:
            report(eval_metrics(progress, full=True), None)
    else:
        progress = TrialProgress(config=config.model_dump(mode="json"))
        eval_started = time.perf_counter()
        row, retention = evaluate(model, stream, config, tokenizer.pad_token_id, device, config.eval.max_examples)
        progress.stage_matrix.append(row)
        progress.retention_losses.append(retention)
        progress.benchmarks.append(benchmarks(bench.limit))
        progress.eval_time_s += time.perf_counter() - eval_started
        stop_reason(config.train.stop_when, eval_metrics(progress, full=True), 0, len(stream.stages))
    resumed_after_stage = progress.stages_done

    new_rows, single_pass = config.train.batch_size - replay_rows, config.train.single_pass
    steps_of_stage = [stage_steps(config, stage) for stage in stream.stages]
    total_steps = sum(steps_of_stage)
    # Online quick evaluations read the same held-out examples as stage ends, so that one curve runs through both.
    quick_examples = config.eval.max_examples if config.train.online else config.eval.quick_max_examples
    last_stage = progress.stages_done if progress.stopped else len(stream.stages)
    with ProgressBar(transient=True, disable=rank != 0) as bar:
        task = bar.add_task("training", total=total_steps, completed=sum(steps_of_stage[: progress.stages_done]))
        for stage_index in range(progress.stages_done, last_stage):
            stage, stage_seed, steps = stream.stages[stage_index], config.train.seed + stage_index, steps_of_stage[stage_index]
            blocks, labels = training_blocks(config, stage)
            stage_started = time.perf_counter()
            for local_step in range(steps):
                # One step (the second, once optimizer state exists) is measured and left out of the timing.
                measuring = not progress.train_memory and progress.step >= min(1, total_steps - 1)
                with StepMemory(model, optimizer) if measuring else contextlib.nullcontext() as memory:
                    step_started = time.perf_counter()
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(config, progress.step) * group.get("lr_scale", 1.0)
                    # Each rank takes its slice of the batch; batches are pure functions of the step.
                    new = new_rows_at(blocks, new_rows, local_step, stage_seed, single_pass)[rank::world_size]
                    new_labels = new_rows_at(labels, new_rows, local_step, stage_seed, single_pass)[rank::world_size]
                    old, old_labels = new[:0], new_labels[:0]
                    if replay is not None:
                        old, old_labels = (t[rank::world_size] for t in replay.batch(progress.step, replay_rows, config.train.seq_len))
                    with autocast_for(device):
                        batch = tuple(t.to(device) for t in (new, new_labels, old, old_labels))
                        loss = step_loss(train_model, batch, config, frozen_base, ewc)
                    loss_value = mean_over_ranks(loss, world_size)
                    stop_if_diverged(progress, loss_value, stage_index, config, out_dir if rank == 0 else None)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

                progress.step += 1
                progress.train_tokens += (new.numel() + old.numel()) * world_size
                progress.new_tokens += new.numel() * world_size
                if memory is not None:
                    progress.train_memory = memory.parts
                if memory is None or total_steps == 1:  # a one-step trial has no other step to time
                    progress.train_time_s += time.perf_counter() - step_started
                else:
                    progress.untimed_tokens += (new.numel() + old.numel()) * world_size
                if replay is not None:
                    progress.replay_generation_s = replay.generation_time_s
                bar.update(task, advance=1, description=f"stage {stage_index + 1}/{len(stream.stages)} {stage.name} loss {loss_value:.3f}")

                every = config.eval.every_steps
                if every and progress.step % every == 0 and local_step + 1 < steps:
                    eval_started = time.perf_counter()
                    row, retention = evaluate(model, stream, config, tokenizer.pad_token_id, device, quick_examples)
                    scores = benchmarks(bench.quick_limit) if bench.quick_limit else {}
                    progress.eval_time_s += time.perf_counter() - eval_started
                    progress.curves.append({
                        "step": progress.step, "stage_index": stage_index, "stage_step": local_step + 1,
                        "stage_losses": row, "base_loss": retention, "benchmarks": scores,
                    })
                    if report is not None:
                        report(eval_metrics(progress, full=False), None)

            eval_started = time.perf_counter()
            row, retention = evaluate(model, stream, config, tokenizer.pad_token_id, device, config.eval.max_examples)
            progress.benchmarks.append(benchmarks(bench.limit))
            progress.eval_time_s += time.perf_counter() - eval_started
            progress.stage_matrix.append(row)
            progress.retention_losses.append(retention)
            progress.stages_done = stage_index + 1
            progress.stage_time_s.append(time.perf_counter() - stage_started)
            progress.elapsed_s = time.perf_counter() - started
            progress.stopped = stop_reason(config.train.stop_when, eval_metrics(progress, full=True), progress.stages_done, len(stream.stages))
            checkpoint_dir = None
            if rank == 0:
                checkpoint_dir = save_checkpoint(stage_checkpoint_dir(out_dir, stage_index), model, optimizer, asdict(progress))
            if report is not None:
                report(eval_metrics(progress, full=True), checkpoint_dir)
            if progress.stopped:
                break

    progress.elapsed_s = time.perf_counter() - started
    drift = metrics.weight_drift(initial_weights, effective_weights(model))
    result = summarize(progress, config, stream, metrics.untrained_loss(base_model.config.vocab_size)) | {
        "drift": drift,
        "drift_spread": metrics.drift_spread(drift),
        "peak_memory_bytes": peak_memory_bytes(device),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "train_peak_bytes": sum(progress.train_memory.values()),
        "train_memory": progress.train_memory,
        "num_params": counts["total_params"],
        "num_params_non_embedding": counts["non_embedding_params"],
        **pretraining_facts(config.model, world),
        "method_info": prepared.info,
        "resumed_after_stage": resumed_after_stage,
        "lr_range": lr_range,
    }
    result = TrialResult.model_validate(result).model_dump()
    if rank == 0:
        write_json(out_dir / "result.json", result)
    return result


def summarize(progress: TrialProgress, config: TrialConfig, stream: Stream, base_loss_init: float) -> dict[str, Any]:
    """The trial's metrics from its progress record (pure: no model needed); `base_loss_init` is the
    untrained model's loss on the original distribution. A stream stopped early is measured on the stages it trained."""
    trained, retention = progress.stages_done, progress.retention_losses
    matrix = [row[:trained] for row in progress.stage_matrix]
    new_before, new_after = metrics.mean_new_loss(matrix[0]), metrics.mean_new_loss(matrix[-1])
    adaptation = online_adaptation(progress, config, stream) if config.train.online else None
    return {
        "learning": metrics.learning(new_before, new_after),
        "learning_nats": metrics.learning_nats(new_before, new_after),
        "forgetting": metrics.forgetting(retention[0], retention[-1]),
        "base_loss_before": retention[0],
        "base_loss_after": retention[-1],
        "forgetting_fraction": metrics.forgetting_fraction(base_loss_init, retention[0], retention[-1]),
        "stage_matrix": matrix,
        "stage_names": [stage.name for stage in stream.stages[:trained]],
        "retention_losses": retention,
        "bwt": metrics.backward_transfer(matrix),
        "fwt": metrics.forward_transfer(matrix),
        "stage_forgetting": metrics.stage_forgetting(matrix),
        "average_final_loss": metrics.average_final_loss(matrix),
        "tokens_per_s": (progress.train_tokens - progress.untimed_tokens) / progress.train_time_s,
        "train_tokens": progress.train_tokens,
        "new_tokens": progress.new_tokens,
        "train_time_s": progress.train_time_s,
        "eval_time_s": progress.eval_time_s,
        "eval_time_fraction": progress.eval_time_s / progress.elapsed_s,
        "replay_generation_fraction": progress.replay_generation_s / progress.elapsed_s,
        "wall_time_s": progress.elapsed_s,
        "stage_time_s": progress.stage_time_s,
        "benchmarks": progress.benchmarks,
        **benchmark_deltas(progress.benchmarks[0], progress.benchmarks[-1]),
        "curves": progress.curves,
        "data_summary": stream.summary.describe() if stream.summary else None,
        "config": config.model_dump(mode="json"),
        "lr": config.train.lr,
        "stopped": progress.stopped,
        "adaptation_steps": adaptation,
        "adaptation_steps_mean": sum(adaptation) / len(adaptation) if adaptation and None not in adaptation else None,
    }


def online_adaptation(progress: TrialProgress, config: TrialConfig, stream: Stream) -> list[int | None]:
    """Per trained stage, the steps its held-out loss took to fall by `train.adaptation_share` of the
    stage's whole drop, read from the stage's start (row j of the matrix), its quick evaluations and its end."""
    matrix = progress.stage_matrix
    return [
        adaptation_steps(
            matrix[j][j],
            [(point["stage_step"], point["stage_losses"][j]) for point in progress.curves if point["stage_index"] == j],
            (stage_steps(config, stream.stages[j]), matrix[j + 1][j]),
            config.train.adaptation_share,
        )
        for j in range(progress.stages_done)
    ]
