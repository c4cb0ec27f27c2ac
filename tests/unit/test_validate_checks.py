"""`raycl validate` runs `raycl run`'s data checks on the rows it reads: malformed share, stages, task names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raycl.cli import app
from raycl.config import validate_config
from raycl.data.check import _wilson_low, check_data
from raycl.data.formats import DataError

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def chats(path: Path, good: int, bad: int) -> Path:
    """`good` well-formed conversations, then `bad` rows without an assistant turn, interleaved."""
    rows = [GOOD] * good + [{"messages": [{"role": "user", "content": "Hi"}]}] * bad
    rows = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (i % 3, i))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def trial(source: Path, **extra) -> dict:
    return {"stream": {"source": {"path": str(source)}, "shape": {"stages": 2}}, **extra}


def test_a_sample_mostly_malformed_fails_as_the_run_would(tmp_path: Path) -> None:
    config = validate_config(trial(chats(tmp_path / "bad.jsonl", good=30, bad=70)), "trial.yaml")
    with pytest.raises(DataError) as refused:
        check_data(config)
    message = str(refused.value)
    assert message.startswith(f"stream.source: {tmp_path / 'bad.jsonl'}: line ") and "no assistant turn" in message
    assert "of the first 20 rows malformed" in message and "max_bad_fraction 5.0%" in message


def test_a_few_malformed_rows_in_a_sample_are_a_note_not_a_failure(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "Hi"}]}
    path = tmp_path / "some.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [GOOD] * 9 + [bad] + [GOOD] * 9 + [bad] + [GOOD] * 80))
    lines = check_data(validate_config(trial(path), "trial.yaml"))
    assert lines[0].startswith("stream.source:") and len(lines) == 2
    assert "2 of the first 20 rows malformed (10%, above max_bad_fraction 5.0%): the run may stop (line 10:" in lines[1]
    assert _wilson_low(15, 20) > 0.5 and _wilson_low(2, 20) < 0.05


def test_the_whole_file_read_is_judged_exactly_and_split_into_its_stages(tmp_path: Path) -> None:
    one_row = chats(tmp_path / "one.jsonl", good=1, bad=0)
    with pytest.raises(DataError, match=r"stream\.source: .*one\.jsonl: stages: 2 stages from 1 examples"):
        check_data(validate_config(trial(one_row), "trial.yaml"))
    with pytest.raises(DataError, match=r"3 of 10 rows malformed \(30\.0%\), more than max_bad_fraction 5\.0%"):
        check_data(validate_config(trial(chats(tmp_path / "ten.jsonl", good=7, bad=3)), "trial.yaml"))
    check_data(validate_config(trial(chats(tmp_path / "fine.jsonl", good=12, bad=0)), "trial.yaml"))


def test_a_task_missing_from_include_path_is_named(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: my_probe\ndataset_path: json\nprocess_docs: !function utils.process\n")
    data = chats(tmp_path / "fine.jsonl", good=12, bad=0)
    benchmarks = {"tasks": ["raycl_retention", "my_prob"], "include_path": str(tasks)}
    config = validate_config(trial(data, eval={"benchmarks": benchmarks}), "trial.yaml")
    expected = r"eval\.benchmarks\.tasks: my_prob is not defined in include_path .* \(its tasks: my_probe\)"
    with pytest.raises(DataError, match=expected):
        check_data(config)
    fixed = validate_config(trial(data, eval={"benchmarks": benchmarks | {"tasks": ["my_probe"]}}), "trial.yaml")
    assert check_data(fixed)[-1] == f"eval.benchmarks.include_path: {tasks}"


def test_validate_exits_2_in_one_line(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(trial(chats(tmp_path / "bad.jsonl", good=5, bad=15))))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "malformed" in result.output
