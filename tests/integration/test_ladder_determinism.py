"""A ladder rung pretrains to the same weights whatever thread count its caller runs torch on."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raycl.config import WorldConfig
from raycl.models import ladder
from raycl.models.ladder import PretrainRecipe, budget_dirname, ladder_rung_dir, torch_threads
from raycl.world.offline import load_world

pytestmark = pytest.mark.slow

# 13 steps of the largest rung: enough for 3 threads to split its sums differently from 1.
RECIPE = PretrainRecipe(budgets=(0.05,))


def weights_hash(caller_threads: int, cache: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    world = load_world(WorldConfig())  # before the cache moves: the world itself is not what is compared
    monkeypatch.setenv("RAYCL_CACHE", str(cache))
    with torch_threads(caller_threads):
        rung = ladder_rung_dir("raycl-tiny-xl", world.text.base, world.tokenizer, world.id, RECIPE)
    weights = load_file(str(rung / budget_dirname(0.05) / "model.safetensors"))
    return hashlib.sha256(b"".join(weights[name].numpy().tobytes() for name in sorted(weights))).hexdigest()


def test_rung_weights_hash_is_the_same_on_one_and_three_caller_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, three = (weights_hash(threads, tmp_path / f"threads-{threads}", monkeypatch) for threads in (1, 3))
    assert one == three

    # The control: without the pinned thread count, 3 threads give other weights, so the equality above is
    # the pinning's doing and not a model too small to split its sums.
    monkeypatch.setattr(ladder, "torch_threads", lambda count: contextlib.nullcontext())
    assert weights_hash(3, tmp_path / "unpinned-3", monkeypatch) != one


def test_the_callers_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
