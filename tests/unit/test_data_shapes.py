"""Stream shapes: stages by field, count, time and rolling window; held-out splits; online steps; adaptation speed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raycl.config.stream import StreamShapeConfig
from raycl.data.formats import DataError
from raycl.data.shapes import (
    holdout,
    split_by_count,
    split_by_field,
    split_by_time,
    split_stages,
    window_spans,
)
from raycl.data.sources import Example


def examples(**columns: list) -> list[Example]:
    count = len(next(iter(columns.values())))
    return [Example(f"doc {i}", {key: values[i] for key, values in columns.items()}, i + 1) for i in range(count)]


def names_and_sizes(stages) -> list[tuple[str, int]]:
    return [(name, len(items)) for name, items in stages]


def test_by_field_in_order_of_first_appearance_or_as_listed() -> None:
    items = examples(topic=["b", "a", "b", "c", "a", "b"])
    assert names_and_sizes(split_by_field(items, "topic")) == [("b", 3), ("a", 2), ("c", 1)]
    assert names_and_sizes(split_by_field(items, "topic", ["c", "b"])) == [("c", 1), ("b", 3)]
    assert [e.number for e in split_by_field(items, "topic")[0][1]] == [1, 3, 6]
    with pytest.raises(DataError, match="no examples have topic='z'"):
        split_by_field(items, "topic", ["z"])


def test_by_field_names_non_text_values() -> None:
    assert names_and_sizes(split_by_field(examples(year=[2021, 2022, 2021]), "year")) == [("2021", 2), ("2022", 1)]


def test_by_count_makes_equal_contiguous_parts() -> None:
    stages = split_by_count(list(range(10)), 3)
    assert stages == [("part1", [0, 1, 2, 3]), ("part2", [4, 5, 6]), ("part3", [7, 8, 9])]
    with pytest.raises(DataError, match="4 stages from 3 examples"):
        split_by_count([1, 2, 3], 4)


def test_by_time_sorts_dates_of_any_spelling_then_splits() -> None:
    dates = [
        "2023-03-01T12:00:00Z",
        "2023-01-05",
        1675209600,  # 2023-02-01 00:00 UTC, seconds since the epoch
        "2023-01-01T08:00:00+00:00",
        "2023-02-15T00:00:00",
        "2023-03-02",
    ]
    stages = split_by_time(examples(date=dates), "date", 3)
    assert [[e.number for e in items] for _, items in stages] == [[4, 2], [3, 5], [1, 6]]
    assert [name for name, _ in stages] == [
        "2023-01-01..2023-01-05",
        "2023-02-01..2023-02-15",
        "2023-03-01..2023-03-02",
    ]
    with pytest.raises(DataError, match="row 2: date: "):
        split_by_time(examples(date=["2023-01-01", "last tuesday"]), "date", 1)


def test_split_stages_applies_the_limits() -> None:
    items = examples(topic=["a"] * 5 + ["b"] * 5 + ["c"] * 5)
    shape = StreamShapeConfig(by="field", field="topic", max_stages=2, examples_per_stage=3)
    assert names_and_sizes(split_stages(items, shape)) == [("a", 3), ("b", 3)]
    assert names_and_sizes(split_stages(items, StreamShapeConfig(stages=4))) == [
        ("part1", 4),
        ("part2", 4),
        ("part3", 4),
        ("part4", 3),
    ]


def test_holdout_is_seeded_disjoint_and_keyed() -> None:
    items = list(range(20))
    train, held = holdout(items, 0.25, seed=0, key="a")
    assert len(held) == 5 and sorted(train + held) == items and train == sorted(train)
    assert holdout(items, 0.25, seed=0, key="a") == (train, held)
    assert holdout(items, 0.25, seed=0, key="b") != (train, held)
    assert len(holdout(items[:3], 0.1, seed=0)[1]) == 1  # at least one held out
    with pytest.raises(DataError, match="1 examples leave none to train on"):
        holdout([7], 0.1, seed=0)


def test_rolling_window_spans() -> None:
    assert window_spans(100, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100)]
    assert window_spans(99, 40, 20) == [(0, 40), (20, 60), (40, 80)]  # the tail no window reaches is left out
    assert window_spans(100, 25, 25) == [(0, 25), (25, 50), (50, 75), (75, 100)]  # step = window: disjoint
    assert len(window_spans(10_000, 1000, 300)) == (10_000 - 1000) // 300 + 1
    with pytest.raises(DataError, match="window: 50 tokens, but the stream has only 40"):
        window_spans(40, 50, 10)


def test_shape_config_checks_its_kind() -> None:
    with pytest.raises(ValidationError, match="field: required when by is time"):
        StreamShapeConfig(by="time")
    with pytest.raises(ValidationError, match="window, step: required when by is window"):
        StreamShapeConfig(by="window", window=512)
    with pytest.raises(ValidationError, match="values: only for by: field"):
        StreamShapeConfig(values=("a",))
    assert StreamShapeConfig(by="time", field="created").required_fields == ("created",)
