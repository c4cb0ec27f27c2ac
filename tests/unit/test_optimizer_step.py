"""The one optimizer step: ladder pretraining through it is bit-identical to the plain loop it replaced; LR scales
reach every group; an optimizer that steps during backward is left alone after it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from raycl.config import FullMethod, TrainConfig
from raycl.models.ladder import PretrainRecipe, _Run, _train_steps, wsd_lr
from raycl.models.optimizer_step import StepsInBackward, optimizer_step
from raycl.training.methods import build_optimizer, prepare_method

TINY = LlamaConfig(
    vocab_size=96,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=48,
    tie_word_embeddings=True,
)


def plain_pretraining_loop(run: _Run, blocks: torch.Tensor, steps: range, lr_at, recipe: PretrainRecipe) -> None:
    """The ladder's loop as it was before `optimizer_step`, kept here as the reference its caches were built by."""
    from raycl.data.tokens import batch_at

    run.model.train()
    for step in steps:
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = batch_at(blocks, recipe.batch_size, step, recipe.seed)
        loss = run.model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.losses.append(loss.item())


def test_ladder_pretraining_is_bit_identical_to_the_plain_loop() -> None:
    # Cached ladder rungs are keyed on their config, not on this code: a changed step would make fresh bases
    # silently differ from cached ones. Warm-up, stable phase and decay, with a clip that binds at this LR.
    recipe = PretrainRecipe(batch_size=4, block_size=32)
    # Counting runs modulo 24 from random starts: a pattern a few steps learn.
    starts = torch.randint(0, 24, (64, 1), generator=torch.Generator().manual_seed(0))
    blocks = (starts + torch.arange(recipe.block_size)) % 24
    torch.manual_seed(0)
    model = LlamaForCausalLM(TINY)
    runs = []
    for _ in range(2):
        copied = copy.deepcopy(model)
        runs.append(
            _Run(copied, torch.optim.AdamW(copied.parameters(), lr=3e-2, betas=(0.9, 0.95), weight_decay=0.1), [])
        )

    def lr_at(step: int) -> float:
        return wsd_lr(step, 3e-2, warmup_steps=3, total_steps=12, cooldown_steps=4)

    _train_steps(runs[0], blocks, range(12), lr_at, recipe, tick=lambda loss: None)
    plain_pretraining_loop(runs[1], blocks, range(12), lr_at, recipe)

    assert runs[0].losses == runs[1].losses and runs[0].losses[-1] < runs[0].losses[0]
    through_step, plain = runs[0].model.state_dict(), runs[1].model.state_dict()
    assert all(torch.equal(through_step[name], plain[name]) for name in plain)
    assert not torch.equal(through_step["model.norm.weight"], model.state_dict()["model.norm.weight"])  # it trained
    assert (
        runs[0]
        .optimizer.state_dict()["state"][0]["exp_avg"]
        .equal(runs[1].optimizer.state_dict()["state"][0]["exp_avg"])
    )


def test_each_group_steps_at_the_lr_times_its_scale() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(TINY)
    prepared = prepare_method(model, FullMethod(), TrainConfig(lr=1e-3, layer_lr_slope=0.5))
    batch = torch.randint(0, TINY.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    optimizer_step(prepared.model(input_ids=batch, labels=batch).loss, prepared.model, prepared.optimizer, 2e-3, 1.0)
    lrs = {group["lr_scale"]: group["lr"] for group in prepared.optimizer.param_groups}
    assert lrs == {scale: pytest.approx(2e-3 * scale) for scale in (0.5, 1.0, 1.5)}
    assert all(p.grad is None for p in model.parameters())


def test_an_optimizer_that_steps_in_backward_is_not_stepped_or_clipped_again() -> None:
    # SGD with lr 1 makes each update the gradient clipped to the parameter's share of grad_clip, once.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    parameters = list(model.parameters())
    before = [p.detach().clone() for p in parameters]
    optimizer = build_optimizer(
        lambda groups: torch.optim.SGD(groups, lr=0.5), [{"params": parameters}], per_layer=True, grad_clip=0.01
    )
    assert isinstance(optimizer, StepsInBackward)
    optimizer_step((model(torch.randn(32, 8)) ** 2).sum(), model, optimizer, lr=1.0, grad_clip=0.01)
    total = sum(p.numel() for p in parameters)
    for old, p in zip(before, parameters):
        assert (old - p.detach()).norm().item() == pytest.approx(0.01 * math.sqrt(p.numel() / total), rel=1e-3)
        assert p.grad is None
