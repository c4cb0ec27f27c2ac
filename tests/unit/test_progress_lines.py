"""Trial progress off a terminal: the line each evaluation prints; and the dtype and threads a trial resolves."""

from __future__ import annotations

import torch

from raycl.config.result import EvalRecord
from raycl.training import parts
from raycl.training.parts import LARGE_MODEL_PARAMS, resolve_dtype, resolve_threads
from raycl.training.trial import ProgressLines, TrialProgress, duration


def test_duration_reads_as_hours_minutes_or_seconds() -> None:
    assert [duration(s) for s in (7, 125, 3720)] == ["7s", "2m05s", "1h02m"]


def test_a_stage_end_line_has_step_losses_tokens_per_second_and_an_eta() -> None:
    lines = ProgressLines(total_steps=40, first_step=0, enabled=True)
    lines.started -= 100.0  # 100 s into the run
    progress = TrialProgress(config={}, step=10, train_tokens=5000, train_time_s=50.0)
    record = EvalRecord(stage=1, step=10, new_loss=2.5, base_loss=3.6, full_eval=True, learning=0.2, forgetting=-0.05)
    line = lines.line(record, progress, "stage 1/4 medquad done", train_loss=2.41)
    assert line.startswith("step 10/40 stage 1/4 medquad done, train loss 2.410, new loss 2.500, base loss 3.600")
    assert "learning 0.200, forgetting -0.050" in line
    assert "100 tokens/s" in line
    # 10 steps took 100 s: 30 steps are left.
    assert "ETA 5m00s" in line


def test_lines_are_silent_when_disabled(capsys) -> None:
    lines = ProgressLines(total_steps=1, first_step=0, enabled=False)
    lines.say(EvalRecord(stage=0, step=0, new_loss=1.0, base_loss=1.0, full_eval=False), TrialProgress(config={}), "x")
    assert capsys.readouterr().out == ""


def test_dtype_and_threads_follow_the_model_size(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(parts, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_dtype("auto", cpu, LARGE_MODEL_PARAMS) == torch.bfloat16
    assert resolve_dtype("auto", cpu, 1_000_000) == torch.float32
    assert resolve_dtype("auto", cuda, 1_000_000) == torch.bfloat16
    assert resolve_dtype("fp32", cuda, LARGE_MODEL_PARAMS) == torch.float32
    monkeypatch.setattr(parts, "cpu_has_bf16", lambda: False)
    assert resolve_dtype("auto", cpu, LARGE_MODEL_PARAMS) == torch.float32
    assert resolve_dtype("bf16", cpu, 1_000_000) == torch.bfloat16
    assert resolve_threads(None, 1_000_000) == 1
    assert resolve_threads(None, LARGE_MODEL_PARAMS) == 3
    assert resolve_threads(2, 1_000_000) == 2
    # Without OMP_NUM_THREADS: the CPUs this process may use, less those other processes keep busy.
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(parts.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(parts.os, "getloadavg", lambda: (0.9, 0.0, 0.0))  # no core in full use
    assert resolve_threads(None, LARGE_MODEL_PARAMS) == 2
    monkeypatch.setattr(parts.os, "getloadavg", lambda: (4.6, 0.0, 0.0))
    assert resolve_threads(None, LARGE_MODEL_PARAMS) == 1
