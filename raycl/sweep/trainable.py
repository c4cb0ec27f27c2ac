"""One sweep trial: a Tune function that runs the engine's continual trial with the plan's executor.

`tune`: the engine runs in the Tune trial's own actor, as Ray's Train-with-Tune guide recommends for
single-process trials; a reused actor imports torch and the engine once, and no worker group starts
(11-15 s measured here per trial, which dwarfs a tiny CPU trial).
`train`: Ray Train V2's pattern for Train inside Tune (a `TorchTrainer` handed to a `Tuner` is gone):
the Tune trial builds a `TorchTrainer` and calls `.fit()`; a `TuneReportCallback` forwards rank 0's
`ray.train.report` to Tune, and the result comes back as the train function's return value.
Either way the result is reported to Tune once more as a `FinalReport`, marked with `FINAL_KEY`. Under
`budget.seeds: k` a trial runs the engine k times in turn (train.seed, train.seed + 1, ...), each run in
its own folder and with its own checkpoints, and reports the mean.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray.train
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from raycl.config.records import NODE_KEY, EngineRun, FinalReport, GpuSlot, TrialAssignment
from raycl.config.result import Divergence, EvalRecord, TrialDiverged, TrialResult
from raycl.sweep.plan import ResourcePlan
from raycl.sweep.worker_groups import wait_at_stage_end
from raycl.training.checkpoint import PROGRESS, check_out_dir, stage_checkpoint_dir

REPLICATE = "replicate"  # in a stage checkpoint of the `tune` executor: the index of the seed run it belongs to
REPLICATE_KEY = "raycl_replicate"  # in a stage report: the same


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep shares (handed to Tune once, through the object store)."""

    sweep: str
    trials_dir: str
    train_storage: str  # Ray Train runs, one per trial (`train` executor)
    tune_storage: str  # the sweep's Tune experiment, one folder per trial
    plan: ResourcePlan
    max_failures: int
    seeds: int = 1  # runs per trial (budget.seeds)
    stage_gate: Any = None  # under early stopping, the StageGate actor where `train` workers wait at stage ends


def sweep_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune trial: run (or resume) the engine trial, once per seed, with the plan's executor; report
    its result (the mean over seeds)."""
    assignment = TrialAssignment.model_validate(config)
    out_dir = Path(context.trials_dir) / assignment.key
    reports = [run_replicate(replicate, context) for replicate in replicates(assignment, out_dir, context.seeds)]
    report = reports[0] if len(reports) == 1 else finished(out_dir, lambda: FinalReport.mean_of(reports))
    tune.report(report.to_tune())


@dataclass(frozen=True)
class Replicate:
    """One seed's run of a trial: its config (train.seed offset by `index`) and its own folder."""

    assignment: TrialAssignment
    out_dir: Path
    index: int
    run_name: str  # of its Ray Train run, unique per trial and seed


def replicates(assignment: TrialAssignment, out_dir: Path, seeds: int) -> list[Replicate]:
    """The runs of a trial: itself for one seed (in the trial's folder); else one per seed, in `seed_<i>/`."""
    if seeds == 1:
        return [Replicate(assignment, out_dir, 0, assignment.key)]
    runs = []
    for index in range(seeds):
        config = assignment.trial_config.with_overrides({"train.seed": assignment.trial_config.train.seed + index})
        runs.append(
            Replicate(
                assignment.model_copy(update={"trial_config": config}),
                out_dir / f"seed_{index}",
                index,
                f"{assignment.key}-seed{index}",
            )
        )
    return runs


def finished(out_dir: Path, compute: Callable[[], FinalReport]) -> FinalReport:
    """The report in `out_dir`'s sweep_result.json, else `compute()`d and written there: a run that finished
    before its driver could record it is not run again."""
    done = out_dir / "sweep_result.json"
    if done.exists():
        return FinalReport.model_validate_json(done.read_text())
    report = compute()
    done.parent.mkdir(parents=True, exist_ok=True)
    partial = done.with_name(done.name + ".partial")
    partial.write_text(report.model_dump_json())
    partial.replace(done)
    return report


def run_replicate(replicate: Replicate, context: TrialContext) -> FinalReport:
    """One seed's run with the plan's executor (or its recorded report)."""

    def compute() -> FinalReport:
        if divergence := diverged_before(replicate.out_dir):
            # The same steps would diverge again (a restart by Tune, a resumed sweep): fail at once.
            raise TrialDiverged(divergence)
        run = run_in_actor if context.plan.executor == "tune" else run_in_train
        return run(replicate, context).final_report()

    # A folder left by another sweep of the same name (its study deleted) is not this trial's to resume.
    check_out_dir(replicate.out_dir, replicate.assignment.trial_config)
    return finished(replicate.out_dir, compute)


def diverged_before(out_dir: Path) -> Divergence | None:
    """The divergence an earlier run of this trial recorded in its result.json, if any."""
    path = out_dir / "result.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    return Divergence.model_validate(record) if record.get("diverged") else None


def run_in_actor(replicate: Replicate, context: TrialContext) -> EngineRun:
    """The `tune` executor: the engine runs in this Tune actor, reusing its imports across trials.

    Stage checkpoints go to Tune's storage with each stage's report, so a trial that Tune restarts
    (budget.max_failures), or that a resumed sweep runs again after its driver died, resumes from its
    last stage on whichever node it lands.
    """
    from raycl.training.trial import run_trial

    node_id = ray.get_runtime_context().get_node_id()
    since = time.time()
    trial_storage = f"{context.tune_storage}/{replicate.assignment.key}"
    restore_stage_checkpoint(furthest_stage_checkpoint(trial_storage, replicate.index), replicate.out_dir)

    def report(record: EvalRecord, checkpoint_dir: Path | None) -> None:
        checkpoint = None
        if checkpoint_dir:
            # The seeds of a trial share its Tune folder: each checkpoint says whose it is.
            (Path(checkpoint_dir) / REPLICATE).write_text(str(replicate.index))
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
        tune.report(record.to_report() | {NODE_KEY: node_id, REPLICATE_KEY: replicate.index}, checkpoint=checkpoint)

    result = run_trial(replicate.assignment.trial_config, replicate.out_dir, report=report)
    gpus = [GpuSlot(node_id=node_id, gpu=str(gpu), since=since, until=time.time()) for gpu in ray.get_gpu_ids()]
    return EngineRun(result=result, node_ids=[node_id], gpus=gpus, device=trained_on(replicate.assignment))


def trained_on(assignment: TrialAssignment) -> str:
    """The torch device type the engine picks for `assignment` on this process (cpu where a GPU was given
    but CUDA is absent, as on a node that only declares GPUs to Ray)."""
    from raycl.training.parts import resolve_device

    return resolve_device(assignment.trial_config.train.device).type


def run_in_train(replicate: Replicate, context: TrialContext) -> EngineRun:
    """The `train` executor: a Ray Train worker group runs the engine (DDP across workers)."""
    plan = context.plan
    trainer = TorchTrainer(
        train_worker,
        torch_config=TorchConfig(backend=process_group_backend(plan)),
        train_loop_config={
            "assignment": replicate.assignment.model_dump(mode="json"),
            "out_dir": str(replicate.out_dir),
            "stage_gate": context.stage_gate,
        },
        scaling_config=ScalingConfig(
            num_workers=plan.workers_per_trial,
            use_gpu=plan.gpus_per_worker > 0,
            resources_per_worker=plan.worker_resources,
        ),
        run_config=RunConfig(
            # A fixed name per trial and seed: a restarted trial finds its own Train checkpoints.
            name=f"{context.sweep}-{replicate.run_name}",
            storage_path=context.train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=context.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    return EngineRun.model_validate(trainer.fit().return_value)


def process_group_backend(plan: ResourcePlan) -> str:
    """NCCL for workers with GPUs where this node has CUDA, else gloo (Ray Train picks NCCL for any GPU worker, which
    fails where the GPUs are only declared to Ray; gloo also reduces CUDA tensors, more slowly, should this
    coordinator land on a CPU-only node of a GPU cluster)."""
    import torch

    return "nccl" if plan.gpus_per_worker > 0 and torch.cuda.is_available() else "gloo"


def furthest_stage_checkpoint(trial_storage: str, replicate: int = 0) -> tune.Checkpoint | None:
    """The stage checkpoint of seed run `replicate` that got furthest among those Tune persisted in a trial's
    folder, by this driver or an earlier one (a new driver's Tune numbers its checkpoints from 0 again)."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(trial_storage)
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    best, best_stages = None, 0
    for info in found:
        progress = f"{info.path}/{PROGRESS}"
        if (
            info.type != pyarrow.fs.FileType.Directory
            or filesystem.get_file_info(progress).type != pyarrow.fs.FileType.File
        ):
            continue
        owner = f"{info.path}/{REPLICATE}"
        if filesystem.get_file_info(owner).type == pyarrow.fs.FileType.File:
            with filesystem.open_input_stream(owner) as stream:
                if int(stream.read()) != replicate:
                    continue
        elif replicate != 0:
            continue
        with filesystem.open_input_stream(progress) as stream:
            stages = json.loads(stream.read())["stages_done"]
        if stages > best_stages:
            best, best_stages = tune.Checkpoint(info.path, filesystem=filesystem), stages
    return best


def restore_stage_checkpoint(checkpoint: ray.train.Checkpoint | None, out_dir: Path) -> None:
    """Bring a restarted trial's last stage checkpoint back from Ray's storage when this node lacks it
    (the trial landed on another node, or a replaced spot instance)."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        stage = json.loads((Path(directory) / PROGRESS).read_text())["stages_done"] - 1
    target = stage_checkpoint_dir(out_dir, stage)
    if not target.exists():
        partial = target.with_name(target.name + ".partial")  # ignored by the engine until renamed
        shutil.rmtree(partial, ignore_errors=True)
        checkpoint.to_directory(str(partial))
        partial.rename(target)


def train_worker(loop_config: dict[str, Any]) -> EngineRun:
    """One Ray Train rank: restore the engine's last stage checkpoint if this node lacks it, run the trial."""
    import torch.distributed as dist

    from raycl.training.trial import run_trial

    context = ray.train.get_context()
    out_dir = Path(loop_config["out_dir"])
    assignment = TrialAssignment.model_validate(loop_config["assignment"])
    gate = loop_config.get("stage_gate")
    node_id = ray.get_runtime_context().get_node_id()
    since = time.time()

    if context.get_local_rank() == 0:
        restore_stage_checkpoint(ray.train.get_checkpoint(), out_dir)
    if dist.is_initialized():
        dist.barrier()

    def report(record: EvalRecord, checkpoint_dir: Path | None) -> None:
        payload = record.to_report() | {NODE_KEY: node_id}
        stage_checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(
            payload,
            checkpoint=stage_checkpoint,
            checkpoint_dir_name=Path(checkpoint_dir).name if checkpoint_dir else None,
            # The engine owns its checkpoint directory and resumes from it.
            delete_local_checkpoint_after_upload=False,
        )
        if checkpoint_dir and gate is not None:
            wait_at_stage_end(gate, assignment.key, record.stage)

    try:
        result: TrialResult | Divergence = run_trial(assignment.trial_config, out_dir, report=report)
    except TrialDiverged as diverged:
        # Returned, not raised: Ray Train would restart the worker group from the last stage
        # checkpoint, and the same steps would diverge again.
        result = diverged.divergence
    slots = [GpuSlot(node_id=node_id, gpu=str(gpu), since=since, until=time.time()) for gpu in ray.get_gpu_ids()]
    placements: list[Any] = [(node_id, slots)]
    if dist.is_initialized() and dist.get_world_size() > 1:
        placements = [None] * dist.get_world_size()  # every item is overwritten by its rank's placement
        dist.all_gather_object(placements, (node_id, slots))
    node_ids = sorted({node for node, _ in placements})
    gpus = [slot for _, rank_slots in placements for slot in rank_slots]
    return EngineRun(result=result, node_ids=node_ids, gpus=gpus, device=trained_on(assignment))


def tune_trainable(context: TrialContext) -> Any:
    """The Tune trainable of a sweep, holding what the plan gives a trial."""
    return tune.with_resources(tune.with_parameters(sweep_trial, context=context), context.plan.trial_resources)
