"""Where built artifacts live, and how two processes avoid building the same one twice."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock


def cache_root() -> Path:
    """`$RAYCL_CACHE`, else `~/.cache/raycl`."""
    return Path(os.environ.get("RAYCL_CACHE", Path.home() / ".cache" / "raycl")).expanduser()


def fingerprint(spec: dict[str, Any]) -> str:
    """A short stable hash of everything that defines an artifact."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_entry(kind: str, spec: dict[str, Any]) -> Path:
    """Where the artifact `spec` lives once built."""
    return cache_root() / kind / fingerprint(spec)


def cached_build(kind: str, spec: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """The directory of the artifact `spec`, calling `build(tmp_dir)` once if it is missing.

    A file lock makes concurrent trials wait for one builder; the build goes to a temporary
    directory renamed into place, so a crash never leaves a half-built artifact behind.
    """
    target = cache_entry(kind, spec)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return target
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
        build(tmp)
        tmp.rename(target)
    return target
