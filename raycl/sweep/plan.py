"""Resource plan of a sweep: what each trial reserves, so trials never deadlock on a small cluster.

A trial runs either in its Tune actor (`tune` executor: the actor holds the worker's resources) or
as a Ray Train run wrapped by a Tune trial (`train`). A Tune trial that wraps a Ray Train run holds
its own resources while its worker group waits for more. With Tune's default of one CPU per trial,
two trials on two CPUs hold everything and their workers never start (a Train start-up timeout every
60 s, forever). So the trial function reserves a sliver (Ray rejects 0), the workers get the rest,
and `max_concurrent_trials` caps how many trials may hold a sliver at once. The worker share is sized
for the worst case, every sliver landing on the same node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from raycl.config.space import Budget

TRIAL_CPU = 0.01


@dataclass(frozen=True)
class NodeCapacity:
    node_id: str
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class ResourcePlan:
    executor: Literal["train", "tune"]
    executor_reason: str
    concurrency: int
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads_per_worker: int
    cluster_cpus: float
    cluster_gpus: float
    num_nodes: int
    notes: tuple[str, ...] = ()

    @property
    def trial_resources(self) -> dict[str, float]:
        """What the Tune trial holds: the coordinator's sliver, or under `tune` the worker's whole share."""
        if self.executor == "train":
            return {"cpu": TRIAL_CPU}
        return {"cpu": self.cpus_per_worker} | ({"gpu": self.gpus_per_worker} if self.gpus_per_worker else {})

    @property
    def worker_resources(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return resources

    def describe(self, trials: int) -> str:
        lines = [
            (
                f"plan: {trials} trials, {self.concurrency} at a time, on {self.num_nodes} node(s) with "
                f"{self.cluster_cpus:g} CPUs / {self.cluster_gpus:g} GPUs"
            ),
            (
                f"  each trial: coordinator {TRIAL_CPU:g} CPU + {self.workers_per_trial} Train worker(s) x "
                f"({self.cpus_per_worker:g} CPU, {self.gpus_per_worker:g} "
                f"GPU, {self.threads_per_worker} torch thread(s))"
                if self.executor == "train"
                else f"  each trial: its Tune actor with {self.cpus_per_worker:g} CPU, {self.gpus_per_worker:g} GPU, "
                f"{self.threads_per_worker} torch thread(s)"
            ),
            f"  executor: {self.executor} ({self.executor_reason})",
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def _workers_that_fit(nodes: Sequence[NodeCapacity], slivers: float, cpus: float, gpus: float) -> int:
    total = 0
    for node in nodes:
        by_cpu = math.floor((node.cpus - slivers) / cpus + 1e-9)
        by_gpu = math.floor(node.gpus / gpus + 1e-9) if gpus else by_cpu
        total += max(0, min(by_cpu, by_gpu))
    return total


def _largest_worker_share(nodes: Sequence[NodeCapacity], concurrency: int, slivers: float, budget: Budget) -> float:
    """The largest CPU share <= the asked one at which `concurrency` trials' workers all fit (0 if none)."""
    needed = concurrency * budget.workers_per_trial
    # Whole hundredths of a CPU, counted as integers so the search never drifts.
    for hundredths in range(math.floor(budget.cpus_per_worker * 100 + 1e-9), 0, -1):
        if _workers_that_fit(nodes, slivers, hundredths / 100, budget.gpus_per_worker) >= needed:
            return hundredths / 100
    return 0.0


def plan_resources(budget: Budget, nodes: Sequence[NodeCapacity], *, elastic: bool = False) -> ResourcePlan:
    """Fit `budget` onto `nodes`: shave the trial slivers off the workers' share, lower concurrency if needed.

    A worker may lose at most the slivers of the concurrent trials; more than that lowers the
    concurrency instead. `elastic` (a cluster whose autoscaler adds nodes) keeps the asked
    resources when even one trial does not fit yet, since Ray waits for the new nodes.
    """
    notes: list[str] = []
    executor, reason = budget.resolved_executor()
    # Only a Train-wrapping trial holds a coordinator's sliver beside its workers.
    sliver = TRIAL_CPU if executor == "train" else 0.0
    cluster_cpus = sum(node.cpus for node in nodes)
    cluster_gpus = sum(node.gpus for node in nodes)
    concurrency = min(budget.concurrency, budget.trials)
    share = 0.0
    while concurrency >= 1:
        share = _largest_worker_share(nodes, concurrency, concurrency * sliver, budget)
        if share >= budget.cpus_per_worker - concurrency * sliver - 1e-9:
            break
        concurrency -= 1
    if concurrency < 1:
        asked = (
            f"{budget.workers_per_trial} worker(s) x ({budget.cpus_per_worker:g} CPU, {budget.gpus_per_worker:g} GPU)"
        )
        if not elastic:
            raise ValueError(
                f"budget: one trial needs {asked} but the cluster has {cluster_cpus:g} CPUs / {cluster_gpus:g} GPUs "
                f"on {len(nodes)} node(s); lower budget.cpus_per_worker / gpus_per_worker / workers_per_trial"
            )
        concurrency = min(budget.concurrency, budget.trials)
        share = budget.cpus_per_worker
        notes.append(f"the cluster cannot hold one trial ({asked}) yet: waiting for the autoscaler")
    elif concurrency < min(budget.concurrency, budget.trials):
        notes.append(f"concurrency lowered from {budget.concurrency} to {concurrency} to fit the cluster")
    return ResourcePlan(
        executor=executor,
        executor_reason=reason,
        concurrency=concurrency,
        workers_per_trial=budget.workers_per_trial,
        cpus_per_worker=share,
        gpus_per_worker=budget.gpus_per_worker,
        threads_per_worker=max(1, round(share)),
        cluster_cpus=cluster_cpus,
        cluster_gpus=cluster_gpus,
        num_nodes=len(nodes),
        notes=tuple(notes),
    )


def check_fits_locally(budget: Budget, cpus: int, gpus: int) -> None:
    """Raise plan_resources' one-line `ValueError` when not even one trial of `budget` fits a local Ray of
    `cpus` CPUs and `gpus` GPUs: found in a second, before any study, run or folder exists."""
    plan_resources(budget, [NodeCapacity("local", float(cpus), float(gpus))])
