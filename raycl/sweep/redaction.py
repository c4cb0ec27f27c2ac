"""What may be recorded: trial configs become MLflow params, URLs become tags, secrets become neither."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from raycl.config.base import dotted

_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)$", re.IGNORECASE
)
_SECRET_VALUE = ("hf_", "sk-", "ghp_", "github_pat_", "AKIA")


def is_secret(key: str, value: Any) -> bool:
    """Keys named like credentials, and values shaped like hub/cloud tokens, are never logged."""
    leaf = key.rsplit(".", 1)[-1]
    return bool(_SECRET_KEY.search(leaf)) or (isinstance(value, str) and value.startswith(_SECRET_VALUE))


def redact_url(url: str) -> str:
    """A database/server URL with any password replaced by ***: in the user part
    (`postgresql://u:pw@host/db`) and in the query (`?user=u&password=pw`, `?token=...`)."""
    # Edited as text: urlunsplit would turn sqlite:////abs/path into sqlite://abs/path.
    head, mark, query = url.partition("?")
    password = urlsplit(head).password
    if password is not None:
        scheme, _, rest = head.partition("://")
        userinfo, _, host = rest.partition("/")[0].rpartition("@")
        head = head.replace(f"{scheme}://{userinfo}@", f"{scheme}://{userinfo.split(':', 1)[0]}:***@", 1)
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(is_secret(key, value) for key, value in pairs):
        query = urlencode([(key, "***" if is_secret(key, value) else value) for key, value in pairs], safe="*")
    return head + mark + query


def loggable_params(trial_config: dict[str, Any]) -> dict[str, str]:
    """A trial config as MLflow params (strings), secrets left out."""
    return {key: str(value) for key, value in dotted(trial_config).items() if not is_secret(key, value)}
