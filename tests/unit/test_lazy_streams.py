"""A long line or a huge file costs memory in proportion to the stages used, not to the file."""

from __future__ import annotations

import itertools
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from raycl.config.stream import DataSourceConfig, StreamConfig
from raycl.data.build import build_stream
from raycl.data.sources import LoadSummary, iter_examples, load_examples
from raycl.world.tokenizer import train_tokenizer

WORDS = ["river", "stone", "cloud", "lantern", "orbit", "maple", "quartz", "signal", "harbor", "meadow"]
FILE_BYTES = 8 * 2**20
T = TypeVar("T")


@pytest.fixture(scope="module")
def one_line_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 MiB of words and not a single newline (a speech dumped on one line)."""
    path = tmp_path_factory.mktemp("long") / "one_line.txt"
    rng = random.Random(0)
    chunk = " ".join(rng.choice(WORDS) for _ in range(20_000)) + " "
    with path.open("w") as handle:
        while handle.tell() < FILE_BYTES:
            handle.write(chunk)
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tokenizer([" ".join(WORDS * 50)], vocab_size=300, out_dir=tmp_path_factory.mktemp("tokenizer"))


def peak_bytes(work: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_line_without_end_is_read_in_documents_as_they_are_used(one_line_file: Path) -> None:
    source = DataSourceConfig(path=str(one_line_file), document_chars=2000)
    documents, peak = peak_bytes(lambda: list(itertools.islice(iter_examples(source, LoadSummary(source.name)), 5)))
    assert peak < FILE_BYTES / 50
    texts = [str(document.content) for document in documents]
    assert all(len(text) <= 2000 for text in texts) and all(text.endswith(" ") for text in texts)  # cut at spaces
    assert [document.number for document in documents] == [1] * 5  # all from line 1


def test_the_cut_documents_hold_the_whole_file_in_order(tmp_path: Path) -> None:
    text = "alpha beta gamma\n" + "word " * 1000 + "end\n" + "x" * 2500 + "\nlast line\n"
    path = tmp_path / "mixed.txt"
    path.write_text(text)
    examples, summary = load_examples(DataSourceConfig(path=str(path), document_chars=600))
    assert "".join(str(example.content) for example in examples) == text
    assert all(len(example.content) <= 600 for example in examples)
    assert examples[0].number == 1 and examples[-1].number == 3  # the last starts inside line 3's x's
    assert summary.rows == len(examples)


def test_a_window_stream_reads_only_what_its_windows_use(one_line_file: Path, tokenizer) -> None:
    config = StreamConfig.model_validate(
        {
            "source": {"path": str(one_line_file)},
            "shape": {"by": "window", "window": 2048, "step": 2048, "max_stages": 2},
        }
    )
    pool = torch.zeros((1, 128), dtype=torch.long)
    stream, peak = peak_bytes(lambda: build_stream(config, tokenizer, 128, retention=[[1, 2, 3]], replay_pool=pool))
    assert [stage.name for stage in stream.stages] == ["window1", "window2"]
    assert peak < FILE_BYTES / 10
    assert (
        stream.summary is not None and stream.summary.rows < 20
    )  # documents of 2000 characters read: a few thousand tokens' worth
