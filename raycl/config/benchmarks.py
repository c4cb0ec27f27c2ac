"""Which lm-eval benchmarks a trial runs: the task names raycl knows and their settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from raycl.config.base import StrictModel

# The offline world's multiple-choice probes: base facts, and one task per new-data stage.
RETENTION = "raycl_retention"
ACQUISITION = "raycl_acquisition"
# Real benchmarks shipped as templates: task name -> the jsonl fields its data file must have.
REAL_TASKS: dict[str, tuple[str, ...]] = {
    "raycl_arc_easy": ("query", "choices", "gold"),
    "raycl_hellaswag": ("activity_label", "ctx", "endings", "label"),
    "raycl_lambada": ("context", "continuation"),
}


def _is_world_task(task: str) -> bool:
    return task == RETENTION or is_world_stage_task(task)


def is_world_stage_task(task: str) -> bool:
    """Whether `task` probes the offline world's new-data stages."""
    return task == ACQUISITION or task.startswith(ACQUISITION + "_")


class BenchmarkConfig(StrictModel):
    """Which lm-eval tasks a trial runs, on which data, and how many examples each time."""

    tasks: tuple[str, ...] = Field(
        (RETENTION, ACQUISITION),
        description="raycl_retention (base facts), raycl_acquisition (one task per stage: "
        "raycl_acquisition_<domain>), raycl_arc_easy / raycl_hellaswag / raycl_lambada (data from "
        "task_paths), or any lm-eval task name (needs include_defaults and a reachable hub)",
    )
    task_paths: dict[str, str] = Field(
        default_factory=dict, description="jsonl data file of each shipped real-benchmark task"
    )
    limit: int | None = Field(None, ge=1, description="first N examples per task at full evaluations; None: all")
    quick_limit: int = Field(
        0, ge=0, description="first N examples per task at the every-K-steps quick checks; 0: no benchmarks there"
    )
    batch_size: int = Field(64, ge=1)
    questions_per_entity: int = Field(1, ge=1, le=5, description="world-probe facts asked per entity")
    include_defaults: bool = Field(
        False, description="also index lm-eval's own tasks (adds 11-17 s per task manager)"
    )

    @model_validator(mode="after")
    def _check_tasks(self) -> BenchmarkConfig:
        for task in self.task_paths:
            if task not in REAL_TASKS:
                raise ValueError(f"task_paths.{task}: not a shipped benchmark (one of {', '.join(REAL_TASKS)})")
        for task in self.tasks:
            if task in REAL_TASKS and task not in self.task_paths:
                fields = ", ".join(REAL_TASKS[task])
                raise ValueError(f"tasks: {task} needs task_paths.{task} (a jsonl file with {fields})")
            if not (_is_world_task(task) or task in REAL_TASKS or self.include_defaults):
                raise ValueError(f"tasks: {task} is not a raycl task; set include_defaults to use lm-eval's own tasks")
        return self
