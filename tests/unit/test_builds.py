"""What a sweep builds before its trials: the ladder rungs its space can sample, missing ones largest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from raycl.config import TrialConfig, WorldConfig
from raycl.config.space import load_space
from raycl.models.builds import RungBuild, missing, rungs_of
from raycl.models.ladder import LADDER, StepLines


def test_the_scaling_laws_space_needs_every_rung_once_on_one_world() -> None:
    space = load_space("scaling_laws")
    configs = space.possible_configs(("model.", "world."))
    assert len(configs) == 5 * 4  # sizes x pretraining budgets
    sizes = space.parameters["model.name"].choices  # type: ignore[union-attr]
    assert sorted(build.name for build in rungs_of(configs)) == sorted(sizes) and set(sizes) < set(LADDER)
    assert {build.world for build in rungs_of(configs)} == {WorldConfig()}


def test_a_world_with_familiar_domains_pretrains_its_own_rung_whatever_its_stream_length() -> None:
    familiar = {"world.familiar_entities": 40, "world.stage_entities": 400, "model.name": "raycl-tiny-s"}
    configs = [TrialConfig().with_overrides(familiar | {"world.num_stages": n}) for n in (1, 3)]
    configs.append(TrialConfig().with_overrides({"model.name": "raycl-tiny-s"}))
    worlds = {build.world for build in rungs_of(configs)}
    assert worlds == {WorldConfig(), WorldConfig(familiar_entities=40, stage_entities=400)}


def test_a_fixed_real_model_needs_no_rung() -> None:
    space = load_space("real")
    assert rungs_of(space.possible_configs(("model.", "world."))) == []


def test_an_empty_cache_misses_every_rung_largest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path))
    builds = [RungBuild(name, WorldConfig()) for name in LADDER]
    assert [build.name for build in missing(builds)] == list(reversed(LADDER))


def test_pretraining_progress_is_a_line_per_tenth_with_an_eta() -> None:
    lines: list[str] = []
    tick = StepLines("raycl-tiny-xs", total=45, say=lines.append)
    for _ in range(45):
        tick(2.5)
    assert len(lines) == 10
    assert lines[0].startswith("pretraining raycl-tiny-xs: 5/45 steps, loss 2.500")
    assert lines[-1].startswith("pretraining raycl-tiny-xs: 45/45 steps") and "about 0.0 min left" in lines[-1]
