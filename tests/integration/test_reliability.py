"""No silent wrong results: a foreign out folder refused, a wrecked model recorded as diverged, and no
credential in any file a sweep leaves (Ray's temp dir, the run folder, the stores)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raycl.config import TrialConfig
from raycl.config.result import TrialDiverged
from raycl.config.space import SHIPPED_DIR
from raycl.sweep import ray_session, run_sweep
from raycl.training.trial import run_trial

pytestmark = pytest.mark.slow

# One stage of two steps, a few held-out examples, no lm-eval: seconds per trial.
TINY = {
    "world": {"num_stages": 1},
    "train": {"steps_per_stage": 2, "warmup_steps": 0},
    "eval": {"max_examples": 8, "benchmarks": {"tasks": []}},
}


def raycl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raycl.cli", *args], capture_output=True, text=True, timeout=600)


def test_rerun_with_another_lr_into_the_same_out_is_refused_and_the_result_kept(tmp_path: Path) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump(TINY))
    second.write_text(yaml.safe_dump(TINY | {"train": TINY["train"] | {"lr": 1e-3}}))
    out = tmp_path / "trial"
    assert raycl("run", str(first), "--out", str(out)).returncode == 0
    kept = (out / "result.json").read_bytes()
    refused = raycl("run", str(second), "--out", str(out))
    assert refused.returncode != 0
    lines = refused.stdout.strip().splitlines()
    assert len(lines) == 1, refused.stdout
    assert "train.lr: 0.0003 there, 0.001 now" in lines[0] and "start fresh" in lines[0]
    assert (out / "result.json").read_bytes() == kept
    assert raycl("run", str(first), "--out", str(out)).returncode == 0  # the same config still resumes


def test_a_model_driven_above_a_uniform_guess_is_recorded_as_diverged(tmp_path: Path) -> None:
    """lr 0.9 on the ladder: the loss climbs far above ln(512) = 6.24 but, with the first loss's multiple
    out of reach (as on a stream whose first loss is near 6), only the uniform-guess bound stops it."""
    config = TrialConfig.model_validate(TINY).with_overrides(
        {"train.lr": 0.9, "train.steps_per_stage": 20, "train.divergence_factor": 100.0}
    )
    with pytest.raises(TrialDiverged) as diverged:
        run_trial(config, tmp_path / "wrecked")
    record = json.loads((tmp_path / "wrecked" / "result.json").read_text())
    assert record["diverged"] is True and record == diverged.value.divergence.model_dump()
    assert record["uniform_loss"] == pytest.approx(math.log(512))
    assert record["loss"] > record["uniform_loss"] > record["first_loss"]
    assert record["step"] >= 11  # the first step, then 10 above ln(512)


PLANTED = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "plantedSecretAccessKey0001",
    "AWS_SESSION_TOKEN": "plantedSessionToken0001",
    "HF_TOKEN": "hf_plantedHubToken0001",
    "RAYCL_DB_PASSWORD": "plantedDbPassword0001",
}


def test_no_planted_credential_in_any_file_a_sweep_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    space["fixed"] = TINY | {"model": {"name": "raycl-tiny-s"}}
    space["budget"] |= {"trials": 2}
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    ray_temp_dirs = []
    # Ray's temp dir is deleted at shutdown: kept here to be searched, as a SIGKILLed driver would leave it.
    monkeypatch.setattr(ray_session, "_stop_local_ray", lambda temp_dir, out_dir: ray_temp_dirs.append(Path(temp_dir)))
    try:
        outcome = run_sweep(path, out_root=tmp_path / "runs", num_cpus=2)
        assert outcome.completed == 2, outcome.failures
        searched = [tmp_path / "runs", *ray_temp_dirs]
        files = [file for root in searched for file in root.rglob("*") if file.is_file()]
        assert any(file.name.startswith("runtime_env") for file in files)  # Ray's logs were there to search
        leaks = [
            (str(file), name)
            for file in files
            for name, value in PLANTED.items()
            if value.encode() in file.read_bytes()
        ]
        assert leaks == []
    finally:
        for directory in ray_temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
