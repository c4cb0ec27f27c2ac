"""Ray internals used by raycl's local Ray session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def init_local(temp_dir: str, **options: Any) -> None:
    """Start a local Ray whose session files (sockets, logs) live under `temp_dir`.

    Public API: `ray start --temp-dir` on the command line; `ray.init` has none, and Ray's docs name its
    private `_temp_dir` argument for this. A temp dir of our own keeps Unix socket paths short and keeps
    another process's bare `ray.init()` from attaching to this sweep's Ray.
    """
    import ray

    ray.init(address="local", _temp_dir=temp_dir, **options)


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Inside the block, a Ray started here binds every process to 127.0.0.1.

    Public API: none. Ray turns a 127.0.0.1 node address into the machine's public one unless it thinks
    clusters unsupported (as on macOS), a flag it reads from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import
    into `ray._private.ray_constants.ENABLE_RAY_CLUSTER`; so the flag is set in this process and the
    variable for the processes Ray starts, both restored on the way out.
    """
    from ray._private import ray_constants

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_value, saved_flag = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[variable] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved_value
