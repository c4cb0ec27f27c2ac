"""Fixtures shared by every test: one offline-world cache per session, one torch thread, local Ray clusters of
several nodes, the GPU marker's skip, and the rule that slow tests live in tests/integration/ and only there."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def raycl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RAYCL_CACHE for the whole session, so the world and base models are built once and shared.

    Set RAYCL_TEST_CACHE to a directory to keep the cache between sessions (it is never deleted).
    Ray workers started by the tests inherit the variable.
    """
    path = Path(os.environ.get("RAYCL_TEST_CACHE") or tmp_path_factory.mktemp("raycl-cache"))
    previous = os.environ.get("RAYCL_CACHE")
    os.environ["RAYCL_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RAYCL_CACHE", None)
    else:
        os.environ["RAYCL_CACHE"] = previous


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    """Tiny models run fastest on one thread; two on a shared 2-core box ran many times slower
    (oversubscribed threads slowed runs 3-30x). Trials set their own `train.cpu_threads`; this covers
    code the tests drive directly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def start_cluster() -> Iterator[Callable[..., Any]]:
    """`start_cluster(head, *nodes)`: a Ray cluster of several nodes on this machine (`ray.cluster_utils.Cluster`),
    each node's resources as `add_node` keywords, shut down after the module. It runs in a private, short temp
    dir: Unix socket paths stay short, and the address file it writes is not the one other Ray users read."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rcl-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    clusters: list[Any] = []

    def start(head: dict[str, Any], *nodes: dict[str, Any]) -> Any:
        cluster = Cluster(initialize_head=True, head_node_args=head | {"include_dashboard": False})
        clusters.append(cluster)
        for node in nodes:
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp_dir, ignore_errors=True)


SLOW_FOLDER = Path(__file__).parent / "integration"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked, in any stage
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid
        for item in items
        if (item.get_closest_marker("slow") is not None) != item.path.is_relative_to(SLOW_FOLDER)
    ]
    if misplaced:
        raise pytest.UsageError(
            "slow tests live in tests/integration/ and only there (module-level `pytestmark = pytest.mark.slow`); "
            f"these disagree: {', '.join(misplaced)}"
        )
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch  # only when a GPU test was collected: importing torch costs seconds

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)
