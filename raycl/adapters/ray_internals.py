"""Private Ray touches, each with the public API it stands in for and why that one does not serve."""

from __future__ import annotations

# Ray Tune copies these from the driver's environment into every trial actor's runtime env, and Ray writes
# runtime envs in clear to runtime_env_agent.log in its session folder.
TUNE_FORWARDED_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def stop_tune_forwarding_credentials() -> list[str]:
    """Take the credential variables out of the set Ray Tune forwards to its trial actors (in
    `ray.tune.execution.class_cache`); returns the names taken out.

    Stands in for `ray.remote(runtime_env=...)`, which Tune calls for its actors itself with no option to
    leave variables out. The public way around it, unsetting them in the driver around `Tuner.fit`, would also
    take them from the driver's own access to `--ray-storage s3://...`. Nothing is lost by leaving them out: a
    local Ray's workers inherit the driver's environment, and a cluster's nodes hold their own credentials.
    """
    from ray.tune.execution import class_cache

    forwarded = class_cache.ENV_VARS_TO_PROPAGATE
    taken = sorted(forwarded & set(TUNE_FORWARDED_CREDENTIALS))
    forwarded.difference_update(taken)
    return taken
