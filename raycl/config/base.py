"""The base of every config model, the one config error, and the one way to read a YAML file.

Pydantic and PyYAML only: every module of `raycl.config` builds on this one, and nothing here imports
the rest of raycl.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are errors, NaN and infinity are too, and a config never changes once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the file and the key.

    A file with several problems gives one line each in `lines`; the message is the first.
    """

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = lines or [message]


def did_you_mean(given: Any, known: Any) -> str:
    """` (did you mean X?)` when one of `known` is close to `given`, else ''."""
    close = difflib.get_close_matches(str(given), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _members(annotation: Any) -> list[Any]:
    """An annotation's alternatives, with Optional, unions and Annotated taken apart."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(annotation: Any, part: str | int) -> list[Any]:
    """What sits under `part` of a value of this type: a model's field, a dict's value, a list's item."""
    if _is_model(annotation):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return _members(field.annotation) if field else []
    if get_origin(annotation) is dict:
        return _members(get_args(annotation)[1])
    if get_origin(annotation) in (list, tuple):
        return _members(get_args(annotation)[0])
    return []


def _tagged(annotation: Any, tag: str) -> bool:
    """Whether a union member is the one a tag (`kind:field=value`) selects."""
    field, value = tag.split(":")[1].split("=")
    fields = annotation.model_fields if _is_model(annotation) else {}
    return field in fields and value in get_args(fields[field].annotation)


def known_keys(model: type[BaseModel], location: tuple[str | int, ...]) -> tuple[set[str], set[str]]:
    """The keys accepted where `location` points (a key's parents, tags of tagged unions included), and those of
    every alternative there (another method's keys, say)."""
    current, alternatives = [model], [model]
    for part in location:
        if isinstance(part, str) and ":" in part and "=" in part:
            current = [member for member in current if _tagged(member, part)]
        else:
            current = alternatives = [inner for outer in current for inner in _step(outer, part)]
    keys = {name for member in current if _is_model(member) for name in member.model_fields}
    return keys, {name for member in alternatives if _is_model(member) for name in member.model_fields}


Model = TypeVar("Model", bound=BaseModel)


def problem_lines(
    error: ValidationError, source: str, prefix: tuple[str, ...] = (), model: type[BaseModel] | None = None
) -> list[str]:
    """Every problem of a pydantic error, each as `source: dotted.key: message`, with a did-you-mean where a
    known key or value of `model` is close to the one given."""
    return [_problem_line(problem, source, prefix, model) for problem in error.errors()]


def _problem_line(first: Any, source: str, prefix: tuple[str, ...], model: type[BaseModel] | None) -> str:
    """One problem as a line.

    A validator that checks several fields names the one at fault first, relative to its model
    (`high: empty range`), and that name joins the key.
    """
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
        if model is not None:
            accepted, alternatives = known_keys(model, first["loc"][:-1])
            if first["loc"][-1] not in alternatives:
                message += did_you_mean(first["loc"][-1], accepted)
    elif first["type"] == "union_tag_invalid" and "ctx" in first:
        field, given = first["ctx"]["tag"].split(":")[1].split("=")
        expected = re.sub(r"[a-z_]+:[a-z_]+=", "", first["ctx"]["expected_tags"])
        suggestion = did_you_mean(given, re.findall(r"'([^']*)'", expected))
        key, message = f"{key}.{field}", f"{given!r} is not one of {expected}{suggestion}"
    elif first["type"] == "literal_error":
        message += did_you_mean(first["input"], re.findall(r"'([^']*)'", first["ctx"]["expected"]))
    elif first["type"] == "value_error" and (named := re.match(r"([\w.]+(?:\[\d+\])?): (.*)", message)):
        key, message = f"{key}.{named[1]}" if key else named[1], named[2]
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


def validate(model: type[Model], data: Any, source: str, prefix: tuple[str, ...] = ()) -> Model:
    """`model` validated from `data`, or a one-line `ConfigError` naming `source` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        lines = problem_lines(error, source, prefix, model)
        raise ConfigError(lines[0], lines) from None


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


def parse_overrides(items: Iterable[str], source: str) -> dict[str, Any]:
    """`key=value` items as a dict of dotted keys to YAML-read values (`8` -> 8, `lora` -> 'lora')."""
    parsed = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"{source}: {item!r}: an override is KEY=VALUE, e.g. budget.trials=2")
        try:
            parsed[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{source}: {key}: {value!r} is not a YAML value") from None
    return parsed


def apply_overrides(data: dict[str, Any], items: Iterable[str], source: str) -> dict[str, Any]:
    """A copy of a config's YAML mapping with `key=value` items set; a key may run through a dotted
    parameter name (`parameters.train.lr.high=0.01`)."""
    data = copy.deepcopy(data)
    for dotted_key, value in parse_overrides(items, source).items():
        node, parts = data, dotted_key.split(".")
        while len(parts) > 1:
            # The longest run of parts that is a key here: `train.lr` under parameters is one key.
            length = next((n for n in range(len(parts) - 1, 0, -1) if ".".join(parts[:n]) in node), 1)
            key, parts = ".".join(parts[:length]), parts[length:]
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {dotted_key}: {key} is not a section")
        node[parts[0]] = value
    return data
