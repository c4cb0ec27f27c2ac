"""One sweep trial: a Tune function that runs the engine's continual trial in a Ray Train worker group.

This is Ray Train V2's pattern for Train inside Tune (a `TorchTrainer` handed to a `Tuner` is gone):
the Tune trial is a function that builds a `TorchTrainer` and calls `.fit()`; a `TuneReportCallback`
forwards rank 0's `ray.train.report` to Tune; the result comes back as the train function's return
value (in V2 the most reliable place for final metrics) and is reported to Tune once more as a
`FinalReport`, marked with `FINAL_KEY`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from raycl.config.records import NODE_KEY, FinalReport, TrialAssignment
from raycl.config.result import TrialResult
from raycl.sweep.plan import ResourcePlan


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep shares (handed to Tune once, through the object store)."""

    sweep: str
    trials_dir: str
    train_storage: str
    plan: ResourcePlan
    max_failures: int


def sweep_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune trial: run (or resume) the engine trial in a Train worker group, report its result."""
    assignment = TrialAssignment.model_validate(config)
    out_dir = Path(context.trials_dir) / assignment.key
    done = out_dir / "sweep_result.json"
    # A trial that finished before its driver could record it is not run again.
    if done.exists():
        report = FinalReport.model_validate_json(done.read_text())
    else:
        plan = context.plan
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"assignment": config, "out_dir": str(out_dir)},
            scaling_config=ScalingConfig(
                num_workers=plan.workers_per_trial,
                use_gpu=plan.gpus_per_worker > 0,
                resources_per_worker=plan.worker_resources,
            ),
            run_config=RunConfig(
                # A fixed name per trial: a restarted trial finds its own Train checkpoints.
                name=f"{context.sweep}-{assignment.key}",
                storage_path=context.train_storage,
                callbacks=[TuneReportCallback()],
                failure_config=FailureConfig(max_failures=context.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
        )
        returned = trainer.fit().return_value
        summary = TrialResult.model_validate(returned["result"]).summary()
        report = FinalReport(**summary.model_dump(), node_ids=returned["node_ids"])
        done.parent.mkdir(parents=True, exist_ok=True)
        partial = done.with_name(done.name + ".partial")
        partial.write_text(report.model_dump_json())
        partial.replace(done)
    tune.report(report.to_tune())


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train rank: restore the engine's last stage checkpoint if this node lacks it, run the trial."""
    import torch.distributed as dist

    from raycl.training.trial import run_trial

    context = ray.train.get_context()
    out_dir = Path(loop_config["out_dir"])
    node_id = ray.get_runtime_context().get_node_id()
    node_ids = [node_id]
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, node_id)
        node_ids = gathered

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and context.get_local_rank() == 0:
        # A restarted trial may land on a node without the engine's own copy of its last stage
        # checkpoint (another node, a replaced spot instance): bring it back from Ray's storage.
        target = out_dir / "checkpoints" / Path(checkpoint.path).name
        if not target.exists():
            partial = target.with_name(target.name + ".partial")  # ignored by the engine until renamed
            shutil.rmtree(partial, ignore_errors=True)
            checkpoint.to_directory(str(partial))
            partial.rename(target)
    if dist.is_initialized():
        dist.barrier()

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        payload = dict(metrics) | {NODE_KEY: node_id}
        stage_checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(
            payload,
            checkpoint=stage_checkpoint,
            checkpoint_dir_name=Path(checkpoint_dir).name if checkpoint_dir else None,
            # The engine owns its checkpoint directory and resumes from it.
            delete_local_checkpoint_after_upload=False,
        )

    assignment = TrialAssignment.model_validate(loop_config["assignment"])
    result = run_trial(assignment.trial_config, out_dir, report=report)
    return {"result": result, "node_ids": sorted(set(node_ids))}


def tune_trainable(context: TrialContext) -> Any:
    """The Tune trainable of a sweep, holding only the coordinator sliver of a CPU."""
    return tune.with_resources(tune.with_parameters(sweep_trial, context=context), context.plan.trial_resources)
