"""Memory of one training step, measured the same way on every device.

    with StepMemory(model, optimizer) as memory:
        ...  # forward, backward, optimizer step, zero_grad
    memory.peak_bytes, memory.parts   # parts: weights, gradients, optimizer_state, activations

The peak is what the step needs at its busiest moment: the model's weights and buffers, the
gradients alive then, the optimizer's state, and everything else the step has allocated and not yet
freed ("activations": tensors saved for backward and temporaries). A `TorchDispatchMode` sees every
tensor the step creates, and a weak reference to its storage tells when it is freed; the peak of the
live bytes is the answer on CPU. On CUDA the caching allocator's `max_memory_allocated` measures the
step's allocations instead (rounding and library workspaces included), and the tracker only splits
that peak into its parts. Scratch memory a kernel allocates inside itself is invisible to the tracker
(CPU), and tensors the step neither owns nor creates (a frozen base model, EWC's anchor) count on no
device. The tracker runs Python on every operation: use it on a dedicated step, never a timed one.
On CUDA it resets the allocator's peak counter, which then counts from the measured step on.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from functools import partial
from itertools import chain

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from raycl.training.methods import Optimizer, optimizer_state_tensors

PARTS: tuple[str, ...] = ("weights", "gradients", "optimizer_state", "activations")


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views and tied weights count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class StepMemory(TorchDispatchMode):
    """Live tensor bytes by part while active, and their peak (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: Optimizer):
        super().__init__()
        self.model, self.optimizer = model, optimizer
        self.device = next(model.parameters()).device
        self.live: dict[int, tuple[int, str, weakref.ref]] = {}  # id(storage) -> (bytes, part, weak reference)
        self.current: dict[str, int] = dict.fromkeys(PARTS, 0)
        self.parts: dict[str, int] = dict.fromkeys(PARTS, 0)  # at the peak, summing to peak_bytes
        self.peak_bytes = 0

    def __enter__(self) -> StepMemory:
        for tensor in chain(self.model.parameters(), self.model.buffers()):
            self._track(tensor, "weights")
        self._relabel()
        self.resident_bytes = sum(self.current.values())  # what the model and optimizer hold between steps
        self._record_peak()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._allocated_before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            # What this model and optimizer held at the start, plus the allocator's peak above the start.
            self.peak_bytes = (
                self.resident_bytes + torch.cuda.max_memory_allocated(self.device) - self._allocated_before
            )
            self.parts["activations"] = self.peak_bytes - sum(v for k, v in self.parts.items() if k != "activations")
        self.live.clear()  # dropping the weak references also drops their callbacks

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, "activations")
        if sum(self.current.values()) > self.peak_bytes:
            self._record_peak()
        return out

    def _track(self, tensor: torch.Tensor, part: str) -> None:
        if tensor.device != self.device:
            return
        storage = tensor.untyped_storage()
        key, size = id(storage), storage.nbytes()
        if key in self.live:
            known, known_part, ref = self.live[key]
            if size == known:
                return
            self.current[known_part] += size - known  # resized in place
            self.live[key] = (size, known_part, ref)
        else:
            self.live[key] = (size, part, weakref.ref(storage, partial(self._freed, key)))
            self.current[part] += size

    def _freed(self, key: int, _ref: weakref.ref) -> None:
        if key in self.live:
            size, part, _ = self.live.pop(key)
            self.current[part] -= size

    def _move(self, tensor: torch.Tensor, part: str) -> None:
        """File an already tracked tensor under `part` (a fresh gradient or state tensor starts as an activation)."""
        self._track(tensor, part)
        key = id(tensor.untyped_storage())
        if key in self.live and self.live[key][1] != part:
            size, old, ref = self.live[key]
            self.current[old] -= size
            self.current[part] += size
            self.live[key] = (size, part, ref)

    def _relabel(self) -> None:
        for parameter in self.model.parameters():
            self._move(parameter, "weights")  # 8-bit GaLore swaps in new storage for its weights
            if parameter.grad is not None:
                self._move(parameter.grad, "gradients")
        for tensor in optimizer_state_tensors(self.optimizer):
            self._move(tensor, "optimizer_state")

    def _record_peak(self) -> None:
        self._relabel()
        self.peak_bytes = sum(self.current.values())
        self.parts = dict(self.current)
