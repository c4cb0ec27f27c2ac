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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from rich.progress import Progress as ProgressBar
from torch import nn

from raycl.config import ReplayConfig, TrialConfig
from raycl.config.result import BENCHMARK_PREFIX, Divergence, EvalRecord, TrialDiverged, TrialResult
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
from raycl.models.optimizer_step import optimizer_step
from raycl.training.checkpoint import (
    check_out_dir,
    claim_out_dir,
    config_hash,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    stage_checkpoint_dir,
)
from raycl.training.lr_range import resolve_lr
from raycl.training.memory import StepMemory
from raycl.training.methods import Optimizer, optimizer_state_bytes, prepare_method
from raycl.training.parts import (
    autocast_for,
    cores_given,
    finite_or_none,
    load_stream,
    next_token_loss,
    resolve_device,
    resolve_dtype,
    resolve_threads,
    write_json,
)
from raycl.world.offline import World, load_world

# A step's new rows, their labels, its replay rows and theirs.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# Called with an evaluation's record, and the stage checkpoint written with it (full evaluations).
Report = Callable[[EvalRecord, Path | None], None]


@dataclass
class TrialProgress:
    """Where a trial stands. Saved as progress.json in every stage checkpoint; a resumed trial goes on from it."""

    config: dict[str, Any]
    config_hash: str | None = None  # of the config as given (`raycl.training.checkpoint.config_hash`)
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
    below_uniform_in_stage: int | None = None  # the stage in which the loss was last below ln(vocab)
    steps_above_uniform: int = 0  # steps in a row above it since, in that stage
    train_memory: dict[str, int] = field(default_factory=dict)  # peak of one step by part, once measured
    untimed_tokens: int = 0  # tokens of that step, whose time (slowed by the tracker) is not counted
    stopped: str | None = None  # why train.stop_when ended the stream early

    def count_step(
        self, tokens: int, new_tokens: int, seconds: float, memory: dict[str, int] | None, timed: bool
    ) -> None:
        """A finished step: its tokens (replay rows included) and new tokens, the memory it measured, if any, and
        its time; or, untimed (slowed by the memory tracker), its tokens as untimed ones."""
        self.step += 1
        self.train_tokens += tokens
        self.new_tokens += new_tokens
        if memory is not None:
            self.train_memory = memory
        if timed:
            self.train_time_s += seconds
        else:
            self.untimed_tokens += tokens


def duration(seconds: float) -> str:
    """`1h02m`, `4m05s` or `12s`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class ProgressLines:
    """Off a terminal (a log file, CI), one line per evaluation and per stage end: step, losses, tokens/s and an
    ETA from this run's pace so far. On a terminal the transient progress bar shows the same, and this is silent."""

    total_steps: int
    first_step: int  # the step this run (or resumed run) started from
    enabled: bool = field(default_factory=lambda: not sys.stdout.isatty())
    started: float = field(default_factory=time.perf_counter)

    def line(self, record: EvalRecord, progress: TrialProgress, what: str, train_loss: float | None) -> str:
        """The line of the evaluation `record` (labelled `what`) just taken."""
        elapsed = time.perf_counter() - self.started
        done = progress.step - self.first_step
        parts = [f"step {progress.step}/{self.total_steps} {what}"]
        if train_loss is not None:
            parts.append(f"train loss {train_loss:.3f}")
        parts.append(f"new loss {record.new_loss:.3f}, base loss {record.base_loss:.3f}")
        if record.forgetting is not None and progress.step:
            parts.append(f"learning {record.learning:.3f}, forgetting {record.forgetting:+.3f}")
        timed = progress.train_tokens - progress.untimed_tokens
        if progress.train_time_s > 0:
            parts.append(f"{timed / progress.train_time_s:.0f} tokens/s")
        if done > 0:
            left = elapsed / done * (self.total_steps - progress.step)
            parts.append(f"elapsed {duration(elapsed)}, ETA {duration(left)}")
        return ", ".join(parts)

    def say(self, record: EvalRecord, progress: TrialProgress, what: str, train_loss: float | None = None) -> None:
        if self.enabled:
            print(self.line(record, progress, what, train_loss), flush=True)


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
            f"train.examples_per_stage: {count}, but stage {stage.name} has {len(stage.train_blocks)} training blocks "
            f"of {config.train.seq_len} tokens"
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


def adaptation_steps(
    start_loss: float, curve: list[tuple[int, float]], end: tuple[int, float], share: float
) -> int | None:
    """Steps into a stage until its held-out loss first fell by `share` of the stage's whole drop.

    `curve` holds the stage's evaluations as (steps into the stage, loss), `end` its last step and final loss;
    None when the loss did not fall over the stage.
    """
    drop = start_loss - end[1]
    if not drop > 0:
        return None
    target = start_loss - share * drop
    return next(step for step, loss in [*curve, end] if loss <= target)


def stop_reason(rule: StopRule | None, stage_end: EvalRecord, stages: int) -> str | None:
    """Why `train.stop_when` ends the stream at the stage end `stage_end`, or None to go on (never before the
    first stage or after the last); a metric the trial does not measure is an error, also at step 0."""
    if rule is None:
        return None
    measured = stage_end.metrics()
    if rule.metric not in measured:
        names = ", ".join(measured)
        raise ValueError(f"train.stop_when.metric: {rule.metric} is not measured by this trial (measured: {names})")
    done, value = stage_end.stage, measured[rule.metric]
    if 0 < done < stages and value >= rule.at_least:
        return f"train.stop_when: {rule.metric} = {value:.4g} >= {rule.at_least:g} after stage {done} of {stages}"
    return None


def needs_frozen_base(replay: ReplayConfig) -> bool:
    """Whether replay reads the frozen base model: KL targets, samples of it, or its loss to rank blocks."""
    return replay.loss == "kl" or replay.source == "self_generated" or replay.selection in ("hardest", "easiest")


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a plain model would have them (LoRA adapters merged into a copy)."""
    if hasattr(model, "merge_and_unload"):
        model = cast(Any, copy.deepcopy(model)).merge_and_unload()
    return model.state_dict()


def evaluate(
    model: nn.Module,
    stream: Stream,
    config: TrialConfig,
    pad_id: int,
    device: torch.device,
    max_examples: int | None,
    dtype: torch.dtype = torch.float32,
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
            autocast=autocast_for(device, dtype),
        )

    return [loss(stage.heldout, stage.heldout_labels) for stage in stream.stages], loss(stream.retention)


def step_loss(
    model: nn.Module,
    batch: Batch,
    config: TrialConfig,
    frozen_base: nn.Module | None,
    ewc: EWC | None,
) -> torch.Tensor:
    """One forward over new and replay rows: next-token loss on both, or on the new rows with KL to
    the base on the replay rows; plus the EWC penalty."""
    new, new_labels, old, old_labels = batch
    logits = model(input_ids=torch.cat([new, old])).logits
    if frozen_base is not None and config.replay.loss == "kl" and len(old):
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


def stayed_above_uniform(progress: TrialProgress, loss: float, uniform_loss: float, steps: int, stage: int) -> bool:
    """Whether the loss has now been above `uniform_loss` (ln vocab) for `steps` steps in a row after it was below
    in this `stage`.

    A model whose training loss is worse than a uniform guess on the very data it trains on has lost what it
    knew; that bound is right at every scale (6.24 nats for the ladder's 512 tokens, 10.8 for a 49152-token
    model starting near 2.7), where a multiple of the first loss is not. Only a rise within a stage counts: a
    new stage's data may start above it and a slow learner stay there (lr 1e-6 on the offline world's second
    stage: 6.7 nats throughout, measured). Counted in `progress`, so it resumes.
    """
    if loss <= uniform_loss:
        progress.below_uniform_in_stage, progress.steps_above_uniform = stage, 0
        return False
    if progress.below_uniform_in_stage != stage:
        return False
    progress.steps_above_uniform += 1
    return progress.steps_above_uniform >= steps


def stop_if_diverged(
    progress: TrialProgress,
    loss: float,
    stage_index: int,
    config: TrialConfig,
    out_dir: Path | None,
    uniform_loss: float,
) -> None:
    """Raise `TrialDiverged` if this step's `loss` diverged (`has_diverged`, or `stayed_above_uniform`), after writing
    its `Divergence` to `out_dir/result.json` (rank 0 passes `out_dir`); the trial's first loss is kept in
    `progress`."""
    if progress.first_loss is None:
        progress.first_loss = loss
    blown_up = has_diverged(loss, progress.first_loss, config.train.divergence_factor)
    patience = config.train.divergence_above_uniform_steps
    above = math.isfinite(loss) and stayed_above_uniform(progress, loss, uniform_loss, patience, stage_index)
    if not blown_up and not above:
        return
    divergence = Divergence(
        step=progress.step + 1,
        stage=stage_index + 1,
        loss=finite_or_none(loss),
        first_loss=finite_or_none(progress.first_loss),
        bound=finite_or_none(config.train.divergence_factor * progress.first_loss),
        uniform_loss=None if blown_up else uniform_loss,
        config=config.model_dump(mode="json"),
    )
    if out_dir is not None:
        write_json(out_dir / "result.json", divergence.model_dump())
    raise TrialDiverged(divergence)


def eval_record(progress: TrialProgress, full: bool) -> EvalRecord:
    """The record of the evaluation last appended to `progress`: losses, and at stage ends (and step 0) learning,
    forgetting and benchmark scores."""
    if full:
        row, retention = progress.stage_matrix[-1], progress.retention_losses[-1]
    else:
        row, retention = progress.curves[-1]["stage_losses"], progress.curves[-1]["base_loss"]
    new_loss = metrics.mean_new_loss(row)
    if not full:
        return EvalRecord(
            stage=progress.stages_done, step=progress.step, new_loss=new_loss, base_loss=retention, full_eval=False
        )
    scores = {f"{BENCHMARK_PREFIX}{task}": score for task, score in progress.benchmarks[-1].items() if "/" not in task}
    return EvalRecord(
        stage=progress.stages_done,
        step=progress.step,
        new_loss=new_loss,
        base_loss=retention,
        full_eval=True,
        learning=metrics.learning(metrics.mean_new_loss(progress.stage_matrix[0]), new_loss),
        forgetting=metrics.forgetting(progress.retention_losses[0], retention),
        **scores,
    )


@dataclass
class TrialRun:
    """What a trial's loop works on, built once: the model and its optimizer, the stream, replay and EWC, the
    lm-eval tasks, and the base model's facts its result reports."""

    config: TrialConfig
    device: torch.device
    rank: int
    world_size: int
    world: World
    tokenizer: Any
    stream: Stream
    steps_of_stage: list[int]
    model: nn.Module
    train_model: nn.Module  # the model, wrapped in DDP across ranks
    optimizer: Optimizer
    method_info: dict[str, Any]
    frozen_base: nn.Module | None
    replay: Replay | None
    ewc: EWC | None
    task_dir: Path | None  # lm-eval's tasks, on rank 0 only
    initial_weights: dict[str, torch.Tensor]  # the base model's 2-D weights, from which drift is measured
    counts: dict[str, int]  # the base model's parameters, before any adapter
    vocab_size: int
    dtype: torch.dtype  # of autocast (bf16), or fp32
    cpu_threads: int

    @classmethod
    def build(cls, config: TrialConfig) -> TrialRun:
        """Load the base model, its stream and what replay and EWC keep of it; wrap the model for the method."""
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        device = resolve_device(config.train.device)
        torch.manual_seed(config.train.seed)
        cores = cores_given()  # before loading the model adds to the load average

        world = load_world(config.world)
        base_model, tokenizer = load_base_model(config.model, world)
        num_params = base_model.num_parameters()
        cpu_threads = resolve_threads(config.train.cpu_threads, num_params, cores)
        torch.set_num_threads(cpu_threads)
        stream = load_stream(config, world, tokenizer)
        initial_weights = {name: t.detach().clone() for name, t in base_model.state_dict().items() if t.ndim == 2}
        # transformers wraps `to` with `functools.wraps(Module.to)`, which hides the bound `self` from pyright.
        base_model.to(device)  # pyright: ignore[reportArgumentType]
        frozen_base = None
        if needs_frozen_base(config.replay):
            frozen_base = copy.deepcopy(base_model).eval().requires_grad_(False)
        replay = None
        if config.replay_rows:
            replay = Replay(config.replay, stream.replay_pool, frozen_base, tokenizer, config.train.seed)
        # Counted before LoRA injects its adapters into the base model in place.
        counts = parameter_counts(base_model)
        prepared = prepare_method(base_model, config.method, config.train)
        model = prepared.model
        # The Fisher is measured at the base weights, before any checkpoint is restored over them.
        ewc = None
        if config.ewc.weight:
            ewc = EWC(model, stream.replay_pool, config.ewc.fisher_batches, config.train.seed)
        train_model = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
        model.train()

        # lm-eval scores on rank 0 (the model is the same on every rank).
        bench = config.eval.benchmarks
        task_dir = shared_task_dir(world, bench, tokenizer) if bench.tasks and rank == 0 else None
        if task_dir:
            load_harness(task_dir, bench)
        return cls(
            config=config, device=device, rank=rank, world_size=world_size, world=world, tokenizer=tokenizer,
            stream=stream, steps_of_stage=[stage_steps(config, stage) for stage in stream.stages], model=model,
            train_model=train_model, optimizer=prepared.optimizer, method_info=prepared.info, frozen_base=frozen_base,
            replay=replay, ewc=ewc, task_dir=task_dir, initial_weights=initial_weights, counts=counts,
            vocab_size=base_model.config.vocab_size, dtype=resolve_dtype(config.train.dtype, device, num_params),
            cpu_threads=cpu_threads,
        )  # fmt: skip

    def benchmarks(self, limit: int | None) -> dict[str, float]:
        if self.task_dir is None:
            return {}
        bf16 = self.dtype == torch.bfloat16
        return run_benchmarks(self.model, self.tokenizer, self.config.eval.benchmarks, self.task_dir, limit, bf16)

    def evaluate_and_record(self, progress: TrialProgress, at: tuple[int, int] | None = None) -> EvalRecord:
        """Evaluate, append the outcome to `progress` and return its record: a full evaluation (stage end, step 0)
        to the stage matrix, or with `at` (stage index, steps into it) a quick one to the curves. Its time counts
        as evaluation time."""
        config, bench, full = self.config, self.config.eval.benchmarks, at is None
        started = time.perf_counter()
        # Online quick evaluations read the same held-out examples as stage ends, so that one curve runs through both.
        examples = config.eval.max_examples if full or config.train.online else config.eval.quick_max_examples
        pad_id = self.tokenizer.pad_token_id
        row, retention = evaluate(self.model, self.stream, config, pad_id, self.device, examples, self.dtype)
        if full:
            scores = self.benchmarks(bench.limit)
        else:
            scores = self.benchmarks(bench.quick_limit) if bench.quick_limit else {}
        progress.eval_time_s += time.perf_counter() - started
        if at is None:
            progress.stage_matrix.append(row)
            progress.retention_losses.append(retention)
            progress.benchmarks.append(scores)
        else:
            stage_index, stage_step = at
            progress.curves.append({
                "step": progress.step, "stage_index": stage_index, "stage_step": stage_step,
                "stage_losses": row, "base_loss": retention, "benchmarks": scores,
            })  # fmt: skip
        return eval_record(progress, full)

    def batch(self, step: int, stage_index: int, local_step: int) -> Batch:
        """This rank's slice of a step's new rows, their labels, its replay rows and theirs, on the device. Batches
        are pure functions of the step, so that the ranks and a resumed trial draw the same ones."""
        config = self.config
        blocks, labels = training_blocks(config, self.stream.stages[stage_index])
        rows, seed = config.train.batch_size - config.replay_rows, config.train.seed + stage_index
        single_pass = config.train.single_pass
        mine = slice(self.rank, None, self.world_size)
        new = new_rows_at(blocks, rows, local_step, seed, single_pass)[mine]
        new_labels = new_rows_at(labels, rows, local_step, seed, single_pass)[mine]
        if self.replay is None:
            old, old_labels = new[:0], new_labels[:0]
        else:
            old, old_labels = (rows[mine] for rows in self.replay.batch(step, config.replay_rows, config.train.seq_len))
        return new.to(self.device), new_labels.to(self.device), old.to(self.device), old_labels.to(self.device)

    def train_step(self, progress: TrialProgress, stage_index: int, local_step: int, out_dir: Path) -> float:
        """One optimizer step, counted in `progress`; returns its loss averaged over ranks.

        Raises `TrialDiverged` where the loss diverged (rank 0 records it in `out_dir`). One step (the second,
        once optimizer state exists) is measured for memory, and left out of the timing.
        """
        config = self.config
        total_steps = sum(self.steps_of_stage)
        measuring = not progress.train_memory and progress.step >= min(1, total_steps - 1)
        with StepMemory(self.model, self.optimizer) if measuring else contextlib.nullcontext() as memory:
            started = time.perf_counter()
            batch = self.batch(progress.step, stage_index, local_step)
            with autocast_for(self.device, self.dtype):
                loss = step_loss(self.train_model, batch, config, self.frozen_base, self.ewc)
            loss_value = mean_over_ranks(loss, self.world_size)
            uniform_loss = metrics.untrained_loss(self.vocab_size)
            rank_out = out_dir if self.rank == 0 else None
            stop_if_diverged(progress, loss_value, stage_index, config, rank_out, uniform_loss)
            lr = learning_rate(config, progress.step)
            optimizer_step(loss, self.model, self.optimizer, lr, config.train.grad_clip)
        seconds = time.perf_counter() - started
        new, old = batch[0].numel() * self.world_size, batch[2].numel() * self.world_size
        # A one-step trial has no other step to time.
        timed = memory is None or total_steps == 1
        progress.count_step(new + old, new, seconds, memory.parts if memory else None, timed)
        if self.replay is not None:
            progress.replay_generation_s = self.replay.generation_time_s
        return loss_value

    def result(self, progress: TrialProgress, resumed_after_stage: int, lr_range: dict[str, Any] | None) -> TrialResult:
        """The finished trial's result: its progress summarized, and the model's drift, memory and facts."""
        drift = metrics.weight_drift(self.initial_weights, effective_weights(self.model))
        result = summarize(progress, self.config, self.stream, metrics.untrained_loss(self.vocab_size)) | {
            "drift": drift,
            "drift_spread": metrics.drift_spread(drift),
            "peak_memory_bytes": peak_memory_bytes(self.device),
            "optimizer_state_bytes": optimizer_state_bytes(self.optimizer),
            "train_peak_bytes": sum(progress.train_memory.values()),
            "train_memory": progress.train_memory,
            "num_params": self.counts["total_params"],
            "num_params_non_embedding": self.counts["non_embedding_params"],
            **pretraining_facts(self.config.model, self.world),
            "method_info": self.method_info,
            "dtype": "bf16" if self.dtype == torch.bfloat16 else "fp32",
            "device": str(self.device),
            "cpu_threads": self.cpu_threads,
            "resumed_after_stage": resumed_after_stage,
            "lr_range": lr_range,
        }
        return TrialResult.model_validate(result)


def run_trial(config: TrialConfig, out_dir: Path, report: Report | None = None) -> TrialResult:
    """Run (or resume) the trial `config` in `out_dir`; return its result, also written to `result.json`.

    Raises `TrialDiverged` when a step's loss diverges (`has_diverged`): training stops there, and
    result.json holds the `Divergence` instead of a result. With `train.lr_at_loss_drop`, the trial trains
    at the LR its range test found (`raycl.training.lr_range`), and raises `LossDropUnreachable`, before
    training, where the test never held that drop. Raises `ForeignOutDir`, before anything else, when `out_dir`
    holds a trial of another config.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_out_dir(out_dir, config)
    given = config  # the config as asked, which the out folder belongs to
    config, lr_range = resolve_lr(config)
    run = TrialRun.build(config)
    stages = run.stream.stages

    lines = ProgressLines(sum(run.steps_of_stage), first_step=0)
    lines.enabled &= run.rank == 0
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None:
        progress = TrialProgress(**load_checkpoint(checkpoint, run.model, run.optimizer))
        lines.first_step = progress.step
        # The clocks go on from where the checkpoint left them.
        started -= progress.elapsed_s
        if run.replay is not None:
            run.replay.generation_time_s = progress.replay_generation_s
        # Said again: a driver that died after the checkpoint but before recording its evaluation
        # learns it now (its tracker skips an evaluation it already has).
        if report is not None and progress.stages_done:
            report(eval_record(progress, full=True), None)
    else:
        if run.rank == 0:
            claim_out_dir(out_dir, given)
        progress = TrialProgress(config=config.model_dump(mode="json"), config_hash=config_hash(given))
        # Step 0; a stop_when metric the trial does not measure fails here, before any training.
        base = run.evaluate_and_record(progress)
        lines.say(base, progress, f"base model evaluated in {duration(progress.eval_time_s)}")
        stop_reason(config.train.stop_when, base, len(stages))
    resumed_after_stage = progress.stages_done

    last_stage = progress.stages_done if progress.stopped else len(stages)
    with ProgressBar(transient=True, disable=run.rank != 0 or lines.enabled) as bar:
        done = sum(run.steps_of_stage[: progress.stages_done])
        task = bar.add_task("training", total=sum(run.steps_of_stage), completed=done)
        for stage_index in range(progress.stages_done, last_stage):
            stage_started = time.perf_counter()
            steps = run.steps_of_stage[stage_index]
            where = f"stage {stage_index + 1}/{len(stages)} {stages[stage_index].name}"
            loss = None
            for local_step in range(steps):
                loss = run.train_step(progress, stage_index, local_step, out_dir)
                bar.update(task, advance=1, description=f"{where} loss {loss:.3f}")
                every = config.eval.every_steps
                if every and progress.step % every == 0 and local_step + 1 < steps:
                    quick = run.evaluate_and_record(progress, at=(stage_index, local_step + 1))
                    lines.say(quick, progress, where, loss)
                    if report is not None:
                        report(quick, None)

            progress.stages_done = stage_index + 1
            stage_end = run.evaluate_and_record(progress)
            progress.stage_time_s.append(time.perf_counter() - stage_started)
            progress.elapsed_s = time.perf_counter() - started
            lines.say(stage_end, progress, f"{where} done", loss)
            progress.stopped = stop_reason(config.train.stop_when, stage_end, len(stages))
            checkpoint_dir = None
            if run.rank == 0:
                directory = stage_checkpoint_dir(out_dir, stage_index)
                checkpoint_dir = save_checkpoint(directory, run.model, run.optimizer, asdict(progress))
            if report is not None:
                report(stage_end, checkpoint_dir)
            if progress.stopped:
                break

    progress.elapsed_s = time.perf_counter() - started
    result = run.result(progress, resumed_after_stage, lr_range)
    if run.rank == 0:
        write_json(out_dir / "result.json", result.model_dump())
    return result


def summarize(progress: TrialProgress, config: TrialConfig, stream: Stream, base_loss_init: float) -> dict[str, Any]:
    """The trial's metrics from its progress record (pure: no model needed); `base_loss_init` is the
    untrained model's loss on the original distribution. A stream stopped early is measured on the stages it trained."""
    trained, retention = progress.stages_done, progress.retention_losses
    matrix = [row[:trained] for row in progress.stage_matrix]
    new_before, new_after = metrics.mean_new_loss(matrix[0]), metrics.mean_new_loss(matrix[-1])
    adaptation = online_adaptation(progress, config, stream) if config.train.online else None
    known = [steps for steps in adaptation or [] if steps is not None]
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
        "adaptation_steps_mean": sum(known) / len(known) if adaptation and len(known) == len(adaptation) else None,
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
