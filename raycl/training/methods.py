"""The three ways a trial updates the model: full fine-tuning, LoRA (peft) and GaLore (galore-torch).

Each returns the model to train, its optimizer and a few facts worth logging, such as how many
parameters GaLore really projects: a rank at or above a matrix's smaller side saves nothing, and a
module list that matches nothing makes GaLore a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raycl.config import MethodConfig, TrainConfig

ADAM_BETAS = (0.9, 0.95)


@dataclass
class PreparedMethod:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    info: dict[str, Any] = field(default_factory=dict)


def _matches(name: str, modules: tuple[str, ...]) -> bool:
    return name.removesuffix(".weight").rsplit(".", 1)[-1] in modules


def _full(model: nn.Module, train: TrainConfig) -> PreparedMethod:
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=ADAM_BETAS, weight_decay=train.weight_decay)
    return PreparedMethod(model, optimizer)


def _lora(model: nn.Module, method: MethodConfig, train: TrainConfig) -> PreparedMethod:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=method.lora_rank,
        lora_alpha=method.lora_alpha,
        target_modules=list(method.lora_target_modules),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as error:
        raise ValueError(f"method.lora_target_modules: {error}") from None
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, betas=ADAM_BETAS, weight_decay=train.weight_decay)
    return PreparedMethod(model, optimizer, {"lora_adapted_params": sum(p.numel() for p in trainable)})


def _galore(model: nn.Module, method: MethodConfig, train: TrainConfig) -> PreparedMethod:
    from galore_torch import GaLoreAdamW

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
    optimizer = GaLoreAdamW(
        groups, lr=train.lr, betas=ADAM_BETAS, weight_decay=train.weight_decay, no_deprecation_warning=True
    )
    info = {
        "galore_projected_matrices": len(projected),
        "galore_projected_params": sum(p.numel() for p in projected),
        "galore_saving_matrices": len(saving),
    }
    return PreparedMethod(model, optimizer, info)


def prepare_method(model: nn.Module, method: MethodConfig, train: TrainConfig) -> PreparedMethod:
    """Wrap `model` for `method` and build its optimizer."""
    if method.name == "lora":
        prepared = _lora(model, method, train)
    elif method.name == "galore":
        prepared = _galore(model, method, train)
    else:
        prepared = _full(model, train)
    prepared.info["trainable_params"] = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    return prepared


def _state_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_state_bytes(item) for item in value)
    if hasattr(value, "ortho_matrix"):
        # GaLore keeps its projection (a matrix, or two for proj_type "full") in a projector object.
        return _state_bytes(value.ortho_matrix)
    return 0


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state, GaLore's projection matrices included."""
    return sum(_state_bytes(value) for state in optimizer.state.values() for value in state.values())
