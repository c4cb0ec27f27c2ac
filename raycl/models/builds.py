"""Building the ladder rungs a run or sweep needs before its trials start.

A trial that finds its rung missing pretrains it inside the trial, on one core, while trials that need the
same rung wait on its lock. Built up front instead, every missing rung pretrains at once in its own
process (pretraining is single-threaded, `PRETRAIN_THREADS`), the largest first, one process per core.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from raycl.artifacts.cache import cache_entry
from raycl.config import TrialConfig, WorldConfig
from raycl.models.ladder import LADDER, check_rung, ladder_rung_dir, ladder_spec, rung_recipe
from raycl.world.offline import base_side, load_world


@dataclass(frozen=True)
class RungBuild:
    """One ladder rung on one world: a cache entry that holds every pretraining budget."""

    name: str
    world: WorldConfig

    @property
    def cost(self) -> int:
        """Pretraining compute, up to a constant: non-embedding parameters squared (the steps of every budget
        grow with the parameters, and so does each step)."""
        rung = check_rung(self.name)
        width = rung.hidden_size
        return (rung.num_layers * (4 * width * width + 3 * width * rung.intermediate_size)) ** 2


def rungs_of(configs: Iterable[TrialConfig]) -> list[RungBuild]:
    """The distinct ladder rungs `configs` train (other models are not built here)."""
    # A rung pretrains on its world's base side only: worlds that differ in nothing else share it.
    wanted = {RungBuild(c.model.name, WorldConfig(**base_side(c.world))) for c in configs}
    return [build for build in wanted if build.name in LADDER]


def missing(builds: Iterable[RungBuild]) -> list[RungBuild]:
    """The rungs of `builds` not in the cache yet, largest first."""
    absent = []
    for build in builds:
        world = load_world(build.world)
        if not cache_entry("models", ladder_spec(build.name, world.id, rung_recipe(build.name))).exists():
            absent.append(build)
    return sorted(absent, key=lambda build: build.cost, reverse=True)


def _build(build: RungBuild) -> str:
    world = load_world(build.world)
    ladder_rung_dir(build.name, world.text.base, world.tokenizer, world.id)
    return build.name


def build_rungs(
    builds: Iterable[RungBuild], processes: int | None = None, say: Callable[[str], None] = print
) -> list[str]:
    """Pretrain the missing rungs of `builds`, `processes` at once (default: one per core); their names.

    Each rung prints a line per tenth of its steps with an ETA, and one when done.
    """
    todo = missing(builds)
    if not todo:
        return []
    processes = max(1, min(processes or os.cpu_count() or 1, len(todo)))
    names = ", ".join(build.name for build in todo)
    say(f"pretraining {len(todo)} ladder rung(s) before any trial, {processes} at a time (one thread each): {names}")
    started = time.perf_counter()
    # Spawned, not forked: the parent may hold torch's thread pools or a Ray client.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in as_completed([pool.submit(_build, build) for build in todo]):
            say(f"ladder rung ready: {done.result()} ({(time.perf_counter() - started) / 60:.1f} min since the start)")
    return [build.name for build in todo]
