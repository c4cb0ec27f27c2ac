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


# Ray Tune copies these from the driver's environment into every trial actor's runtime env, and Ray writes
# runtime envs in clear to runtime_env_agent.log in its session folder.
TUNE_FORWARDED_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def stop_tune_forwarding_credentials() -> list[str]:
    """Take the credential variables out of the set Ray Tune forwards to its trial actors; returns the names taken.

    Public API: none. Tune builds its actors' `ray.remote(runtime_env=...)` itself from the module-level set
    `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`, with no option to leave variables out. Unsetting them
    in the driver around `Tuner.fit` would also take them from the driver's own access to `--ray-storage s3://`.
    Nothing is lost: a local Ray's workers inherit the driver's environment, a cluster's nodes hold their own.
    """
    from ray.tune.execution import class_cache

    forwarded = class_cache.ENV_VARS_TO_PROPAGATE
    taken = sorted(forwarded & set(TUNE_FORWARDED_CREDENTIALS))
    forwarded.difference_update(taken)
    return taken


def orphaned_placement_groups() -> list[Any]:
    """The placement groups this job's actors created and outlived: creator actor dead, not yet removed.

    Public API: none. `ray.util.placement_group_table()` leaves out who created a group; GCS's own record
    (`PlacementGroupTableData`, read through Ray's global state accessor) says it. GCS removes such a group
    itself only once its job is dead too, and Ray Train's PlacementGroupCleaner decides through the state
    API, which a Ray started without its dashboard does not serve. A group the driver created has no creator
    actor (its id is nil, and GCS marks it creator-dead from the start), so Tune's own trial groups are never
    among these.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    table_data = gcs_pb2.PlacementGroupTableData  # pyright: ignore[reportAttributeAccessIssue] (generated protobuf)
    job_id = ray.get_runtime_context().get_job_id()
    accessor = state._connect_and_get_accessor()
    orphans = []
    for serialized in accessor.get_placement_group_table():
        record = table_data.FromString(serialized)
        created_by_an_actor = not ray.ActorID(record.creator_actor_id).is_nil() and not record.is_detached
        if (
            created_by_an_actor
            and record.creator_actor_dead
            and record.creator_job_id.hex() == job_id
            and record.state != table_data.REMOVED
        ):
            orphans.append(PlacementGroup(ray.PlacementGroupID(record.placement_group_id)))
    return orphans
