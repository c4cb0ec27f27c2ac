"""A trial's data checked before any model loads: every local file exists and its first rows parse.

`raycl validate TRIAL.yaml` runs these in about a second (no torch, no lm-eval): the stream's source
(format detected, rows normalized), each file of its original corpus, each benchmark data file, and
the benchmarks' `include_path`. Hub sources are not read: offline they cannot be, and online
reading them is the trial's first step anyway.
"""

from __future__ import annotations

from raycl.config import TrialConfig
from raycl.config.stream import DataSourceConfig
from raycl.config.trial import LADDER_PREFIX
from raycl.data.benchmark_files import check_include_path, check_task_file
from raycl.data.formats import DataError
from raycl.data.sources import corpus_sources, load_examples

CHECK_ROWS = 20  # rows read from each file


def check_data(config: TrialConfig) -> list[str]:
    """One line per data file checked (what its first rows hold); a problem raises one line naming file and key."""
    lines = []
    stream = config.stream
    if stream is not None and stream.source.path is not None:
        lines.append(_first_rows("stream.source", stream.source, stream.shape.required_fields))
    if stream is not None and stream.original is not None and stream.original.hub is None:
        try:
            sources = corpus_sources(stream.original)
        except DataError as error:
            raise DataError(f"stream.original: {error}") from None
        lines += [_first_rows("stream.original", source) for source in sources]
    benchmarks = config.eval.benchmarks
    for task, spec in benchmarks.task_paths.items():
        lines.append(f"eval.benchmarks.task_paths.{task}: {check_task_file(task, spec)} (template {spec.template})")
    if benchmarks.include_path is not None:
        lines.append(f"eval.benchmarks.include_path: {check_include_path(benchmarks.include_path)}")
    return lines


def _first_rows(key: str, source: DataSourceConfig, required_fields: tuple[str, ...] = ()) -> str:
    """What the first rows of `source` hold, in one line; a `DataError` naming `key` if nothing usable."""
    # Any share of bad rows passes here, as long as one is usable: 20 rows are too few to judge the share.
    try:
        _, summary = load_examples(source.model_copy(update={"limit": CHECK_ROWS, "max_bad_fraction": 1.0}), required_fields)
    except DataError as error:
        raise DataError(f"{key}: {error}") from None
    return f"{key}: {summary.describe()}"


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
            f"model {model} was not pretrained on the offline world's base corpus, which is the retention probe without "
            "stream.original: forgetting means little; set stream.original to documents like its pretraining data"
        )
    return None
