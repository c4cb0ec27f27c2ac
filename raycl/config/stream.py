"""Configuration of a real-data stream: its source, its shape, its loss, its original distribution.

Pydantic only, so reading a config stays cheap; loading the data is `raycl.data`'s concern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from raycl.config.base import StrictModel

LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".txt")
LossOn = Literal["all", "assistant"]
Format = Literal["messages", "sharegpt", "oasst", "instruction", "transcript", "text"]
FORMATS: tuple[Format, ...] = get_args(Format)
Role = Literal["user", "assistant", "system"]


def local_suffix(path: str | Path) -> str | None:
    """The suffix of `path` among `LOCAL_SUFFIXES` (`.jsonl.gz` counts whole), or None."""
    return next((suffix for suffix in LOCAL_SUFFIXES if str(path).endswith(suffix)), None)


def absolute_path(path: str) -> str:
    """`path` made absolute against the working directory where the config is read: a sweep's
    trials run in directories of their own, where a relative path would point elsewhere."""
    return str(Path(path).expanduser().absolute())


class DataSourceConfig(StrictModel):
    """Where a dataset comes from and how to read it: a local file or a `datasets` hub name."""

    path: str | None = Field(
        default=None,
        description="local .jsonl/.json (optionally .gz)/.parquet/.txt file, relative to the working directory",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return absolute_path(path) if path is not None else None

    hub: str | None = Field(default=None, description="`datasets` hub name, e.g. lmsys/lmsys-chat-1m")
    subset: str | None = Field(default=None, description="hub config name, e.g. `en` for allenai/c4")
    split: str = "train"
    streaming: bool = Field(default=True, description="hub only: stream rows instead of downloading the whole split")
    limit: int | None = Field(default=None, ge=1, description="read only the first N rows")
    format: Format | Literal["auto"] = Field(default="auto", description="auto: detected from the first valid rows")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="field-name overrides by canonical name, e.g. {instruction: question, output: answer}",
    )
    roles: dict[str, Role] | Literal["alternate"] | None = Field(
        default=None,
        description="speaker names to roles, e.g. {Alice: user, Bob: assistant} (names not listed keep the usual "
        "user/human/gpt/... reading), or `alternate`: turns alternate user, assistant, ... whoever speaks",
    )
    oasst_paths: Literal["best", "all"] = Field(
        default="best", description="oasst trees: best-ranked thread per tree, or every root-to-leaf path"
    )
    document_chars: int = Field(
        default=2000,
        ge=0,
        description=".txt files: whole lines grouped into documents of at most this many characters (a longer line "
        "cut at spaces); 0: the whole file",
    )
    max_bad_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="share of malformed rows tolerated (skipped and counted); above it the load fails",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> DataSourceConfig:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` and `hub`")
        if self.path is not None and local_suffix(self.path) is None:
            raise ValueError(f"path: {self.path}: not a {'/'.join(LOCAL_SUFFIXES)} file")
        return self

    @property
    def name(self) -> str:
        return self.path or f"{self.hub}[{self.split}]"


class ReplayCorpusConfig(StrictModel):
    """Documents of the original (pretraining) distribution: the replay source and the retention probe."""

    paths: tuple[str, ...] = Field(
        default=(),
        description="local files or directories of them (.txt, .jsonl, .json, .jsonl.gz, .json.gz, .parquet)",
    )

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(map(absolute_path, paths))

    hub: str | None = Field(
        default=None, description="`datasets` hub name, e.g. allenai/c4, monology/pile-uncopyrighted"
    )
    subset: str | None = None
    split: str = "train"
    text_field: str = "text"
    max_documents: int | None = Field(
        default=None, ge=1, description="first N documents of each file, or of the hub split (required for the hub)"
    )
    document_chars: int = Field(
        default=2000, ge=0, description=".txt files: whole lines grouped into documents of at most this many characters"
    )
    heldout_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="share of documents held out (seeded) as the retention probe, never replayed",
    )
    seed: int = 0
    max_bad_fraction: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _one_origin(self) -> ReplayCorpusConfig:
        if bool(self.paths) == (self.hub is not None):
            raise ValueError("give exactly one of `paths` and `hub`")
        if self.hub is not None and self.max_documents is None:
            raise ValueError("max_documents: required with `hub` (corpora such as C4 stream for days)")
        return self


class StreamShapeConfig(StrictModel):
    """How examples are split into stages, and how much of each stage is held out."""

    by: Literal["count", "field", "time", "window"] = Field(
        default="count",
        description="count: equal parts in file order; field: one stage per value; "
        "time: equal parts in date order; window: rolling token windows",
    )
    stages: int = Field(default=3, ge=1, description="count/time: number of stages")
    field: str | None = Field(
        default=None, description="field: the stage field (topic, source, language); time: the date field"
    )
    values: tuple[str, ...] | None = Field(
        default=None,
        description="field: the stages to keep, in this order (default: every value, in order of first appearance)",
    )
    window: int | None = Field(default=None, ge=2, description="window: tokens per stage")
    step: int | None = Field(
        default=None, ge=1, description="window: tokens between the starts of consecutive stages (< window overlaps)"
    )
    max_stages: int | None = Field(default=None, ge=1, description="keep the first N stages")
    examples_per_stage: int | None = Field(
        default=None, ge=2, description="keep the first N examples of each stage (before the held-out split)"
    )
    heldout_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="share of each stage's examples (or windows' blocks) held out, seeded"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_kind(self) -> StreamShapeConfig:
        if self.by in ("field", "time") and self.field is None:
            raise ValueError(f"field: required when by is {self.by}")
        if self.by == "window" and (self.window is None or self.step is None):
            raise ValueError("window, step: required when by is window")
        if self.by != "window" and (self.window is not None or self.step is not None):
            raise ValueError("window, step: only for by: window")
        if self.by == "window" and self.examples_per_stage is not None:
            raise ValueError("examples_per_stage: not for by: window (a window's size is in tokens)")
        if self.values is not None and self.by != "field":
            raise ValueError("values: only for by: field")
        return self

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Row fields the shape reads: rows without them are malformed for this stream."""
        return (self.field,) if self.by in ("field", "time") and self.field is not None else ()


class StreamConfig(StrictModel):
    """A continual stream of real data: where it comes from, its stages, and which tokens train."""

    source: DataSourceConfig
    shape: StreamShapeConfig = StreamShapeConfig()
    loss_on: LossOn = Field(
        default="all", description="all: every token; assistant: assistant turns (and their EOS) only"
    )
    original: ReplayCorpusConfig | None = Field(
        default=None, description="documents of the original distribution: replay source and retention probe"
    )

    @model_validator(mode="before")
    @classmethod
    def _source_keys_under_source(cls, data: Any) -> Any:
        # `roles:` (or `path:`, `format:`) written beside `source:` would read as an unknown key of the stream.
        misplaced = [key for key in data if key in DataSourceConfig.model_fields] if isinstance(data, dict) else []
        if misplaced:
            key = misplaced[0]
            raise ValueError(f"{key}: a key of the source: move it under stream.source (stream.source.{key})")
        return data
