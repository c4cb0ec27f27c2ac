"""lm-eval benchmarks on a model in memory: inside a trial, or a saved checkpoint exported by `raycl.reporting`.

A *task directory* holds lm-eval task YAMLs with absolute `data_files` paths: the offline world's
multiple-choice probes (`raycl.evaluation.probes`) and the packaged real-benchmark templates
(`tasks/*.yaml`) pointed at the data files the config names, each under the name the config gives
it. Both raycl and the `lm_eval` command line read it (`--include_path DIR`, beside the config's own
`include_path`), and score the same tokens: neither passes `add_bos_token`
(which would make lm-eval's rolling perplexity prepend a second BOS), and the world probes carry the
tokenizer's BOS in their text, since this world's tokenizer never adds one by itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from filelock import FileLock

from raycl.artifacts.cache import cache_root, fingerprint
from raycl.config.benchmarks import ACQUISITION, BenchmarkConfig
from raycl.data.benchmark_files import check_include_path, check_task_file
from raycl.evaluation.probes import acquisition_task, write_world_probes

if TYPE_CHECKING:  # torch, transformers and lm-eval load only when an evaluation runs
    import torch
    from lm_eval.tasks.manager import TaskDict
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from raycl.world.offline import World

TEMPLATES = Path(__file__).parent / "tasks"
PROBE_TEMPLATE = "raycl_probe"
# The score a template's tasks are known by (lm-eval's convention for HellaSwag is length-normalised accuracy).
PRIMARY_METRIC = {"raycl_hellaswag": "acc_norm"}
ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")


def _template(name: str) -> dict:
    return yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text())


def _write_task(out: Path, spec: dict, data_file: Path) -> None:
    # The datasets cache stays inside the task directory: one per trial, never in ~/.cache.
    spec["dataset_kwargs"] = {
        "data_files": {spec["test_split"]: str(data_file.resolve())},
        "cache_dir": str((out / ".datasets").resolve()),
    }
    (out / f"{spec['task']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def prepare_task_dir(
    world: World, config: BenchmarkConfig, out: Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Write the world's probes (data and YAMLs) and the configured real-benchmark YAMLs to `out`.

    `tokenizer` frames the probes' chats (default: the world's; pass the model's when it differs).
    """
    out = Path(out)
    stage_tasks = [acquisition_task(domain.name) for domain in world.text.stages]
    for task in config.tasks:
        if task.startswith(ACQUISITION + "_") and task not in stage_tasks:
            raise ValueError(f"tasks: {task} is not a stage of this world ({', '.join(stage_tasks)})")
    probes = write_world_probes(world, tokenizer or world.tokenizer, out, config.questions_per_entity)
    for task, data_file in probes.items():
        spec = {"task": task} | ({"tag": [ACQUISITION]} if task in stage_tasks else {}) | _template(PROBE_TEMPLATE)
        _write_task(out, spec, data_file)
    for task, spec in config.task_paths.items():
        _write_task(out, _template(spec.template) | {"task": task}, check_task_file(task, spec))
    return out


@functools.lru_cache(maxsize=8)
def _cached_tasks(
    include_paths: tuple[str, ...], yaml_stamp: tuple, include_defaults: bool, tasks: tuple[str, ...]
) -> TaskDict:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=list(include_paths), include_defaults=include_defaults)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        where = ["raycl's tasks", *include_paths[1:]] + ["lm-eval's own tasks"] * include_defaults
        raise ValueError(f"tasks: {unknown[0]} is not one of {', '.join(where)}")
    try:
        return manager.load(list(tasks))
    except (
        OSError
    ) as error:  # offline, `datasets` raises ConnectionError: "Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"
        raise ValueError(
            f"tasks: {', '.join(tasks)}: {str(error).splitlines()[0]}; raycl runs offline unless told otherwise: "
            "set HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 where the hub is reachable"
        ) from None


def _load_tasks(task_dir: Path, config: BenchmarkConfig) -> TaskDict:
    """lm-eval's tasks with their datasets, built once per task directory and kept while its YAMLs
    (and those of `include_path`) are unchanged (lm-eval builds the requests anew at every evaluation):
    building them was a tenth of a warm evaluation of the default probes, and indexing lm-eval's own
    tasks takes 11-17 s. An unknown task or an offline hub dataset is a one-line `ValueError`."""
    task_dir = Path(task_dir).resolve()
    paths, yamls = [task_dir], sorted(task_dir.glob("*.yaml"))
    if config.include_path is not None:
        paths.append(check_include_path(config.include_path))
        yamls += sorted(paths[-1].rglob("*.yaml"))  # lm-eval reads the whole tree
    stamp = tuple((str(path), path.stat().st_mtime_ns) for path in yamls)
    return _cached_tasks(tuple(map(str, paths)), stamp, config.include_defaults, config.tasks)


def shared_task_dir(world: World, config: BenchmarkConfig, tokenizer: PreTrainedTokenizerBase) -> Path:
    """The task directory of `config` for `world`, written once per machine under the cache and shared
    by every trial, so that lm-eval builds its tasks once per process rather than once per trial.

    Written in place (the YAMLs hold absolute paths into it) under a file lock, complete once its
    `.complete` marker exists; the key covers the world, the settings, the tokenizer and each data file.
    """
    from raycl.data.tokens import tokenizer_fingerprint  # torch: only once an evaluation is set up

    files = {
        task: [str(Path(spec.path).resolve()), *_stat(Path(spec.path))] for task, spec in config.task_paths.items()
    }
    spec = {
        "world": world.id,
        "benchmarks": config.model_dump(mode="json", include={"tasks", "task_paths", "questions_per_entity"}),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "files": files,
    }
    target = cache_root() / "benchmarks" / fingerprint(spec)
    complete = target / ".complete"
    if not complete.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not complete.exists():
                shutil.rmtree(target, ignore_errors=True)
                prepare_task_dir(world, config, target, tokenizer)
                complete.touch()
    return target


def _stat(path: Path) -> list[int]:
    """A data file's size and modification time (a missing file is reported by `prepare_task_dir`)."""
    stat = path.stat() if path.is_file() else None
    return [stat.st_size, stat.st_mtime_ns] if stat else [0, 0]


def load_harness(task_dir: Path, config: BenchmarkConfig) -> None:
    """Import lm-eval and build the tasks of `task_dir` once, ahead of the first evaluation: a
    one-time load (about a second) that belongs to a trial's setup, not to its evaluations."""
    import lm_eval.evaluator  # noqa: F401  (the import is the point)

    with _quiet_lm_eval():
        _load_tasks(Path(task_dir), config)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's info logs and progress bars off for the duration (a trial has its own progress)."""
    import datasets
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.models.huggingface
    from tqdm import tqdm

    logger = logging.getLogger("lm_eval")
    level, bars_were_on = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()

    def silent(*args, **kwargs):
        return tqdm(*args, **(kwargs | {"disable": True}))

    # lm-eval offers no switch for the bars of request building, so its `tqdm` is replaced here.
    with contextlib.ExitStack() as stack:
        for module in (lm_eval.api.model, lm_eval.api.task, lm_eval.models.huggingface):
            stack.callback(setattr, module, "tqdm", module.tqdm)
            # Each of them imports `tqdm`; pyright sees only `ModuleType` in the loop.
            module.tqdm = silent  # pyright: ignore[reportAttributeAccessIssue]
        try:
            yield
        finally:
            logger.setLevel(level)
            if bars_were_on:
                datasets.enable_progress_bars()


@functools.cache
def _hflm_class() -> type:
    """lm-eval's `HFLM`, encoding each distinct string once per evaluation: it encodes a
    multiple-choice context again with every choice, and encoding was 40% of an evaluation."""
    from lm_eval.models.huggingface import HFLM

    # lm-eval's untyped `register_model` decorator leaves pyright seeing HFLM as `type[LM]`, without `tok_encode`.
    class EncodeOnceHFLM(HFLM):
        def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs) -> list[int]:
            if kwargs:
                return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)  # pyright: ignore[reportAttributeAccessIssue]
            encoded = vars(self).setdefault("_encoded", {})
            key = (string, add_special_tokens, left_truncate_len)
            if key not in encoded:
                encoded[key] = super().tok_encode(string, add_special_tokens, left_truncate_len)  # pyright: ignore[reportAttributeAccessIssue]
            return list(encoded[key])

    return EncodeOnceHFLM


def _scores(results: Mapping[str, Any], config: BenchmarkConfig) -> dict[str, float]:
    """`{task: primary accuracy, "task/metric": other scores}` from lm-eval's results, plus the
    item-weighted mean of the per-stage tasks as `raycl_acquisition` when it was asked for."""
    templates = {task: spec.template for task, spec in config.task_paths.items()}
    scores: dict[str, float] = {}
    per_task: dict[str, dict[str, Any]] = results["results"]
    for task, metrics in per_task.items():
        values = {key.split(",")[0]: value for key, value in metrics.items() if "," in key and "_stderr" not in key}
        primary = PRIMARY_METRIC.get(templates.get(task, task)) or next(
            (m for m in ACCURACY_METRICS if m in values), None
        )
        if primary is not None:
            scores[task] = float(values[primary])
        scores |= {f"{task}/{m}": float(v) for m, v in values.items() if m != primary and isinstance(v, (int, float))}
    if ACQUISITION in config.tasks:
        counts = {
            task: n["effective"] for task, n in results["n-samples"].items() if task.startswith(ACQUISITION + "_")
        }
        total = sum(counts.values())
        scores[ACQUISITION] = sum(scores[task] * count for task, count in counts.items()) / total
    return scores


def run_benchmarks(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: BenchmarkConfig,
    task_dir: Path,
    limit: int | None = None,
    bf16: bool | None = None,
) -> dict[str, float]:
    """Score the in-memory `model` on `config.tasks` from `task_dir` (first `limit` examples each), under bf16
    autocast where `bf16` (None: on GPU only, as training's default).

    Returns `{task: accuracy}` (acc_norm for HellaSwag, acc otherwise), `raycl_acquisition` as the
    mean over stages, and other scores as `task/metric` (e.g. `raycl_lambada/perplexity`). The
    model's train/eval mode and the global random state are left as they were.
    """
    import torch
    from lm_eval.evaluator import evaluate
    from lm_eval.models.utils import resolve_max_length

    was_training, random_state = model.training, random.getstate()
    try:
        with _quiet_lm_eval():
            # lm-eval draws from Python's global random when it builds tasks (restored below, so a
            # trial's randomness does not depend on when it evaluates).
            loaded = _load_tasks(Path(task_dir), config)
            device = next(model.parameters()).device
            # A causal LM (or its peft wrapper) carries its config; `Module.__getattr__` types it `Tensor | Module`.
            model_config = cast("PretrainedConfig", model.config)
            hflm = _hflm_class()
            lm = hflm(
                pretrained=model,
                backend="causal",
                tokenizer=tokenizer,
                batch_size=config.batch_size,
                # Resolved once here, as lm-eval would, instead of twice per request.
                max_length=resolve_max_length(model_config, tokenizer, default=hflm._DEFAULT_MAX_LENGTH),
                # fp32 weights run under bf16 autocast where the trial trains in it.
                mixed_precision_dtype=torch.bfloat16 if (bf16 if bf16 is not None else device.type == "cuda") else None,
            )
            # `evaluate`, not `simple_evaluate`: the latter reseeds the global RNGs (the trial's),
            # and collects environment info through subprocesses on every call (seconds).
            results = evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0, log_samples=False)
    finally:
        model.train(was_training)
        random.setstate(random_state)
    assert results is not None  # `evaluate` returns None only on ranks other than 0 of a distributed lm
    return _scores(results, config)


def benchmark_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Accuracy change per task in points, `bench_<task>_delta = 100 * (after - before)`, and
    `bench_max_drop`: the largest fall among the retention-type tasks (not acquisition, which a
    stage is meant to raise), in points, 0 when none fell. Secondary `task/metric` scores are skipped.
    """
    tasks = [task for task in before if task in after and "/" not in task]
    deltas = {f"bench_{task}_delta": 100.0 * (after[task] - before[task]) for task in tasks}
    drops = [100.0 * (before[task] - after[task]) for task in tasks if not task.startswith(ACQUISITION)]
    return deltas | {"bench_max_drop": max([0.0, *drops])}
