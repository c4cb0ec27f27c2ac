"""The command line a new user discovers: lists, resolved configs, copies, overrides, help, ports."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import raycl
import raycl.sweep
from raycl.cli import SPACES, app
from raycl.config import TrialConfig, load_config
from raycl.config.reference import reference
from raycl.config.space import SHIPPED_DIR, load_space
from raycl.sweep.ui import choose_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
COMMANDS = [
    "run",
    "lr-range",
    "sweep",
    "validate",
    "eval",
    "report",
    "predict",
    "ui",
    "ls",
    "config show",
    "config cp",
    "config reference",
]


def invoke(*args: str) -> SimpleNamespace:
    result = CliRunner().invoke(app, list(args))
    return SimpleNamespace(code=result.exit_code, out=result.output)


def test_version_and_short_help() -> None:
    assert invoke("--version").out.strip() == f"raycl {raycl.__version__}"
    assert "Usage:" in invoke("-h").out and invoke("sweep", "-h").code == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_plain_value_names_not_python_types(command: str) -> None:
    text = invoke(*command.split(), "--help").out
    assert not re.search(r"<(bool|str|int|float|path|list\[)", text), text


def test_help_is_generated_from_what_the_code_knows() -> None:
    sweep = " ".join(invoke("sweep", "--help").out.split())
    assert all(name in sweep for name in SPACES)
    assert sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")) == SPACES
    assert "restart|single" in invoke("lr-range", "--help").out
    assert "spaces|models|tasks|metrics" in invoke("ls", "--help").out


def test_ls_spaces_lists_every_file_in_search_spaces() -> None:
    result = invoke("ls", "spaces")
    listed = [line.split()[0] for line in result.out.splitlines()[1:]]
    assert result.code == 0 and listed == sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml"))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("models", ["raycl-tiny-xs", "raycl-tiny-s", "raycl-tiny-m", "raycl-tiny-l", "raycl-tiny-xl"]),
        (
            "tasks",
            ["raycl_retention", "raycl_acquisition[_STAGE]", "raycl_arc_easy", "raycl_hellaswag", "raycl_lambada"],
        ),
        ("metrics", ["learning", "forgetting", "forgetting_fraction", "bench_TASK_delta"]),
    ],
)
def test_ls_lists_what_configs_may_name(kind: str, expected: list[str]) -> None:
    result = invoke("ls", kind)
    firsts = [line.split()[0] for line in result.out.splitlines()[1:] if line.strip()]
    assert result.code == 0 and all(name in firsts for name in expected), result.out
    if kind == "models":  # non-embedding parameters of the two smallest rungs, as the ladder counts them
        assert "6,736" in result.out and "20,904" in result.out


def test_ls_rejects_an_unknown_kind() -> None:
    result = invoke("ls", "datasets")
    assert result.code == 2 and "datasets" in result.out


def test_config_show_prints_the_resolved_defaults_and_overrides(tmp_path: Path) -> None:
    default = invoke("config", "show")
    assert default.code == 0 and TrialConfig.model_validate(yaml.safe_load(default.out)) == TrialConfig()
    space = yaml.safe_load(invoke("config", "show", "smoke", "budget.trials=2").out)
    assert space["budget"]["trials"] == 2 and space["budget"]["executor"] == "auto"  # a default filled in
    assert space["fixed"]["train"]["batch_size"] == TrialConfig().train.batch_size
    trial = tmp_path / "trial.yaml"
    trial.write_text("method: {name: lora}\n")
    shown = yaml.safe_load(invoke("config", "show", str(trial), "method.lora_rank=3").out)
    assert shown == load_config(trial, ["method.lora_rank=3"]).model_dump(mode="json")
    assert shown["method"]["lora_rank"] == 3


def test_config_cp_copies_a_space_to_edit_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "mine.yaml"
    assert invoke("config", "cp", "smoke", str(target)).code == 0
    assert target.read_text() == (SHIPPED_DIR / "smoke.yaml").read_text()
    assert load_space(target).budget == load_space("smoke").budget
    target.write_text("# mine\n")
    again = invoke("config", "cp", "smoke", str(target))
    assert again.code == 2 and "--force" in again.out and target.read_text() == "# mine\n"
    assert invoke("config", "cp", "smoke", str(tmp_path)).code == 0 and (tmp_path / "smoke.yaml").is_file()


def test_the_committed_reference_is_the_generated_one() -> None:
    assert (DOCS / "reference.md").read_text() == reference(), "regenerate: raycl config reference > docs/reference.md"
    assert invoke("config", "reference").out == reference()


def test_reference_names_every_trial_and_space_key() -> None:
    text = reference()
    for key in (
        "`train.lr`",
        "`method.lora_rank`",
        "`method.galore_rank`",
        "`replay.ratio`",
        "`budget.trials`",
        "`sampler.n_startup_trials`",
        "`early_stopping.rungs`",
        "`eval.benchmarks.limit`",
        "`parameters.KEY.low`",
    ):
        assert key in text, key


def test_validate_names_every_problem_with_the_key_meant(tmp_path: Path) -> None:
    trial = tmp_path / "trial.yaml"
    trial.write_text("method: {name: lora, lora_rnak: 8}\ntrain: {lrr: 0.1}\n")
    result = invoke("validate", str(trial))
    assert result.code == 2
    assert result.out.splitlines() == [
        f"error: {trial}: method.lora_rnak: not used by a lora method (did you mean lora_rank?)",
        f"error: {trial}: train.lrr: unknown key (did you mean lr?)",
    ]


def test_validate_suggests_close_values_and_space_keys(tmp_path: Path) -> None:
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    space["budgett"] = space.pop("budget")
    space["parameters"]["method.name"]["choices"] = ["full", "galor"]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    lines = invoke("validate", str(path)).out.splitlines()
    assert f"error: {path}: budgett: unknown key (did you mean budget?)" in lines
    method = tmp_path / "method.yaml"
    method.write_text("method: {name: loar}\n")
    assert "(did you mean lora?)" in invoke("validate", str(method)).out


def test_validate_checks_the_data_files_a_space_names(tmp_path: Path) -> None:
    space = yaml.safe_load((SHIPPED_DIR / "smoke.yaml").read_text())
    space["fixed"]["eval"]["benchmarks"] |= {
        "tasks": ["raycl_retention", "raycl_arc_easy"],
        "task_paths": {"raycl_arc_easy": str(tmp_path / "arc.jsonl")},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    result = invoke("validate", str(path))
    assert result.code == 2 and f"no such file {tmp_path / 'arc.jsonl'}" in result.out


def test_piped_output_breaks_no_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-folder-name-" * 8) / "trial.yaml"
    deep.parent.mkdir(parents=True)
    deep.write_text("train: {lrr: 0.1}\n")
    lines = invoke("validate", str(deep)).out.splitlines()
    assert lines == [f"error: {deep}: train.lrr: unknown key (did you mean lr?)"]


@pytest.fixture
def fake_sweep(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """run_sweep replaced by a recorder of its arguments (the CLI's own logic is under test)."""
    calls: list[dict] = []

    def run_sweep(name, **kwargs):
        calls.append({"name": name} | kwargs)
        return SimpleNamespace(completed=1, failed=0, unfinished=0)

    monkeypatch.setattr(raycl.sweep, "run_sweep", run_sweep)
    return calls


def test_sweep_passes_overrides_and_says_what_to_do_next(fake_sweep: list[dict], tmp_path: Path) -> None:
    result = invoke("sweep", "smoke", "budget.trials=2", "--out-root", str(tmp_path))
    assert result.code == 0
    assert (fake_sweep[0]["overrides"], fake_sweep[0]["sweep_name"]) == (["budget.trials=2"], "smoke")
    assert result.out.strip().splitlines()[-1].startswith(f"next: `raycl report smoke --out-root {tmp_path}`")
    assert f"`raycl ui smoke --out-root {tmp_path}`" in result.out


def test_sweep_new_and_name_pick_a_fresh_study(fake_sweep: list[dict], tmp_path: Path) -> None:
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke-2").mkdir()
    assert invoke("sweep", "smoke", "--new", "--out-root", str(tmp_path)).code == 0
    assert invoke("sweep", "smoke", "--name", "mine", "--out-root", str(tmp_path)).code == 0
    assert [call["sweep_name"] for call in fake_sweep] == ["smoke-3", "mine"]
    assert invoke("sweep", "smoke", "--new", "--resume").code == 2


def test_a_malformed_override_is_refused_like_the_file() -> None:
    result = invoke("sweep", "smoke", "budget.trials=0")
    assert result.code == 2
    assert "(with budget.trials=0): budget.trials: Input should be greater than or equal to 1" in result.out
    assert "did you mean budget?" in invoke("sweep", "smoke", "budgt.trials=2").out


def test_run_takes_one_config_and_overrides_checked_before_training(tmp_path: Path) -> None:
    result = invoke("run", "train.lrr=0.01", "--out", str(tmp_path / "out"))
    assert result.code == 2
    assert "the default trial (with train.lrr=0.01): train.lrr: unknown key (did you mean lr?)" in result.out
    assert invoke("run", "a.yaml", "b.yaml").code == 2
    assert not (tmp_path / "out").exists()


def test_a_rerun_of_a_space_under_another_name_is_its_own_study() -> None:
    space = load_space("smoke", ["budget.trials=2", "fixed.train.lr=0.01"], name="smoke-2")
    assert (space.name, space.budget.trials, space.fixed.train.lr) == ("smoke-2", 2, 0.01)
    assert yaml.safe_load(space.text)["budget"]["trials"] == 2  # the copy logged on the parent run


def busy_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_ui_refuses_a_busy_port_in_one_line_within_seconds(tmp_path: Path) -> None:
    with busy_port() as listener:
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = invoke("ui", "smoke", "--out-root", str(tmp_path), "--mlflow-port", str(port))
        assert time.monotonic() - started < 5
    assert result.code == 2
    expected = f"error: port {port} on 127.0.0.1 is in use (another server?); choose another with --mlflow-port PORT"
    assert result.out.splitlines() == [expected]


def test_a_busy_default_port_moves_to_the_next_free_one() -> None:
    with busy_port() as listener:
        port = listener.getsockname()[1]
        chosen, note = choose_port("127.0.0.1", None, port, "--mlflow-port")
    assert chosen > port and note == f"port {port} is in use; serving on {chosen} (--mlflow-port picks one)"


def test_the_readme_shows_the_smoke_space_as_shipped(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(description: .*?)```", (ROOT / "README.md").read_text(), re.DOTALL)[1]
    shown = tmp_path / "smoke.yaml"
    shown.write_text(block)
    assert load_space(shown).model_dump() == load_space("smoke").model_dump()


def test_every_raycl_command_in_the_readme_parses() -> None:
    """Each `raycl ...` line of the README's code blocks names a real command and options it takes."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("raycl ")]
    commands = [line.split("#")[0].split() for line in lines]
    assert len(commands) >= 10
    for words in commands:
        result = invoke(*words[1:], "--help")
        assert result.code == 0, words
        assert all(word in result.out for word in words[1:] if word.startswith("--")), words
