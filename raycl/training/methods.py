"""The three ways a trial updates the model: full fine-tuning, LoRA (peft) and GaLore (galore-torch).

Each returns the model to train, its optimizer and a few facts worth logging, such as how many
parameters GaLore really projects: a rank at or above a matrix's smaller side saves nothing, and a
module list that matches nothing makes GaLore a silent no-op.

Full fine-tuning and GaLore can also update per layer (`method.per_layer_updates`): one optimizer
per parameter, stepped during the backward pass, so no full set of gradients is ever held.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from raycl.config import FullMethod, GaLoreMethod, LoraMethod, MethodConfig, TrainConfig
from raycl.models.optimizer_step import StepsInBackward

ADAM_BETAS = (0.9, 0.95)
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


class PerLayerOptimizer(StepsInBackward):
    """One optimizer per parameter, each stepped by a hook the moment its parameter's gradient is
    complete; the gradient is freed right after, so at most a few gradients live at any time (the
    layer-wise mode of the GaLore authors' torchrun_main.py).

    It stands in for a `torch.optim.Optimizer` in the training loops: `param_groups` holds every inner
    optimizer's group (setting `lr` on them reaches all), `state_dict`/`load_state_dict` carry all
    their states, and `optimizer_step` leaves out clipping, step and zero_grad after `backward()`.

    Clipping: global-norm clipping needs every gradient before the first step, which is exactly what
    this mode never holds. Instead each parameter's gradient is clipped to
    `grad_clip * sqrt(numel / total_numel)`. When every parameter is within its bound the global norm is
    within `grad_clip`, so the bound global clipping gives still holds; but a parameter is clipped on
    its own norm (a large gradient in one layer no longer shrinks the others' updates, and the update's
    direction across layers changes), and clipping can trigger while the global norm is below
    `grad_clip`. With a `grad_clip` that never binds, both modes take identical steps.

    Not usable under DDP: the hooks would step on each rank's own gradients before they are averaged.
    """

    def __init__(self, optimizers: dict[nn.Parameter, torch.optim.Optimizer], grad_clip: float):
        if dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("method.per_layer_updates: not under DDP (each rank would step on unaveraged gradients)")
        self.optimizers = optimizers
        total = sum(p.numel() for p in optimizers)
        for parameter, optimizer in optimizers.items():
            max_norm = grad_clip * math.sqrt(parameter.numel() / total)
            parameter.register_post_accumulate_grad_hook(partial(self._step, optimizer, max_norm))

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, max_norm: float, parameter: nn.Parameter) -> None:
        nn.utils.clip_grad_norm_([parameter], max_norm)
        optimizer.step()
        parameter.grad = None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    @property
    def state(self) -> dict[torch.Tensor, dict[str, Any]]:
        return {p: s for optimizer in self.optimizers.values() for p, s in optimizer.state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"per_parameter": [optimizer.state_dict() for optimizer in self.optimizers.values()]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict["per_parameter"]
        if len(states) != len(self.optimizers):
            raise ValueError(f"optimizer state of {len(states)} parameters, but {len(self.optimizers)} are trained")
        for optimizer, state in zip(self.optimizers.values(), states):
            optimizer.load_state_dict(state)

    def step(self) -> None:
        """Nothing to do: every parameter was stepped during `backward()`."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.optimizers:
            parameter.grad = None


Optimizer = torch.optim.Optimizer | PerLayerOptimizer


@dataclass
class PreparedMethod:
    model: nn.Module
    optimizer: Optimizer
    info: dict[str, Any] = field(default_factory=dict)


def build_optimizer(
    make: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
    groups: list[dict[str, Any]],
    per_layer: bool,
    grad_clip: float,
) -> Optimizer:
    """`make(groups)`, or with per-layer updates one `make` per parameter, each keeping its group's settings."""
    if not per_layer:
        return make(groups)
    optimizers = {p: make([{**group, "params": [p]}]) for group in groups for p in group["params"]}
    return PerLayerOptimizer(optimizers, grad_clip)


def depth_groups(model: nn.Module, groups: list[dict[str, Any]], slope: float) -> list[dict[str, Any]]:
    """`groups` split by transformer layer, each with an `lr_scale` linear in depth: `1 - slope` at the
    first layer, `1 + slope` at the last; weights outside the layers (embeddings, head) keep 1."""
    if not slope:
        return groups
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    last = max((int(found[1]) for name in names.values() if (found := _LAYER_INDEX.search(name))), default=0)

    def scale(parameter: nn.Parameter) -> float:
        found = _LAYER_INDEX.search(names[id(parameter)])
        return 1.0 if found is None or last == 0 else 1 + slope * (2 * int(found[1]) / last - 1)

    split = []
    for group in groups:
        by_scale: dict[float, list[nn.Parameter]] = {}
        for parameter in group["params"]:
            by_scale.setdefault(scale(parameter), []).append(parameter)
        split += [{**group, "params": params, "lr_scale": lr_scale} for lr_scale, params in by_scale.items()]
    return split


def _matches(name: str, modules: tuple[str, ...]) -> bool:
    return name.removesuffix(".weight").rsplit(".", 1)[-1] in modules


def _full(model: nn.Module, method: FullMethod, train: TrainConfig) -> PreparedMethod:
    def make(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=train.lr, betas=ADAM_BETAS, weight_decay=train.weight_decay)

    groups = depth_groups(model, [{"params": list(model.parameters())}], train.layer_lr_slope)
    optimizer = build_optimizer(make, groups, method.per_layer_updates, train.grad_clip)
    return PreparedMethod(model, optimizer)


def _lora(model: nn.Module, method: LoraMethod, train: TrainConfig) -> PreparedMethod:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=method.lora_rank,
        lora_alpha=method.lora_alpha,  # pyright: ignore[reportArgumentType]  (annotated int; used as alpha / r)
        target_modules=list(method.lora_target_modules),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as error:
        raise ValueError(f"method.lora_target_modules: {error}") from None
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    groups = depth_groups(model, [{"params": trainable}], train.layer_lr_slope)
    optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=ADAM_BETAS, weight_decay=train.weight_decay)
    return PreparedMethod(model, optimizer, {"lora_adapted_params": sum(p.numel() for p in trainable)})


def galore_groups(model: nn.Module, method: GaLoreMethod) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """GaLore's parameter groups (the named 2-D weights projected, the rest plain AdamW) and facts about them."""
    projected, regular = [], []
    for name, parameter in model.named_parameters():
        is_target = parameter.ndim == 2 and _matches(name, method.galore_target_modules)
        (projected if is_target else regular).append(parameter)
    if not projected:
        raise ValueError(
            f"method.galore_target_modules: {list(method.galore_target_modules)} match no 2-D weight of this model"
        )
    # GaLore projects the smaller side of each matrix; a rank at or above it saves nothing.
    saving = [p for p in projected if method.galore_rank < min(p.shape)]
    groups = [
        {"params": regular},
        {
            "params": projected,
            "rank": method.galore_rank,
            "update_proj_gap": method.galore_update_proj_gap,
            "scale": method.galore_scale,
            "proj_type": method.galore_proj_type,
        },
    ]
    info = {
        "galore_projected_matrices": len(projected),
        "galore_projected_params": sum(p.numel() for p in projected),
        "galore_saving_matrices": len(saving),
    }
    return groups, info


def _galore(model: nn.Module, method: GaLoreMethod, train: TrainConfig) -> PreparedMethod:
    from galore_torch import GaLoreAdamW

    from raycl.training.galore import use_compact_projectors

    def make(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        # galore-torch annotates `params` as parameters only; like every torch optimizer it takes groups.
        optimizer = GaLoreAdamW(
            groups,  # pyright: ignore[reportArgumentType]
            lr=train.lr,
            betas=ADAM_BETAS,
            weight_decay=train.weight_decay,
            no_deprecation_warning=True,
        )
        return use_compact_projectors(optimizer)

    groups, info = galore_groups(model, method)
    groups = depth_groups(model, groups, train.layer_lr_slope)
    return PreparedMethod(model, build_optimizer(make, groups, method.per_layer_updates, train.grad_clip), info)


def prepare_method(model: nn.Module, method: MethodConfig, train: TrainConfig) -> PreparedMethod:
    """Wrap `model` for `method` and build its optimizer."""
    if method.name == "lora":
        prepared = _lora(model, method, train)
    elif method.name == "galore":
        prepared = _galore(model, method, train)
    else:
        prepared = _full(model, method, train)
    prepared.info["trainable_params"] = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    return prepared


def _state_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _state_tensors(item)
    elif hasattr(value, "ortho_matrix"):
        # GaLore keeps its projection (a matrix, or two for proj_type "full") in a projector object.
        yield from _state_tensors(value.ortho_matrix)


def optimizer_state_tensors(optimizer: Optimizer) -> Iterator[torch.Tensor]:
    """Every tensor of optimizer state, GaLore's projection matrices included."""
    for state in optimizer.state.values():
        for value in state.values():
            yield from _state_tensors(value)


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes of optimizer state, GaLore's projection matrices included."""
    return sum(t.numel() * t.element_size() for t in optimizer_state_tensors(optimizer))
