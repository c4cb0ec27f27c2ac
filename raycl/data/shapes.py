"""Stream shapes: how a dataset becomes an ordered list of stages, and the online (step-by-step) view.

Stages come from a field (topic, source, language), from equal parts in file order, from equal
parts in time order, or from a rolling window over the token stream (window and step in tokens, so
stage sizes are exact training budgets). Each stage holds out a seeded fraction of its examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any, TypeVar

from raycl.config.stream import StreamShapeConfig
from raycl.data.formats import DataError
from raycl.data.sources import Example

T = TypeVar("T")


def split_by_field(
    examples: Sequence[Example], field: str, values: Sequence[str] | None = None
) -> list[tuple[str, list[Example]]]:
    """One stage per value of `field` (as text), in order of first appearance or in the order of `values`."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(str(example.meta[field]), []).append(example)
    if values is None:
        return list(groups.items())
    absent = [value for value in values if value not in groups]
    if absent:
        raise DataError(
            f"values: no examples have {field}={absent[0]!r} (values found: {', '.join(list(groups)[:10])})"
        )
    return [(value, groups[value]) for value in values]


def split_by_count(items: Sequence[T], stages: int) -> list[tuple[str, list[T]]]:
    """`stages` contiguous parts whose sizes differ by at most one (the first ones are larger)."""
    if stages > len(items):
        raise DataError(f"stages: {stages} stages from {len(items)} examples")
    size, extra = divmod(len(items), stages)
    parts, start = [], 0
    for index in range(stages):
        end = start + size + (index < extra)
        parts.append((f"part{index + 1}", list(items[start:end])))
        start = end
    return parts


def parse_time(value: Any) -> datetime:
    """A timezone-aware datetime from an ISO 8601 string, a date(time), or seconds since the epoch; naive means UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        raise ValueError(f"not a date: {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def split_by_time(examples: Sequence[Example], field: str, stages: int) -> list[tuple[str, list[Example]]]:
    """Examples sorted by the date in `field` (ties in file order), then `stages` equal parts named by date range."""
    times = []
    for example in examples:
        try:
            times.append(parse_time(example.meta[field]))
        except ValueError as error:
            raise DataError(f"row {example.number}: {field}: {error}") from None
    order = sorted(range(len(examples)), key=times.__getitem__)
    parts = split_by_count(order, stages)
    return [
        (f"{times[part[0]].date()}..{times[part[-1]].date()}", [examples[index] for index in part]) for _, part in parts
    ]


def split_stages(examples: Sequence[Example], shape: StreamShapeConfig) -> list[tuple[str, list[Example]]]:
    """The named stages of `examples` (any shape but `window`, which works on tokens), cut to the limits."""
    if shape.by in ("field", "time"):
        assert shape.field is not None  # the config requires it for these two
        if shape.by == "field":
            stages = split_by_field(examples, shape.field, shape.values)
        else:
            stages = split_by_time(examples, shape.field, shape.stages)
    elif shape.by == "count":
        stages = split_by_count(examples, shape.stages)
    else:
        raise ValueError("by: window splits tokens, not examples: use window_spans")
    return [(name, items[: shape.examples_per_stage]) for name, items in stages[: shape.max_stages]]


def holdout(items: Sequence[T], fraction: float, seed: int, key: str = "") -> tuple[list[T], list[T]]:
    """(train, held-out): a seeded `fraction` of `items` held out (at least one), both in their original order.

    `key` (e.g. the stage name) gives each stage its own draw from the same seed.
    """
    count = round(len(items) * fraction)
    if fraction > 0:
        count = max(1, count)
    if count >= len(items):
        raise DataError(
            f"{key or 'held-out split'}: {len(items)} examples leave none to train on after holding out {fraction:.0%}"
        )
    held = set(random.Random(f"{seed}/{key}").sample(range(len(items)), count))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def window_spans(total: int, window: int, step: int) -> list[tuple[int, int]]:
    """`[start, end)` token spans of a rolling window: `(total - window) // step + 1` of them; the tail
    that no window reaches is left out."""
    if total < window:
        raise DataError(f"window: {window} tokens, but the stream has only {total}")
    return [(start, start + window) for start in range(0, total - window + 1, step)]
