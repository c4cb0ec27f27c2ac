"""A broken local model directory fails in one line that names the file and what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raycl.artifacts.hub import HubUnavailableError, ModelFileError, load_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    path = tmp_path_factory.mktemp("model") / "tiny"
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def broken_copy(model_dir: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "broken"
    copy.mkdir()
    for file in model_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    edit(copy)
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = {
    "corrupt config.json": (
        lambda d: (d / "config.json").write_text('{"model_type": "llama", "hidden_size": '),
        "config.json: not valid JSON",
    ),
    "config.json without model_type": (
        lambda d: (d / "config.json").write_text(json.dumps({"hidden_size": 16})),
        "config.json: no model_type key",
    ),
    "no config.json": (lambda d: (d / "config.json").unlink(), "config.json: no such file"),
    "truncated weights": (
        lambda d: truncate(d / "model.safetensors"),
        "model.safetensors: truncated or corrupt safetensors file",
    ),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "broken: no weights file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_model_directory_is_one_line_naming_the_file(model_dir: Path, tmp_path: Path, case: str) -> None:
    edit, expected = CASES[case]
    broken = broken_copy(model_dir, tmp_path, edit)
    with pytest.raises(ModelFileError) as caught:
        load_model(str(broken))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(broken)) and expected in message
    assert "local cache" not in message  # not mistaken for a missing hub model


def test_intact_directory_loads_and_a_missing_name_still_blames_the_hub(model_dir: Path, tmp_path: Path) -> None:
    assert load_model(str(model_dir)).config.hidden_size == 16
    with pytest.raises(HubUnavailableError, match="neither a local path nor in the local cache"):
        load_model(str(tmp_path / "not-there"))
