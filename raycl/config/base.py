"""The base of every config model, the one config error, and the one way to read a YAML file.

Pydantic and PyYAML only: every module of `raycl.config` builds on this one, and nothing here imports
the rest of raycl.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors, NaN and infinity are too, and a config never changes once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the file and the key."""


Model = TypeVar("Model", bound=BaseModel)


def one_line(error: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    """The first problem of a pydantic error as `source: dotted.key: message`.

    A validator that checks several fields names the one at fault first, relative to its model
    (`high: empty range`), and that name joins the key.
    """
    first = error.errors()[0]
    key = ""
    variant = None
    for part in (*prefix, *first["loc"]):
        if isinstance(part, int):
            key += f"[{part}]"
        elif "=" in part:
            # A member of a tagged union (tags spelled `kind:field=value`) shows in the location, but is no key.
            kind, value = part.split(":")[0], part.split("=")[1]
            variant = f"a {value} {kind}"
        else:
            key += f".{part}" if key else part
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"not used by {variant}" if variant else "unknown key"
    elif first["type"] == "union_tag_invalid" and "ctx" in first:
        field, given = first["ctx"]["tag"].split(":")[1].split("=")
        key, message = f"{key}.{field}", f"{given!r} is not one of {re.sub(r'[a-z_]+:[a-z_]+=', '', first['ctx']['expected_tags'])}"
    elif first["type"] == "value_error" and (named := re.match(r"([\w.]+(?:\[\d+\])?): (.*)", message)):
        key, message = f"{key}.{named[1]}" if key else named[1], named[2]
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


def validate(model: type[Model], data: Any, source: str, prefix: tuple[str, ...] = ()) -> Model:
    """`model` validated from `data`, or a one-line `ConfigError` naming `source` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(one_line(error, source, prefix)) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"line {line}: key {key!r} is given twice")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`, or a `ConfigError` naming the file."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except _DuplicateKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    return data


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (`{"train": {"lr": 1}}` -> `{"train.lr": 1}`), the keys a search space uses."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
