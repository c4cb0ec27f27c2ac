"""Real models, tokenizers and datasets by name: local paths, the local cache, or the hub.

Offline (the default, `HF_HUB_OFFLINE=1`) anything not on disk fails at once with a message that says
how to get it, instead of hanging in retries.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class HubUnavailableError(RuntimeError):
    """A model or dataset needs the hub, and the hub is off or out of reach."""


class ModelFileError(ValueError):
    """A local model directory holds a missing or broken file; the message names the file."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no", "")


def _unavailable(kind: str, name: str, error: Exception) -> HubUnavailableError:
    if hub_offline():
        why = "raycl runs offline by default (HF_HUB_OFFLINE=1); set HF_HUB_OFFLINE=0 where the hub is reachable"
    else:
        why = f"the hub did not provide it ({type(error).__name__}: {str(error).splitlines()[0]})"
    return HubUnavailableError(f"{kind} {name!r} is neither a local path nor in the local cache: {why}")


def check_model_dir(directory: Path) -> None:
    """Raise `ModelFileError` naming the first missing or broken file of a `save_pretrained` directory.

    transformers reports a corrupt config.json as a model missing from the cache, and a truncated
    weights file as a page-long traceback that names no file.
    """
    from safetensors import SafetensorError, safe_open

    config = directory / "config.json"
    if not config.is_file():
        raise ModelFileError(f"{config}: no such file (a model directory is what save_pretrained writes)")
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelFileError(f"{path}: not valid JSON ({error})") from None
        if path == config and not (isinstance(data, dict) and "model_type" in data):
            raise ModelFileError(f"{path}: no model_type key, so no model class can be chosen")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights and not any(directory.glob("*.bin")):
        raise ModelFileError(f"{directory}: no weights file (model.safetensors or pytorch_model.bin)")
    for path in weights:
        try:
            with safe_open(str(path), "pt"):
                pass
        except SafetensorError as error:
            raise ModelFileError(f"{path}: truncated or corrupt safetensors file ({error})") from None


def _broken_dir(kind: str, name: str, error: Exception) -> ModelFileError:
    return ModelFileError(f"{name}: cannot load the {kind} ({type(error).__name__}: {_first_line(error)})")


def _broken_link(kind: str, name: str) -> ModelFileError | None:
    """A local path that is a symbolic link loop, or a link to nothing: no hub setting would help."""
    try:
        os.stat(name)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(name):
            why = error.strerror or str(error)
            return ModelFileError(f"{name}: the {kind} path is a broken symbolic link ({why}); point it at a directory")
    return None


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def _from_pretrained(kind: str, name: str, load: Callable[[], Any]) -> Any:
    """`load()`, its errors turned into one line: a broken local directory, or an unreachable hub."""
    try:
        return load()
    except Exception as error:
        if Path(name).is_dir():
            raise _broken_dir(kind, name, error) from None
        if broken_link := _broken_link(kind, name):
            raise broken_link from None
        if isinstance(error, OSError):
            raise _unavailable(kind, name, error) from None
        raise


def load_model(name: str, *, trust_remote_code: bool = False, **kwargs: Any):
    """`AutoModelForCausalLM.from_pretrained(name)`, failing fast when it needs an unreachable hub,
    and in one line naming the file when a local directory is broken."""
    from transformers import AutoModelForCausalLM

    if Path(name).is_dir():
        check_model_dir(Path(name))
    return _from_pretrained(
        "model", name, lambda: AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """`AutoTokenizer.from_pretrained(name)`, failing fast when it needs an unreachable hub."""
    from transformers import AutoTokenizer

    return _from_pretrained(
        "tokenizer", name, lambda: AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    )


def load_dataset(path: str, name: str | None = None, **kwargs: Any):
    """`datasets.load_dataset(path, name, ...)`, failing fast when it needs an unreachable hub."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset(path, name, **kwargs)
    except (OSError, DatasetNotFoundError) as error:
        raise _unavailable("dataset", path, error) from None
