"""A trial's data checked before any model loads: every local file exists and its first rows parse.

`raycl validate TRIAL.yaml` runs these in about a second (no torch, no lm-eval): the stream's source
(format detected, rows normalized), each file of its original corpus, each benchmark data file, and
the benchmarks' `include_path`. On the rows it reads it runs `raycl run`'s own checks: the share of
malformed rows against `max_bad_fraction`, and, where the rows read are the whole file, the split into
the stages asked; the benchmark tasks must be defined in `include_path`. Hub sources are not read:
offline they cannot be, and online reading them is the trial's first step anyway.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from raycl.config import TrialConfig
from raycl.config.benchmarks import RETENTION, BenchmarkConfig, is_world_stage_task
from raycl.config.stream import DataSourceConfig, StreamShapeConfig
from raycl.config.trial import LADDER_PREFIX
from raycl.data.benchmark_files import check_include_path, check_task_file
from raycl.data.formats import DataError
from raycl.data.shapes import holdout, split_stages
from raycl.data.sources import LoadSummary, corpus_sources, load_examples

CHECK_ROWS = 20  # rows read from each file
Z_95 = 1.96  # the sampled share of malformed rows must exceed max_bad_fraction at 95% confidence to fail


def check_data(config: TrialConfig) -> list[str]:
    """One line per data file checked (what its first rows hold), and notes; a problem raises one line naming
    file and key."""
    lines = []
    stream = config.stream
    if stream is not None and stream.source.path is not None:
        lines += _first_rows("stream.source", stream.source, stream.shape)
    if stream is not None and stream.original is not None and stream.original.hub is None:
        try:
            sources = corpus_sources(stream.original)
        except DataError as error:
            raise DataError(f"stream.original: {error}") from None
        lines += [line for source in sources for line in _first_rows("stream.original", source)]
    benchmarks = config.eval.benchmarks
    for task, spec in benchmarks.task_paths.items():
        lines.append(f"eval.benchmarks.task_paths.{task}: {check_task_file(task, spec)} (template {spec.template})")
    if benchmarks.include_path is not None:
        lines.append(f"eval.benchmarks.include_path: {check_include_path(benchmarks.include_path)}")
        _check_included_tasks(benchmarks)
    return lines


def _first_rows(key: str, source: DataSourceConfig, shape: StreamShapeConfig | None = None) -> list[str]:
    """What the first rows of `source` hold, in one line, and a note where their malformed share is high; a
    `DataError` naming `key` where they show the load (or, when they are the whole file, its stages) would fail."""
    required = shape.required_fields if shape is not None else ()
    try:
        sample = source.model_copy(update={"limit": CHECK_ROWS, "max_bad_fraction": 1.0})
        examples, summary = load_examples(sample, required)
        whole = summary.rows < CHECK_ROWS  # the limit was not reached: these rows are the file
        note = _judge_bad_share(summary, source.max_bad_fraction, whole)
    except DataError as error:
        raise DataError(f"{key}: {error}") from None
    if whole and shape is not None and shape.by != "window":  # windows are counted in tokens: that needs the model
        try:
            for name, items in split_stages(examples, shape):
                holdout(items, shape.heldout_fraction, shape.seed, key=name)
        except DataError as error:
            raise DataError(f"{key}: {source.name}: {error}") from None
    return [f"{key}: {summary.describe()}"] + ([f"[yellow]note:[/yellow] {key}: {note}"] if note else [])


def _judge_bad_share(summary: LoadSummary, max_bad_fraction: float, whole: bool) -> str | None:
    """`run`'s check of the malformed share on the rows read: exact where they are the whole file; on a sample, a
    `DataError` where even the lower end of its 95% (Wilson) interval exceeds `max_bad_fraction`, a note where
    only the sample's share does."""
    if whole:
        summary.check(max_bad_fraction)
        return None
    bad, rows = sum(summary.skipped.values()), summary.rows
    share = bad / rows
    if share <= max_bad_fraction:
        return None
    assert summary.first_bad is not None  # some rows were malformed
    where = f"{summary.unit} {summary.first_bad[0]}: {summary.first_bad[1]}"
    if _wilson_low(bad, rows) > max_bad_fraction:
        raise DataError(
            f"{summary.source}: {where}; {bad} of the first {rows} rows malformed ({share:.0%}): the whole file is "
            f"almost surely above max_bad_fraction {max_bad_fraction:.1%}, where `raycl run` stops"
        )
    return (
        f"{bad} of the first {rows} rows malformed ({share:.0%}, above max_bad_fraction {max_bad_fraction:.1%}): "
        f"the run may stop ({where})"
    )


def _wilson_low(successes: int, trials: int) -> float:
    """The lower end of the 95% Wilson score interval of a proportion."""
    p, z2 = successes / trials, Z_95**2
    centre, spread = p + z2 / (2 * trials), Z_95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials**2))
    return (centre - spread) / (1 + z2 / trials)


class _AnyTagLoader(yaml.SafeLoader):
    """lm-eval task YAMLs use tags such as `!function utils.process`: read as plain values here."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _included_names(directory: Path) -> set[str]:
    """The task, group and tag names the YAMLs under `directory` define, as lm-eval's TaskManager indexes them."""
    names: set[str] = set()
    for path in directory.rglob("*.yaml"):
        try:
            data: Any = yaml.load(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader)  # a SafeLoader
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            first = str(error).splitlines()[0]
            raise DataError(f"eval.benchmarks.include_path: {path}: not readable YAML ({first})") from None
        if not isinstance(data, dict):
            continue
        for key in ("task", "group", "tag"):
            value = data.get(key)
            names.update(name for name in (value if isinstance(value, list) else [value]) if isinstance(name, str))
    return names


def _check_included_tasks(benchmarks: BenchmarkConfig) -> None:
    """Every task that is not raycl's own nor a task_paths entry is defined in include_path, as `run` needs."""
    if benchmarks.include_defaults or benchmarks.include_path is None:
        return  # lm-eval's own tasks are many, and indexing them costs seconds
    own = {RETENTION} | set(benchmarks.task_paths)
    names = _included_names(Path(benchmarks.include_path))
    for task in benchmarks.tasks:
        if task not in own and not is_world_stage_task(task) and task not in names:
            raise DataError(
                f"eval.benchmarks.tasks: {task} is not defined in include_path {benchmarks.include_path} "
                f"(its tasks: {', '.join(sorted(names)) or 'none'})"
            )


def original_note(config: TrialConfig) -> str | None:
    """Why this trial's forgetting would mean little, if it would: its retention probe is not drawn
    from what its base model was pretrained on."""
    model = config.model.name
    ladder = model.startswith(LADDER_PREFIX)
    original = config.stream.original if config.stream is not None else None
    if ladder and original is not None:
        return (
            f"model {model} was pretrained on the offline world's base corpus, not on stream.original: forgetting "
            "measured on stream.original means little (leave stream.original out to probe the world's base corpus)"
        )
    if not ladder and original is None:
        return (
            f"model {model} was not pretrained on the offline world's base corpus, which is the retention probe "
            "without "
            "stream.original: forgetting means little; set stream.original to documents like its pretraining data"
        )
    return None
