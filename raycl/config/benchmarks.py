"""Which lm-eval benchmarks a trial runs: the task names raycl knows and their settings."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from raycl.config.base import StrictModel
from raycl.config.stream import absolute_path

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


class TaskFile(StrictModel):
    """A shipped real-benchmark template pointed at a data file: one task, named by its key in `task_paths`."""

    template: str = Field(description="the shipped template: " + ", ".join(REAL_TASKS))
    path: str = Field(description="its data: a JSON-lines file with the template's fields")

    @field_validator("template")
    @classmethod
    def _shipped(cls, template: str) -> str:
        if template not in REAL_TASKS:
            raise ValueError(f"{template} is not a shipped benchmark template (one of {', '.join(REAL_TASKS)})")
        return template

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return absolute_path(path)


class BenchmarkConfig(StrictModel):
    """Which lm-eval tasks a trial runs, on which data, and how many examples each time."""

    tasks: tuple[str, ...] = Field(
        default=(RETENTION, ACQUISITION),
        description="raycl_retention (base facts), raycl_acquisition (one task per stage: "
        "raycl_acquisition_<domain>), raycl_arc_easy / raycl_hellaswag / raycl_lambada and other "
        "task_paths entries, tasks of include_path, or any lm-eval "
        "task name (needs include_defaults and a reachable hub)",
    )
    task_paths: dict[str, TaskFile] = Field(
        default_factory=dict,
        description="data of the shipped real-benchmark tasks: `raycl_arc_easy: FILE`, or under another name "
        "`arc_challenge: {template: raycl_arc_easy, path: FILE}` (a template can serve several tasks)",
    )
    include_path: str | None = Field(
        default=None,
        description="a directory of your own lm-eval task YAMLs, as lm-eval's "
        "--include_path (lm-eval's own tasks stay unindexed)",
    )
    limit: int | None = Field(
        default=None, ge=1, description="first N examples per task at full evaluations; None: all"
    )
    quick_limit: int = Field(
        default=0,
        ge=0,
        description="first N examples per task at the every-K-steps quick checks; 0: no benchmarks there",
    )
    batch_size: int = Field(default=64, ge=1)
    questions_per_entity: int = Field(default=1, ge=1, le=5, description="world-probe facts asked per entity")
    include_defaults: bool = Field(
        default=False, description="also index lm-eval's own tasks (adds 11-17 s per task manager)"
    )

    @field_validator("task_paths", mode="before")
    @classmethod
    def _shorthand(cls, task_paths: Any) -> Any:
        """`raycl_arc_easy: FILE` is `raycl_arc_easy: {template: raycl_arc_easy, path: FILE}`."""
        if not isinstance(task_paths, dict):
            return task_paths
        return {
            task: {"template": task, "path": spec} if isinstance(spec, str) else spec
            for task, spec in task_paths.items()
        }

    @field_validator("include_path")
    @classmethod
    def _absolute(cls, include_path: str | None) -> str | None:
        return absolute_path(include_path) if include_path is not None else None

    @model_validator(mode="after")
    def _check_tasks(self) -> BenchmarkConfig:
        for task in self.tasks:
            if task in REAL_TASKS and task not in self.task_paths:
                fields = ", ".join(REAL_TASKS[task])
                raise ValueError(f"tasks: {task} needs task_paths.{task} (a jsonl file with {fields})")
            if not (_is_world_task(task) or task in self.task_paths or self.include_path or self.include_defaults):
                raise ValueError(
                    f"tasks: {task} is not a raycl task ({RETENTION}, {ACQUISITION}[_<stage>], or a task_paths entry); "
                    "set include_path to a directory of your task YAMLs, or include_defaults for lm-eval's own tasks"
                )
        return self
