"""`raycl validate` on trial configs: keys, then every data file's first rows, before any model loads."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raycl.cli import app
from raycl.config import TrialConfig, validate_config
from raycl.data.check import original_note

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def write_data(directory: Path) -> dict[str, Path]:
    """A speaker-named chat file (gzipped), an original corpus, a benchmark file and a task directory."""
    directory.mkdir(parents=True, exist_ok=True)
    chats = directory / "dialogs.jsonl.gz"
    rows = [
        {"conversation": [{"role": "Ann", "content": f"Hi {i}"}, {"role": "Ben", "content": f"Hello {i}"}]}
        for i in range(30)
    ]
    with gzip.open(chats, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    original = directory / "original"
    original.mkdir()
    (original / "speeches.txt").write_text("".join(f"Speech line {i}.\n" for i in range(100)))
    arc = directory / "arc.jsonl"
    arc.write_text(json.dumps({"query": "Question: Why?", "choices": ["a", "b"], "gold": 0}) + "\n")
    tasks = directory / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\n")
    return {"chats": chats, "original": original, "arc": arc, "tasks": tasks}


ROLES = {"Ann": "user", "Ben": "assistant"}


def trial_yaml(path: Path, data: dict[str, Path], roles: dict | None = ROLES) -> Path:
    source = {"path": str(data["chats"])} | ({"roles": roles} if roles else {})
    config = {
        "stream": {"source": source, "shape": {"stages": 2}, "original": {"paths": [str(data["original"])]}},
        "eval": {
            "benchmarks": {
                "tasks": ["raycl_retention", "arc2", "mine"],
                "task_paths": {"arc2": {"template": "raycl_arc_easy", "path": str(data["arc"])}},
                "include_path": str(data["tasks"]),
            }
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_trial_config_is_validated_with_the_first_rows_of_each_data_file(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    trial = trial_yaml(tmp_path / "trial.yaml", data)
    result = CliRunner().invoke(app, ["validate", str(trial)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"ok {trial} (trial config)"
    assert lines[1] == f"  stream.source: {data['chats']} (messages): 20 examples, 40 turns from 20 rows"
    assert lines[2].startswith(f"  stream.original: {data['original'] / 'speeches.txt'} (text): ")
    assert lines[3] == f"  eval.benchmarks.task_paths.arc2: {data['arc']} (template raycl_arc_easy)"
    assert lines[4] == f"  eval.benchmarks.include_path: {data['tasks']}"
    assert lines[5].startswith(
        "note: model raycl-tiny-s was pretrained on the offline world's base corpus, not on stream.original"
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda data: data["chats"].unlink(), "stream.source: {chats}: no such file"),
        (lambda data: data["arc"].write_text("query,choices\n"), "task_paths.arc2: {arc}: line 1: unparseable JSON"),
        (lambda data: (data["original"] / "speeches.txt").unlink(), "stream.original: {original}: no .jsonl/.json/"),
    ],
    ids=["missing source", "unparseable benchmark file", "empty original directory"],
)
def test_a_bad_data_file_fails_validation_in_one_line(tmp_path: Path, edit, expected: str) -> None:
    data = write_data(tmp_path / "data")
    trial = trial_yaml(tmp_path / "trial.yaml", data)
    edit(data)
    result = CliRunner().invoke(app, ["validate", str(trial)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"error: {trial}: {expected.format(**data)}")


def test_speaker_names_without_roles_fail_validation_naming_file_line_and_role(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    trial = trial_yaml(tmp_path / "trial.yaml", data, roles=None)
    result = CliRunner().invoke(app, ["validate", str(trial)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(
        f"error: {trial}: stream.source: {data['chats']}: line 1: unknown role 'Ann'; map speakers"
    )


def test_validation_takes_a_second_and_loads_no_model_code(tmp_path: Path) -> None:
    trial = trial_yaml(tmp_path / "trial.yaml", write_data(tmp_path / "data"))
    script = (
        "import sys; from typer.testing import CliRunner; from raycl.cli import app; "
        f"result = CliRunner().invoke(app, ['validate', {str(trial)!r}]); print(result.exit_code); "
        "print(sorted(m for m in ('torch', 'transformers', 'lm_eval', 'datasets', 'ray') if m in sys.modules))"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert done.stdout.split("\n")[:2] == ["0", "[]"], done.stdout + done.stderr
    assert elapsed < 5.0  # about a second on a quiet 2-core machine, interpreter start included


def test_a_stream_trial_with_default_settings_validates_without_the_world_stage_probes() -> None:
    config = validate_config({"stream": {"source": {"path": "chats.jsonl"}}}, source="trial.yaml")
    assert config.eval.benchmarks.tasks == ("raycl_retention",)
    assert TrialConfig().eval.benchmarks.tasks == ("raycl_retention", "raycl_acquisition")
    with pytest.raises(ValueError, match="trial.yaml: eval.benchmarks.tasks: the raycl_acquisition probes"):
        validate_config(
            {"stream": {"source": {"path": "c.jsonl"}}, "eval": {"benchmarks": {"tasks": ["raycl_acquisition"]}}},
            "trial.yaml",
        )


def test_the_guide_trial_config_example_validates() -> None:
    block = re.search(r"```yaml\n(world: .*?)```", GUIDE.read_text(), re.DOTALL)[1]
    config = validate_config(yaml.safe_load(block), source="docs/guide.md")
    assert config.stream is not None and config.method.name == "galore"


def test_a_base_model_not_pretrained_on_the_probed_corpus_is_said_so() -> None:
    stream = {"source": {"path": "chats.jsonl"}}
    assert original_note(TrialConfig()) is None
    assert (
        original_note(validate_config({"stream": stream}, "t")) is None
    )  # the world's corpus, the ladder's pretraining data
    with_original = validate_config({"stream": stream | {"original": {"paths": ["docs"]}}}, "t")
    assert "raycl-tiny-s was pretrained on the offline world's base corpus, not on stream.original" in original_note(
        with_original
    )
    hub_model = validate_config({"model": {"name": "EleutherAI/pythia-70m"}, "stream": stream}, "t")
    assert original_note(hub_model).startswith(
        "model EleutherAI/pythia-70m was not pretrained on the offline world's base corpus"
    )
    hub_with_original = validate_config(
        {"model": {"name": "EleutherAI/pythia-70m"}, "stream": stream | {"original": {"paths": ["d"]}}}, "t"
    )
    assert original_note(hub_with_original) is None
