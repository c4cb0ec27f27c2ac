"""Per-layer updates (same steps as the ordinary optimizers, clipping, LR, checkpoints) and the step memory tracker."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from galore_torch.galore_projector import GaLoreProjector
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from raycl.config import ConfigError, FullMethod, GaLoreMethod, MethodConfig, TrainConfig, TrialConfig
from raycl.models.optimizer_step import optimizer_step
from raycl.training.checkpoint import load_checkpoint, save_checkpoint
from raycl.training.galore import CompactProjector
from raycl.training.memory import StepMemory, storage_bytes
from raycl.training.methods import PerLayerOptimizer, build_optimizer, prepare_method

TINY = LlamaConfig(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=64,
    tie_word_embeddings=True,
)
NO_CLIP = 1e9  # a bound no gradient reaches: both modes take identical steps
BATCH = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
STEPS = 6


def prepared(method: MethodConfig, grad_clip: float = NO_CLIP):
    torch.manual_seed(0)
    return prepare_method(LlamaForCausalLM(TINY), method, TrainConfig(lr=1e-2, grad_clip=grad_clip))


def train_step(model: nn.Module, optimizer, batch: torch.Tensor, lr: float = 1e-2) -> float:
    """The trial loop's step (global clipping, or nothing left to clip after per-layer updates)."""
    loss = model(input_ids=batch, labels=batch).loss
    optimizer_step(loss, model, optimizer, lr, NO_CLIP)
    return loss.item()


def losses(method: MethodConfig) -> list[float]:
    p = prepared(method)
    # A warm-up, as the trial's schedule.
    return [train_step(p.model, p.optimizer, BATCH, lr=1e-2 * (step + 1) / STEPS) for step in range(STEPS)]


@pytest.mark.parametrize(
    "method",
    [FullMethod(), GaLoreMethod(name="galore", galore_rank=4, galore_update_proj_gap=2)],
    ids=["adamw", "galore"],
)
def test_per_layer_updates_follow_the_same_loss_curve(method: MethodConfig) -> None:
    ordinary = losses(method)
    per_layer = losses(method.model_copy(update={"per_layer_updates": True}))
    assert ordinary[-1] < ordinary[0] - 0.1  # it trains
    assert per_layer == pytest.approx(ordinary, abs=1e-5)


def test_per_layer_clipping_bounds_each_parameter_by_its_share_and_so_the_global_norm() -> None:
    # SGD with lr 1 makes each update the clipped gradient itself.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    parameters = list(model.parameters())
    before = [p.detach().clone() for p in parameters]
    # Held until the end: its hooks clip and step each parameter during backward.
    _optimizer = build_optimizer(
        lambda groups: torch.optim.SGD(groups, lr=1.0), [{"params": parameters}], per_layer=True, grad_clip=0.01
    )
    (model(torch.randn(32, 8)) ** 2).sum().backward()
    updates = [(b - p.detach()).norm().item() for b, p in zip(before, parameters)]
    total = sum(p.numel() for p in parameters)
    for update, p in zip(updates, parameters):
        assert update == pytest.approx(0.01 * math.sqrt(p.numel() / total), rel=1e-3)  # every one clipped here
    assert math.sqrt(sum(u**2 for u in updates)) <= 0.01 * (1 + 1e-3)
    assert all(p.grad is None for p in parameters)  # freed as soon as used


def test_the_learning_rate_reaches_every_per_parameter_optimizer() -> None:
    p = prepared(GaLoreMethod(name="galore", per_layer_updates=True))
    assert isinstance(p.optimizer, PerLayerOptimizer)
    for group in p.optimizer.param_groups:
        group["lr"] = 0.123
    inner = [g["lr"] for o in p.optimizer.optimizers.values() for g in o.param_groups]
    assert len(inner) == len(list(p.model.parameters())) and set(inner) == {0.123}


def test_per_layer_optimizer_state_survives_a_checkpoint(tmp_path: Path) -> None:
    method = GaLoreMethod(name="galore", galore_rank=4, galore_update_proj_gap=3, per_layer_updates=True)
    first = prepared(method)
    for _ in range(2):
        train_step(first.model, first.optimizer, BATCH)
    save_checkpoint(tmp_path / "ckpt", first.model, first.optimizer, {"step": 2})
    resumed = prepared(method)
    assert load_checkpoint(tmp_path / "ckpt", resumed.model, resumed.optimizer) == {"step": 2}
    projectors = [s["projector"] for s in resumed.optimizer.state.values() if "projector" in s]
    assert projectors and all(isinstance(p, CompactProjector) and p.ortho_matrix is not None for p in projectors)
    assert [train_step(first.model, first.optimizer, BATCH) for _ in range(3)] == [
        train_step(resumed.model, resumed.optimizer, BATCH) for _ in range(3)
    ]


def test_compact_projector_keeps_only_the_rank_it_uses() -> None:
    gradient = torch.randn(64, 48)
    stock, compact = (cls(rank=4, update_proj_gap=10, proj_type="std") for cls in (GaLoreProjector, CompactProjector))
    assert torch.equal(stock.project(gradient, 0), compact.project(gradient, 0))
    assert storage_bytes([compact.ortho_matrix]) == 4 * 48 * 4
    assert storage_bytes([stock.ortho_matrix]) == 48 * 48 * 4  # the whole of the SVD's Vh


def test_per_layer_updates_are_a_key_of_full_and_galore_only() -> None:
    assert TrialConfig().with_overrides({"method.per_layer_updates": True}).method.per_layer_updates
    with pytest.raises(ConfigError, match="method.per_layer_updates"):
        TrialConfig().with_overrides({"method.name": "lora", "method.per_layer_updates": True})


def test_tracker_counts_a_linear_layers_weights_gradients_and_adam_state_exactly() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(256, 128)
    optimizer = torch.optim.AdamW(layer.parameters())
    x = torch.randn(4, 256)

    def step() -> None:
        layer(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # Adam's state exists from here on
    with StepMemory(layer, optimizer) as memory:
        step()
    weights = (256 * 128 + 128) * 4
    assert memory.parts["weights"] == weights
    assert memory.parts["gradients"] == weights  # the peak is in the optimizer step, every gradient alive
    assert memory.parts["optimizer_state"] == 2 * weights + 2 * 4  # two moments and a step count per tensor
    assert memory.peak_bytes == sum(memory.parts.values())


def test_tracker_sees_frees_and_keeps_the_peak() -> None:
    layer = nn.Linear(4, 4)
    with StepMemory(layer, torch.optim.SGD(layer.parameters())) as memory:
        a = torch.empty(1000)
        del a
        b, c = torch.empty(2000), torch.empty(500)
        del b, c
    assert memory.peak_bytes - memory.resident_bytes == 2500 * 4
    assert memory.parts["activations"] == 2500 * 4 and memory.parts["weights"] == (16 + 4) * 4


def test_per_layer_updates_never_hold_more_than_one_gradient() -> None:
    def step_memory(per_layer: bool) -> dict[str, int]:
        torch.manual_seed(0)
        model = nn.Sequential(*(nn.Linear(256, 256, bias=False) for _ in range(4)))
        make = lambda groups: torch.optim.AdamW(groups)  # noqa: E731
        optimizer = build_optimizer(make, [{"params": list(model.parameters())}], per_layer, grad_clip=NO_CLIP)
        x = torch.randn(2, 256)
        for _ in range(2):
            with StepMemory(model, optimizer) as memory:
                model(x).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return memory.parts

    matrix = 256 * 256 * 4
    ordinary, per_layer = step_memory(False), step_memory(True)
    assert ordinary["weights"] == per_layer["weights"] == 4 * matrix
    assert ordinary["gradients"] == 4 * matrix and per_layer["gradients"] == matrix
    assert (
        ordinary["optimizer_state"] == per_layer["optimizer_state"] == 4 * (2 * matrix + 4)
    )  # moments and a step count
