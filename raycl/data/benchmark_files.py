"""Benchmark data files checked before lm-eval reads them: lm-eval would fail deep inside a template,
with a message naming neither the file nor the key. No lm-eval, no torch: `raycl validate` runs these."""

from __future__ import annotations

import json
from pathlib import Path

from raycl.config.benchmarks import REAL_TASKS, TaskFile

DATA_SUFFIXES = (".jsonl", ".json")  # lm-eval's `json` loader: one JSON object per line


def check_task_file(task: str, spec: TaskFile) -> Path:
    """The data file of a `task_paths` entry, once its first row is known to hold the template's fields."""
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task_paths.{task}: no such file {path}")
    if path.suffix not in DATA_SUFFIXES:
        raise ValueError(
            f"task_paths.{task}: {path} is not a JSON-lines file ({'/'.join(DATA_SUFFIXES)}), "
            "the one format the templates read"
        )
    with path.open(encoding="utf-8") as lines:
        number, line = next(((n, line) for n, line in enumerate(lines, 1) if line.strip()), (0, ""))
    if number == 0:
        raise ValueError(f"task_paths.{task}: {path} holds no rows")
    try:
        first = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"task_paths.{task}: {path}: line {number}: unparseable JSON ({error.msg})") from None
    missing = [field for field in REAL_TASKS[spec.template] if not isinstance(first, dict) or field not in first]
    if missing:
        raise ValueError(f"task_paths.{task}: the rows of {path} lack {', '.join(missing)}")
    return path


def check_include_path(include_path: str) -> Path:
    """The `include_path` directory, once it is known to hold task YAMLs."""
    path = Path(include_path)
    if not path.is_dir():
        raise ValueError(f"include_path: no such directory {path}")
    if next(path.rglob("*.yaml"), None) is None:
        raise ValueError(f"include_path: {path} holds no task YAML (*.yaml)")
    return path
