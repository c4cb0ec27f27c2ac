"""Inputs in the wrong place get advice that fits: a broken model link, a source key beside `source:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from raycl.artifacts.hub import ModelFileError, load_model
from raycl.config import ConfigError
from raycl.config.trial import validate_config


def test_a_symlink_loop_or_a_dangling_link_as_the_model_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "gone").symlink_to(tmp_path / "nothing")
    with pytest.raises(ModelFileError, match="broken symbolic link .Too many levels of symbolic links") as loop:
        load_model(str(tmp_path / "a"))
    assert "HF_HUB_OFFLINE" not in str(loop.value)
    with pytest.raises(ModelFileError, match="broken symbolic link .No such file or directory"):
        load_model(str(tmp_path / "gone"))


def test_roles_beside_source_says_where_it_belongs() -> None:
    data = {"stream": {"source": {"path": "dialogs.jsonl"}, "roles": {"Alice": "user"}}}
    with pytest.raises(ConfigError) as misplaced:
        validate_config(data, source="trial.yaml")
    assert str(misplaced.value) == (
        "trial.yaml: stream.roles: a key of the source: move it under stream.source (stream.source.roles)"
    )
    moved = {"stream": {"source": {"path": "dialogs.jsonl", "roles": {"Alice": "user"}}}}
    stream = validate_config(moved, source="trial.yaml").stream
    assert stream is not None and stream.source.roles == {"Alice": "user"}
