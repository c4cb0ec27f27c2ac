"""Conversation and document formats: detection, and normalization to one message format.

Every conversation becomes a list of `{"role": "system" | "user" | "assistant", "content": str}`:
an optional system message first, then user and assistant turns alternating, user first, with at
least one assistant turn. Documents become plain strings. A row that cannot be normalized raises
`BadRow` with a short reason, which the loader counts (see `raycl.data.sources`); a speaker it
cannot place raises `UnknownRole`, which stops the load: every row by that speaker would be lost.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from raycl.config.stream import FORMATS, Format, Role

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = list[Message]
RoleMap = Mapping[str, Role] | Literal["alternate"] | None  # the `roles` of a source config

ROLES: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}

# Field names of each format, by canonical name; `fields` overrides in the source config use these keys.
DEFAULT_FIELDS: dict[Format, dict[str, str]] = {
    "messages": {"messages": "messages", "role": "role", "content": "content"},
    "sharegpt": {"conversations": "conversations", "from": "from", "value": "value"},
    "oasst": {"message_id": "message_id", "parent_id": "parent_id", "role": "role", "text": "text", "rank": "rank"},
    "instruction": {"instruction": "instruction", "input": "input", "output": "output"},
    "transcript": {"text": "text"},
    "text": {"text": "text"},
}
# Other common spellings, tried in order when detecting: LMSYS-Chat-1M says `conversation`, Dolly
# says instruction/context/response, and QA sets such as MedQuAD say question/answer.
MESSAGE_LIST_FIELDS = ("messages", "conversation", "conversations")
INSTRUCTION_VARIANTS = (
    {"instruction": "instruction", "input": "input", "output": "output"},
    {"instruction": "instruction", "input": "context", "output": "response"},
    {"instruction": "prompt", "input": "input", "output": "response"},
    {"instruction": "question", "input": "context", "output": "answer"},
)
TRANSCRIPT_MARKER = re.compile(r"(?:^|\n)[ \t]*(Human|User|Assistant|System):[ \t]?")
# A prompt template already in a user turn (Alpaca's, Llama-2's [INST], ChatML, Zephyr's): the chat
# template then wraps a template, and the model learns both.
PROMPT_TEMPLATE = re.compile(
    r"Below is an instruction that describes a task|^###\s*(?:Instruction|Input|Response)\s*:"
    r"|\[/?INST\]|<\|im_start\|>|<\|(?:user|assistant)\|>",
    re.IGNORECASE | re.MULTILINE,
)
DETECT_ROWS = 20  # valid rows that vote on the format when it is `auto`


class DataError(ValueError):
    """Data that cannot be used, phrased as one line naming the file, the line and the problem."""


class BadRow(Exception):
    """One malformed row: `reason` is the short category counted in summaries, `detail` adds specifics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason


class UnknownRole(BadRow):
    """A speaker that is none of the known roles and not in `roles`: the loader stops at the first one."""

    def __init__(self, role: Any) -> None:
        super().__init__("unknown role", repr(role))
        self.role = role


@dataclass(frozen=True)
class Schema:
    """A source's format, the field names it uses (canonical name -> field in the rows), and its speakers' roles."""

    format: Format
    fields: Mapping[str, str] = field(default_factory=dict)
    roles: RoleMap = None


def _message_list_field(row: Mapping[str, Any], key: str) -> str | None:
    """The first list-of-dicts field whose items carry `key` (e.g. `role` or `from`)."""
    for name in MESSAGE_LIST_FIELDS:
        value = row.get(name)
        if isinstance(value, list) and value and isinstance(value[0], dict) and key in value[0]:
            return name
    return None


def detect_row(row: Any) -> Schema | None:
    """The schema a single row looks like, or None."""
    if not isinstance(row, dict):
        return None
    if {"message_id", "parent_id", "role", "text"} <= row.keys():
        return Schema("oasst", DEFAULT_FIELDS["oasst"])
    if name := _message_list_field(row, "from"):
        return Schema("sharegpt", DEFAULT_FIELDS["sharegpt"] | {"conversations": name})
    if name := _message_list_field(row, "role"):
        return Schema("messages", DEFAULT_FIELDS["messages"] | {"messages": name})
    for variant in INSTRUCTION_VARIANTS:
        if variant["instruction"] in row and variant["output"] in row:
            return Schema("instruction", variant)
    text = row.get("text")
    if isinstance(text, str):
        speakers = {match.group(1) for match in TRANSCRIPT_MARKER.finditer(text)}
        transcript = "Assistant" in speakers and bool(speakers & {"Human", "User"})
        return Schema("transcript" if transcript else "text", DEFAULT_FIELDS["text"])
    return None


def _renamed(row: Any, overrides: Mapping[str, str]) -> Any:
    """`row` with each overridden field also under its canonical name, so that detection sees it."""
    if not isinstance(row, dict):
        return row
    return row | {canonical: row[name] for canonical, name in overrides.items() if name in row}


def detect_schema(
    rows: Sequence[Any], format: Format | Literal["auto"], overrides: Mapping[str, str], source: str
) -> Schema:
    """The schema of a source from its first valid rows (majority vote), or the one it was told.

    `overrides` replace field names by canonical name, and guide detection: with `{text: chosen}`,
    rows whose `chosen` holds a Human/Assistant transcript are transcripts. Unknown canonical names
    are an error.
    """
    if format == "auto":
        renamed = [_renamed(row, overrides) for row in rows[:DETECT_ROWS]]
        detected = [schema for schema in map(detect_row, renamed) if schema is not None]
        votes: Counter[tuple[Format, tuple[tuple[str, str], ...]]] = Counter(
            (schema.format, tuple(schema.fields.items())) for schema in detected
        )
        if not votes:
            keys = sorted({key for row in rows[:DETECT_ROWS] if isinstance(row, dict) for key in row})
            raise DataError(
                f"{source}: cannot tell the format from the first {min(len(rows), DETECT_ROWS)} rows "
                f"(fields: {', '.join(keys) or 'none'}); set `format` to one of {', '.join(FORMATS)}"
            )
        voted, fields = votes.most_common(1)[0][0]
        schema = Schema(voted, dict(fields))
    else:
        # Told the format: take its field spelling from the first row that matches it, if any.
        detected = (detect_row(_renamed(row, overrides)) for row in rows[:DETECT_ROWS])
        schema = next(
            (s for s in detected if s is not None and s.format == format), Schema(format, DEFAULT_FIELDS[format])
        )
    unknown = set(overrides) - set(DEFAULT_FIELDS[schema.format])
    if unknown:
        raise DataError(
            f"{source}: fields: {', '.join(sorted(unknown))} not a field of format {schema.format} "
            f"(its fields: {', '.join(DEFAULT_FIELDS[schema.format])})"
        )
    return Schema(schema.format, {**schema.fields, **overrides})


def _get(row: Mapping[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise BadRow(f"missing field {name!r}")
    return row[name]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRow("non-string content", type(value).__name__)
    if not value.strip():
        raise BadRow("empty content")
    return value


def role_of(raw_role: Any, roles: RoleMap) -> Role:
    """The role of a speaker: from the `roles` map, else the usual names (user, human, gpt, ...)."""
    if not isinstance(raw_role, str):
        raise UnknownRole(raw_role)
    if isinstance(roles, Mapping) and raw_role in roles:
        return roles[raw_role]
    role = ROLES.get(raw_role.lower())
    if role is None:
        raise UnknownRole(raw_role)
    return role


def clean_conversation(turns: Sequence[tuple[Any, Any]], roles: RoleMap = None) -> tuple[Conversation, int]:
    """Validated messages from (role, content) pairs, and the number of leading assistant turns dropped.

    `roles` maps speaker names to roles; `alternate` ignores the speakers: user first, then assistant,
    and so on. Conversations that open with the assistant (common in ShareGPT dumps, cut mid-chat)
    lose those turns: the reply to an unseen prompt teaches the wrong thing. Any other irregularity
    is a BadRow.
    """
    messages: Conversation = []
    for index, (raw_role, raw_content) in enumerate(turns):
        role = ("user", "assistant")[index % 2] if roles == "alternate" else role_of(raw_role, roles)
        messages.append({"role": role, "content": _text(raw_content)})
    if not messages:
        raise BadRow("empty conversation")
    start = 1 if messages[0]["role"] == "system" else 0
    dropped = 0
    while start + dropped < len(messages) and messages[start + dropped]["role"] == "assistant":
        dropped += 1
    messages = messages[:start] + messages[start + dropped :]
    body = messages[start:]
    if not any(message["role"] == "user" for message in body):
        raise BadRow("no user turn")
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise BadRow(
                "wrong role sequence", f"turn {start + dropped + index + 1} is {message['role']}, expected {expected}"
            )
    if len(body) < 2:
        raise BadRow("no assistant turn")
    return messages, dropped


def _message_turns(items: Any, role_field: str, content_field: str) -> list[tuple[Any, Any]]:
    if not isinstance(items, list):
        raise BadRow("malformed conversation", f"a {type(items).__name__}, expected a list of messages")
    turns = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRow("malformed conversation", f"a message is a {type(item).__name__}")
        turns.append((_get(item, role_field), _get(item, content_field)))
    return turns


def _transcript_turns(text: str) -> list[tuple[str, str]]:
    markers = list(TRANSCRIPT_MARKER.finditer(text))
    if not markers or text[: markers[0].start()].strip():
        raise BadRow("text outside turns", "a transcript must start with a `Human:` or `Assistant:` marker")
    ends = [marker.start() for marker in markers[1:]] + [len(text)]
    return [(marker.group(1), text[marker.end() : end].strip()) for marker, end in zip(markers, ends)]


def normalize_row(schema: Schema, row: Mapping[str, Any]) -> tuple[Conversation | str, int]:
    """A row's conversation (or document, for `text`) and the count of leading assistant turns dropped."""
    f = schema.fields
    if schema.format == "text":
        return _text(_get(row, f["text"])), 0
    if schema.format == "messages":
        turns = _message_turns(_get(row, f["messages"]), f["role"], f["content"])
    elif schema.format == "sharegpt":
        turns = _message_turns(_get(row, f["conversations"]), f["from"], f["value"])
    elif schema.format == "instruction":
        prompt = _text(_get(row, f["instruction"]))
        context = row.get(f["input"])
        if context is not None and not isinstance(context, str):
            raise BadRow("non-string content", type(context).__name__)
        # Alpaca's `input` and Dolly's `context` are optional context for the instruction.
        user = f"{prompt}\n\n{context}" if context and context.strip() else prompt
        turns = [("user", user), ("assistant", _get(row, f["output"]))]
    elif schema.format == "transcript":
        turns = _transcript_turns(_text(_get(row, f["text"])))
    else:
        raise ValueError(f"format {schema.format} is not row-wise")  # oasst: see oasst_threads
    return clean_conversation(turns, schema.roles)


def holds_prompt_template(conversation: Conversation | str) -> bool:
    """Whether a user turn already holds a prompt template (`### Response:`, `[INST]`, ...)."""
    return isinstance(conversation, list) and any(
        message["role"] == "user" and PROMPT_TEMPLATE.search(message["content"]) for message in conversation
    )


def content_fields(schema: Schema) -> set[str]:
    """The row fields that hold the conversation itself (everything else is metadata)."""
    return set(schema.fields.values())


@dataclass(frozen=True)
class OasstMessage:
    id: str
    parent: str | None
    role: str
    text: str
    rank: int | None
    number: int  # line or record number in the source


def oasst_message(schema: Schema, row: Mapping[str, Any], number: int) -> OasstMessage:
    """One validated oasst1 message row."""
    f = schema.fields
    message_id = _get(row, f["message_id"])
    parent = row.get(f["parent_id"])
    if not isinstance(message_id, str) or not (parent is None or isinstance(parent, str)):
        raise BadRow("malformed message id")
    raw_role = _get(row, f["role"])
    role = role_of(raw_role, schema.roles)
    if role == "system":
        raise UnknownRole(raw_role)  # a tree has prompts and replies only
    rank = row.get(f["rank"])
    return OasstMessage(
        message_id, parent, role, _text(_get(row, f["text"])), rank if isinstance(rank, int) else None, number
    )


def oasst_threads(
    messages: Sequence[OasstMessage], paths: Literal["best", "all"]
) -> tuple[list[tuple[OasstMessage, list[OasstMessage]]], list[OasstMessage]]:
    """Root-to-leaf threads of oasst1 message trees (each with its root), and the messages no root reaches.

    `best` follows, from each root, the best-ranked reply at every turn (rank 0 first, unranked
    replies after ranked ones, ties in file order): this reproduces the threads the oasst1
    maintainers published. `all` gives every root-to-leaf path.
    """
    children: dict[str | None, list[OasstMessage]] = {}
    for message in messages:
        children.setdefault(message.parent, []).append(message)
    for replies in children.values():
        replies.sort(key=lambda m: (m.rank is None, m.rank or 0))  # stable: ties stay in file order

    threads: list[tuple[OasstMessage, list[OasstMessage]]] = []
    for root in children.get(None, []):
        stack = [[root]]
        while stack:
            path = stack.pop()
            replies = children.get(path[-1].id, [])
            if not replies:
                threads.append((root, path))
            else:
                chosen = replies[:1] if paths == "best" else replies
                stack.extend([*path, reply] for reply in reversed(chosen))

    reached: set[str] = set()
    stack = [message.id for message in children.get(None, [])]
    while stack:
        message_id = stack.pop()
        reached.add(message_id)
        stack.extend(reply.id for reply in children.get(message_id, []))
    return threads, [message for message in messages if message.id not in reached]
