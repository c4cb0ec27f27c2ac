"""Real models, tokenizers and datasets by name: local paths, the local cache, or the hub.

Offline (the default, `HF_HUB_OFFLINE=1`) anything not on disk fails at once with a message that says
how to get it, instead of hanging in retries.
"""

from __future__ import annotations

import os
from typing import Any


class HubUnavailableError(RuntimeError):
    """A model or dataset needs the hub, and the hub is off or out of reach."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no", "")


def _unavailable(kind: str, name: str, error: Exception) -> HubUnavailableError:
    if hub_offline():
        why = "raycl runs offline by default (HF_HUB_OFFLINE=1); set HF_HUB_OFFLINE=0 where the hub is reachable"
    else:
        why = f"the hub did not provide it ({type(error).__name__}: {str(error).splitlines()[0]})"
    return HubUnavailableError(f"{kind} {name!r} is neither a local path nor in the local cache: {why}")


def load_model(name: str, *, trust_remote_code: bool = False, **kwargs: Any):
    """`AutoModelForCausalLM.from_pretrained(name)`, failing fast when it needs an unreachable hub."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as error:
        raise _unavailable("model", name, error) from None


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """`AutoTokenizer.from_pretrained(name)`, failing fast when it needs an unreachable hub."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise _unavailable("tokenizer", name, error) from None


def load_dataset(path: str, name: str | None = None, **kwargs: Any):
    """`datasets.load_dataset(path, name, ...)`, failing fast when it needs an unreachable hub."""
    import datasets

    try:
        return datasets.load_dataset(path, name, **kwargs)
    except (OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise _unavailable("dataset", path, error) from None
