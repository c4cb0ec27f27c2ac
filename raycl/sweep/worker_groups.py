"""What the `train` executor's worker groups leave when Tune ends a trial, and the gate that holds them at stage ends.

Tune ends a stopped, failed or killed Train trial by ending its actor; the Train controller that actor owns dies
with it, and the workers the controller owns with that. The worker group's placement group does not: it belongs
to the job, and GCS removes it only once the job is dead too, so the next trial's workers wait forever for its
CPUs and GPUs. Ray Train's own remover (a detached PlacementGroupCleaner) asks the state API whether the
controller lives, and removes nothing when that API is not served, as on raycl's local Ray, which starts no
dashboard. raycl removes such groups itself: the driver reads GCS's placement group table (no dashboard, no
extra port, the same on a cluster) and removes every group of this job whose creator actor is dead. No trial
has to report its group first, so a trial whose actor was SIGKILLed before its first report is covered too;
a driver that dies takes the job, and so its groups, with it.

Under early stopping each worker also waits at a stage end until the driver's scheduler has ranked that stage:
a stopped trial's workers never start another stage; they wait until Tune ends the trial, which kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from ray.tune import Callback

from raycl.adapters import ray_internals
from raycl.config.result import EvalRecord

REAP_INTERVAL_S = 0.5
logger = logging.getLogger(__name__)


def remove_orphaned_placement_groups() -> list[str]:
    """Remove the placement groups of this job whose creator actor is dead; returns their ids."""
    from ray.util import remove_placement_group

    removed = []
    for group in ray_internals.orphaned_placement_groups():
        remove_placement_group(group)  # also kills any actor still running in it
        removed.append(group.id.hex())
    return removed


@contextlib.contextmanager
def orphaned_placement_groups_removed(interval_s: float = REAP_INTERVAL_S) -> Iterator[list[str]]:
    """During the block, every `interval_s` and once more at its end, the orphaned placement groups are removed;
    yields the list of removed ids, filled as it goes."""
    removed: list[str] = []
    stop = threading.Event()

    def reap() -> None:
        with contextlib.suppress(Exception):  # Ray may be shutting down under us (Ctrl-C)
            removed.extend(remove_orphaned_placement_groups())

    def loop() -> None:
        while not stop.wait(interval_s):
            reap()

    thread = threading.Thread(target=loop, name="raycl-placement-group-reaper", daemon=True)
    thread.start()
    try:
        yield removed
    finally:
        stop.set()
        thread.join()
        reap()
        if removed:
            logger.info("removed %d placement group(s) of ended Train trials: %s", len(removed), ", ".join(removed))


def placement_groups_in_use() -> list[str]:
    """The ids of the placement groups that still hold resources (state CREATED) on the connected Ray."""
    from ray.util import placement_group_table

    return [group_id for group_id, group in placement_group_table().items() if group["state"] == "CREATED"]


class StageGate:
    """A driver-owned Ray actor holding the driver's decision on each trial's stage ends: go on, or stop."""

    def __init__(self) -> None:
        self._decided: dict[tuple[str, int], asyncio.Event] = {}
        self._go: dict[tuple[str, int], bool] = {}

    def _event(self, key: str, stage: int) -> asyncio.Event:
        return self._decided.setdefault((key, stage), asyncio.Event())

    async def decide(self, key: str, stage: int, go: bool) -> None:
        self._go[(key, stage)] = go
        self._event(key, stage).set()

    async def wait(self, key: str, stage: int) -> bool:
        """Whether trial `key` may go on after `stage`, once the driver has said."""
        await self._event(key, stage).wait()
        return self._go[(key, stage)]


def start_stage_gate() -> Any:
    """A new StageGate actor (no resources), owned by this driver, so it ends with it."""
    import ray

    return ray.remote(num_cpus=0)(StageGate).remote()


def wait_at_stage_end(gate: Any, key: str, stage: int) -> None:
    """Return once the driver lets trial `key` go on after `stage`; a stopped trial's worker blocks here until
    Tune ends the trial (and its placement group's removal ends this process)."""
    import ray

    if not ray.get(gate.wait.remote(key, stage)):
        threading.Event().wait()


class StageDecisions(Callback):
    """Tells the gate the scheduler's decision on every stage end a trial reports (Tune calls its callbacks after
    the scheduler has decided, before it stops the trial); `stopped` is the scheduler's record of stopped trials."""

    def __init__(self, gate: Any, stopped: dict[str, Any]) -> None:
        self.gate = gate
        self.stopped = stopped

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = EvalRecord.in_report(result)
        if record is not None and record.full_eval:
            key = trial.config["key"]
            self.gate.decide.remote(key, record.stage, key not in self.stopped)
