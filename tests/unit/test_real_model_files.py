"""Real models by name: where their GGUF file comes from, its SHA-256 check, and the one line when it is missing.
No download here: a fake wheel and a fake package stand in for the real ones."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from raycl.artifacts import real_models
from raycl.artifacts.hub import HubUnavailableError
from raycl.artifacts.real_models import PACKAGED, ModelNotFetchedError, PackagedModel, assemble_gguf, is_real_model

PARTS = (b"GGUF first half ", b"and second half")
FAKE = PackagedModel(
    name="fake-model",
    requirements=("fake-model==1.0",),
    members=("fake_model_part1/data/m.gguf.part00", "fake_model_part2/data/m.gguf.part01"),
    sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
    license="none",
    description="a test double",
)


def write_wheels(directory: Path, parts: tuple[bytes, ...] = PARTS) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for member, data in zip(FAKE.members, parts):
        package = member.split("/")[0]
        with zipfile.ZipFile(directory / f"{package}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, data)


def test_short_names_and_gguf_paths_are_real_models() -> None:
    assert is_real_model("smollm2-135m-instruct") and is_real_model("gemma-3-270m")
    assert is_real_model("/models/tiny.gguf") and not is_real_model("raycl-tiny-s")
    assert all(len(model.sha256) == 64 for model in PACKAGED.values())


def test_a_missing_model_is_one_line_naming_the_command_that_gets_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFetchedError, match="run `raycl models get smollm2-135m-instruct`") as error:
        real_models.real_model_dir("smollm2-135m-instruct")
    assert "\n" not in str(error.value) and isinstance(error.value, HubUnavailableError)
    with pytest.raises(FileNotFoundError, match="model.name: no such GGUF file"):
        real_models.real_model_dir(str(tmp_path / "absent.gguf"))


def test_the_gguf_file_is_assembled_from_the_downloaded_wheels_and_checked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path / "cache"))
    write_wheels(real_models.downloads_dir())
    out = assemble_gguf(FAKE, tmp_path / "m.gguf")
    assert out.read_bytes() == b"".join(PARTS)


def test_a_gguf_file_whose_sha256_differs_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path / "cache"))
    write_wheels(real_models.downloads_dir(), (b"tampered", b"bytes"))
    with pytest.raises(ValueError, match="the assembled GGUF file has SHA-256"):
        assemble_gguf(FAKE, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_a_converted_directory_whose_weights_changed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    (tmp_path / real_models.MANIFEST).write_text(f'{{"weights_sha256": {{"model.safetensors": "{digest}"}}}}')
    assert real_models.verify_model_dir(tmp_path) == tmp_path
    real_models.verify_model_dir.cache_clear()
    (tmp_path / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="SHA-256 differs from the one recorded at conversion"):
        real_models.verify_model_dir(tmp_path)
