"""What may be recorded: trial configs become MLflow params, URLs become tags, secrets become neither."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from raycl.config.base import dotted

_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)$", re.IGNORECASE)
_SECRET_VALUE = ("hf_", "sk-", "ghp_", "github_pat_", "AKIA")


def is_secret(key: str, value: Any) -> bool:
    """Keys named like credentials, and values shaped like hub/cloud tokens, are never logged."""
    leaf = key.rsplit(".", 1)[-1]
    return bool(_SECRET_KEY.search(leaf)) or (isinstance(value, str) and value.startswith(_SECRET_VALUE))


def redact_url(url: str) -> str:
    """A database/server URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def loggable_params(trial_config: dict[str, Any]) -> dict[str, str]:
    """A trial config as MLflow params (strings), secrets left out."""
    return {key: str(value) for key, value in dotted(trial_config).items() if not is_secret(key, value)}
