"""The ladder of tiny Llama-style base models, pretrained from scratch on the world's base corpus.

Two axes: model size (the rungs of `LADDER`, 6.7k to 252k non-embedding parameters, 37x) and
pretraining budget (`PretrainRecipe.budgets`, in tokens per *non-embedding* parameter, as scaling
laws count them: the embeddings are more than half of the smallest rung).

Each size is pretrained once, with a warmup-stable-decay (WSD) schedule: linear warm-up, a constant
LR up to the largest budget, then a linear decay to zero over the last `cooldown` fraction of its
steps. At every smaller budget a copy of the model and optimizer branches off and cools down the
same way, over the batches the main run would see, so the finished model at budget B is exactly the
one a standalone WSD run to B would give, for 17.5% extra compute (separate runs: +88%). Asking for
a budget that was not built is an error naming the budgets available: extending a finished run on
demand would change a cache entry after it was built.

A size is one cache entry (a hash of everything that defines it), built once under a file lock:
one `save_pretrained` directory per budget, each with a `pretrain.json` record (`pretrain_record`).

Pretraining runs on `PRETRAIN_THREADS` torch threads whatever the machine or caller, so a rung's weights
are the same on every machine with the same CPU kind and torch version (both in the cache key).
`raycl.models.builds` builds several rungs at once, one process each.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import cast

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from raycl.artifacts.cache import cached_build
from raycl.config.trial import LADDER_BUDGETS
from raycl.data.tokens import batch_at
from raycl.models.heldout import heldout_loss
from raycl.models.optimizer_step import optimizer_step
from raycl.world.corpus import Domain
from raycl.world.stream import base_corpus_blocks, split_examples

# Bump when pretraining changes in a way the spec below does not capture: old caches then rebuild.
PRETRAIN_VERSION = 3

# CPU kernels split their sums by thread, so weights depend on the thread count: after 300 steps of
# raycl-tiny-xl, 3 threads gave other weights than 1, 2 or 4. One thread per rung, rungs in parallel, is
# also the best use of the cores: 2 threads ran raycl-tiny-xl's step only 1.2x faster than 1 (53 vs 63 ms).
PRETRAIN_THREADS = 1


@dataclass(frozen=True)
class Rung:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


# Depth and width grow together, the MLP ~2.7x wide as in Llama.
LADDER: dict[str, Rung] = {
    "raycl-tiny-xs": Rung(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=48),
    "raycl-tiny-s": Rung(hidden_size=24, num_layers=3, num_heads=2, intermediate_size=64),
    "raycl-tiny-m": Rung(hidden_size=32, num_layers=4, num_heads=4, intermediate_size=88),
    "raycl-tiny-l": Rung(hidden_size=48, num_layers=4, num_heads=4, intermediate_size=128),
    "raycl-tiny-xl": Rung(hidden_size=64, num_layers=5, num_heads=4, intermediate_size=176),
    # The out-of-sample rung, 2.5x raycl-tiny-xl: added after the laws fitted on the five above were committed
    # with their predictions for it (reports/scaling_laws/out_of_sample.json). Not in the scaling_laws space.
    "raycl-tiny-xxl": Rung(hidden_size=96, num_layers=6, num_heads=6, intermediate_size=240),
}

# Rungs pretrained only up to a budget: raycl-tiny-xxl to 40 tokens per parameter would take an hour of a
# core. A cool-down branch is exactly a standalone run to its budget, so its budgets 5 and 10 are the models
# the full recipe would give.
BUDGET_CAPS: dict[str, float] = {"raycl-tiny-xxl": 10.0}


@dataclass(frozen=True)
class PretrainRecipe:
    """Pretraining hyperparameters shared by every rung."""

    budgets: tuple[float, ...] = LADDER_BUDGETS  # tokens per non-embedding parameter
    lr: float = 3e-3  # peak LR at `lr_width`; a rung's is scaled by lr_width / hidden_size
    lr_width: int = 64
    batch_size: int = 8
    block_size: int = 128
    warmup_tokens_per_param: float = 1.0  # done long before the smallest budget's cool-down
    cooldown: float = 0.2  # fraction of a budget's steps spent decaying the LR to zero
    seed: int = 0


def rung_recipe(name: str) -> PretrainRecipe:
    """The recipe rung `name` is pretrained with: the shared one, its budgets cut at the rung's cap."""
    recipe = PretrainRecipe()
    cap = BUDGET_CAPS.get(name)
    return recipe if cap is None else replace(recipe, budgets=tuple(b for b in recipe.budgets if b <= cap))


def llama_config(rung: Rung, tokenizer: PreTrainedTokenizerBase, max_positions: int = 512) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=rung.hidden_size,
        num_hidden_layers=rung.num_layers,
        num_attention_heads=rung.num_heads,
        num_key_value_heads=rung.num_heads,
        intermediate_size=rung.intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # The tokenizer serves special token ids through an untyped `__getattr__`.
        bos_token_id=cast("int | None", tokenizer.bos_token_id),
        eos_token_id=cast("int | None", tokenizer.eos_token_id),
        pad_token_id=cast("int | None", tokenizer.pad_token_id),
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())


def parameter_counts(model: PreTrainedModel) -> dict[str, int]:
    """Embedding, non-embedding and total parameters, each tensor counted once.

    Embeddings are the input embedding and the output head (one tensor when tied); position
    embeddings do not exist in Llama (rotary).
    """
    head = model.get_output_embeddings()
    assert head is not None  # a causal LM has an output head
    weights = (model.get_input_embeddings().get_parameter("weight"), head.get_parameter("weight"))
    embeddings = {id(p): p for p in weights}
    embedding = sum(p.numel() for p in embeddings.values())
    total = count_parameters(model)
    return {"embedding_params": embedding, "non_embedding_params": total - embedding, "total_params": total}


def budget_steps(tokens_per_param: float, non_embedding_params: int, tokens_per_step: int) -> int:
    """Optimizer steps that give at least `tokens_per_param` tokens per non-embedding parameter."""
    return max(1, math.ceil(tokens_per_param * non_embedding_params / tokens_per_step))


def peak_lr(rung: Rung, recipe: PretrainRecipe) -> float:
    """The rung's peak LR: inversely proportional to width, as muP prescribes for Adam on hidden
    matrices (a single LR left the smallest rungs, which take a few hundred steps, far from done)."""
    return recipe.lr * recipe.lr_width / rung.hidden_size


def cooldown_steps(total_steps: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * total_steps))


def wsd_lr(step: int, peak: float, warmup_steps: int, total_steps: int, cooldown_steps: int) -> float:
    """LR of `step` (0-based) in a warmup-stable-decay run of `total_steps`.

    Linear warm-up over `warmup_steps` (the first step at `peak / warmup_steps`), `peak` until the
    last `cooldown_steps`, then linear to zero (the last step at `peak / cooldown_steps`, so no step
    is wasted at LR 0).
    """
    decay_start = total_steps - cooldown_steps
    if step >= decay_start:
        return peak * (total_steps - step) / cooldown_steps
    return peak * min(1.0, (step + 1) / warmup_steps)


def budget_dirname(tokens_per_param: float) -> str:
    return f"tpp-{tokens_per_param:g}"


def check_budget(tokens_per_param: float, budgets: tuple[float, ...]) -> None:
    """A clear error unless `tokens_per_param` is one of the ladder's `budgets`."""
    if tokens_per_param not in budgets:
        available = ", ".join(f"{b:g}" for b in budgets)
        raise ValueError(
            f"model.pretrain_tokens_per_param={tokens_per_param:g} is not a pretraining budget of the "
            f"offline ladder; the budgets available are {available} (tokens per non-embedding parameter)."
        )


def check_rung(name: str) -> Rung:
    if name not in LADDER:
        raise ValueError(f"{name!r} is not a rung of the offline ladder; rungs: {', '.join(LADDER)}.")
    return LADDER[name]


@dataclass
class _Run:
    """A model being pretrained, its optimizer and the loss of every step it took."""

    model: LlamaForCausalLM
    optimizer: torch.optim.Optimizer
    losses: list[float]


class StepLines:
    """Progress of a pretraining run as one line per tenth of its steps, with an ETA (rungs build in
    parallel processes, where live bars would overwrite each other)."""

    def __init__(self, label: str, total: int, say: Callable[[str], None] | None = None) -> None:
        self.label, self.total, self.say = label, total, say or (lambda line: print(line, flush=True))
        self.done, self.started, self.next_tenth = 0, time.perf_counter(), 1

    def __call__(self, loss: float) -> None:
        self.done += 1
        if self.done * 10 < self.next_tenth * self.total:
            return
        self.next_tenth = self.done * 10 // self.total + 1
        elapsed = time.perf_counter() - self.started
        left = elapsed * (self.total - self.done) / self.done
        self.say(
            f"pretraining {self.label}: {self.done:,}/{self.total:,} steps, loss {loss:.3f}, "
            f"{elapsed / 60:.1f} min so far, about {left / 60:.1f} min left"
        )


def _train_steps(
    run: _Run,
    blocks: torch.Tensor,
    steps: range,
    lr_at: Callable[[int], float],
    recipe: PretrainRecipe,
    tick: Callable[[float], None],
) -> None:
    run.model.train()
    for step in steps:
        batch = batch_at(blocks, recipe.batch_size, step, recipe.seed)
        loss = run.model(input_ids=batch, labels=batch).loss
        optimizer_step(loss, run.model, run.optimizer, lr_at(step), grad_clip=1.0)
        run.losses.append(loss.item())
        tick(run.losses[-1])


def pretrain_ladder_rung(
    model: LlamaForCausalLM,
    blocks: torch.Tensor,
    heldout: list[list[int]],
    recipe: PretrainRecipe,
    lr: float,
    out: Path,
    label: str,
    pad_id: int,
) -> None:
    """Pretrain `model` once with WSD at peak `lr` and save the finished model of every budget under `out`.

    Each budget's directory gets the model (`save_pretrained`), its per-step losses and
    `pretrain.json`; the caller adds the tokenizer.
    """
    counts = parameter_counts(model)
    tokens_per_step = recipe.batch_size * recipe.block_size
    steps = {b: budget_steps(b, counts["non_embedding_params"], tokens_per_step) for b in sorted(recipe.budgets)}
    warmup = budget_steps(recipe.warmup_tokens_per_param, counts["non_embedding_params"], tokens_per_step)
    main = _Run(model, torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1), [])
    total = steps[max(steps)] + sum(cooldown_steps(s, recipe.cooldown) for b, s in steps.items() if b != max(steps))
    tick = StepLines(label, total)
    done = 0  # steps of the main run so far
    for budget, budget_total in steps.items():
        cooldown = cooldown_steps(budget_total, recipe.cooldown)
        decay_start = budget_total - cooldown

        def lr_at(step: int, budget_total: int = budget_total, cooldown: int = cooldown) -> float:
            return wsd_lr(step, lr, warmup, budget_total, cooldown)

        _train_steps(main, blocks, range(done, decay_start), lr_at, recipe, tick)
        done = decay_start
        # The largest budget's cool-down ends the main run; the others decay a copy.
        run = main if budget == max(steps) else copy.deepcopy(main)
        _train_steps(run, blocks, range(decay_start, budget_total), lr_at, recipe, tick)
        record = counts | {
            "tokens_per_param": budget,
            "pretrain_tokens": budget_total * tokens_per_step,
            "steps": budget_total,
            "peak_lr": lr,
            "final_train_loss": sum(run.losses[-20:]) / len(run.losses[-20:]),
            "heldout_base_loss": heldout_loss(
                run.model, heldout, pad_id=pad_id, batch_size=32, device=torch.device("cpu")
            ),
        }
        directory = out / budget_dirname(budget)
        save_on_this_process(run.model, directory)
        (directory / "pretrain_losses.txt").write_text("\n".join(f"{loss:.5f}" for loss in run.losses))
        (directory / "pretrain.json").write_text(json.dumps(record, indent=2))


def save_on_this_process(model: PreTrainedModel, directory: Path) -> None:
    """What `save_pretrained` writes (config, generation config, safetensors weights), on whichever process calls
    it: transformers writes nothing on a torch.distributed rank other than 0, and a cache entry is built by
    whichever Ray Train worker takes its lock first."""
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(directory)
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})


def pretrain_record(model_dir: Path) -> dict:
    """What pretraining the ladder model in `model_dir` took and reached.

    Keys: `embedding_params`, `non_embedding_params`, `total_params`, `tokens_per_param`,
    `pretrain_tokens`, `steps`, `peak_lr`, `final_train_loss` (mean of the last 20 steps) and
    `heldout_base_loss` (nats per token on the base held-out split).
    """
    return json.loads((Path(model_dir) / "pretrain.json").read_text())


def ladder_spec(name: str, world_id: str, recipe: PretrainRecipe) -> dict:
    """Everything the weights of rung `name` (all budgets) depend on: the rung, recipe and world, and the
    kernels that compute them (torch version, the CPU instruction set torch dispatches to, the threads)."""
    return {
        "name": name,
        "rung": asdict(check_rung(name)),
        "recipe": asdict(recipe),
        "world": world_id,
        "version": PRETRAIN_VERSION,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": PRETRAIN_THREADS,
    }


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on `count` torch threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ladder_rung_dir(
    name: str,
    base: Domain,
    tokenizer: PreTrainedTokenizerBase,
    world_id: str,
    recipe: PretrainRecipe | None = None,
) -> Path:
    """The cache entry of rung `name`: every budget's model, pretrained on first use.

    Its `rung.json` records the build's wall and CPU minutes.
    """
    rung = check_rung(name)
    recipe = recipe or rung_recipe(name)

    def build(out: Path) -> None:
        with torch_threads(PRETRAIN_THREADS):
            pretrain(out)

    def pretrain(out: Path) -> None:
        start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        torch.manual_seed(recipe.seed)
        model = LlamaForCausalLM(llama_config(rung, tokenizer))
        counts = parameter_counts(model)
        blocks = base_corpus_blocks(base, tokenizer, recipe.block_size)
        heldout = split_examples(base.heldout, tokenizer, recipe.block_size)
        label = f"{name} ({counts['non_embedding_params']:,} non-embedding params)"
        pad_id = cast(int, tokenizer.pad_token_id)  # the world's tokenizer has one; typed by an untyped `__getattr__`
        pretrain_ladder_rung(model, blocks, heldout, recipe, peak_lr(rung, recipe), out, label, pad_id)
        for budget in recipe.budgets:
            tokenizer.save_pretrained(out / budget_dirname(budget))
        # CPU minutes barely move when other jobs share the cores; wall minutes do (load average).
        build = {
            "name": name,
            "build_minutes": (time.perf_counter() - start) / 60,
            "build_cpu_minutes": (time.process_time() - cpu_start) / 60,
            "threads": torch.get_num_threads(),
            "load_average": [load_start, os.getloadavg()[0]],
        }
        (out / "rung.json").write_text(json.dumps(build | counts, indent=2))
        print(
            f"pretrained {label}: {build['build_minutes']:.1f} min ({build['build_cpu_minutes']:.1f} CPU min) "
            f"on {build['threads']} thread(s)",
            flush=True,
        )

    return cached_build("models", ladder_spec(name, world_id, recipe), build)


def ladder_model_dir(
    name: str, base: Domain, tokenizer: PreTrainedTokenizerBase, world_id: str, tokens_per_param: float
) -> Path:
    """The finished rung `name` at budget `tokens_per_param` (a `save_pretrained` directory).

    The first call for a size pretrains it at every budget; concurrent callers wait for it.
    """
    check_rung(name)
    recipe = rung_recipe(name)
    check_budget(tokens_per_param, recipe.budgets)
    return ladder_rung_dir(name, base, tokenizer, world_id, recipe) / budget_dirname(tokens_per_param)


def ladder_violations(losses: dict[str, dict[float, float]]) -> list[str]:
    """Where held-out loss fails to fall along an axis of the ladder, as sentences.

    `losses` maps each rung (smallest first) to its loss at each budget. Loss should fall with size
    at every budget and with budget at every size.
    """
    problems = []
    names = list(losses)
    for smaller, bigger in itertools.pairwise(names):
        for budget, loss in losses[bigger].items():
            if loss >= losses[smaller][budget]:
                problems.append(
                    f"at {budget:g} tokens/param {bigger} ({loss:.3f}) is not below {smaller} "
                    f"({losses[smaller][budget]:.3f})"
                )
    for name, by_budget in losses.items():
        budgets = sorted(by_budget)
        for fewer, more in itertools.pairwise(budgets):
            if by_budget[more] >= by_budget[fewer]:
                problems.append(
                    f"{name} at {more:g} tokens/param ({by_budget[more]:.3f}) is not below {fewer:g} "
                    f"({by_budget[fewer]:.3f})"
                )
    return problems
