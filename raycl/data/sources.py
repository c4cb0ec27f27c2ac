"""Loading conversations and documents from local files or the hub, with bad-row accounting.

Local files: `.jsonl`, `.json` (an array of records, or JSON lines), either gzipped (`.jsonl.gz`,
`.json.gz`), `.parquet`, and `.txt` (plain text, cut into documents of whole lines). Hub datasets go
through `raycl.artifacts.hub.load_dataset`, streamed and cut to the first `limit` rows. Malformed rows
are skipped and counted by reason in a `LoadSummary`; above `max_bad_fraction`, or when no row is
usable, the load fails with one line naming the first bad row. An unknown speaker fails it at once,
naming the line and the role.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Literal

from raycl.artifacts import hub
from raycl.config.stream import LOCAL_SUFFIXES, DataSourceConfig, ReplayCorpusConfig, local_suffix
from raycl.data.formats import (
    DEFAULT_FIELDS,
    DETECT_ROWS,
    BadRow,
    Conversation,
    DataError,
    OasstMessage,
    Schema,
    UnknownRole,
    clean_conversation,
    content_fields,
    detect_schema,
    holds_prompt_template,
    normalize_row,
    oasst_message,
    oasst_threads,
)

log = logging.getLogger(__name__)

FIRST_LOCATIONS = 5  # line numbers kept per skip reason


@dataclass(frozen=True)
class Example:
    """One normalized conversation (or document) with the row's other fields, for stage splitting."""

    content: Conversation | str
    meta: dict[str, Any]
    number: int  # line (or record) number of its row; the root message for oasst threads


@dataclass
class LoadSummary:
    """What a load kept and skipped, by reason; `number`s are lines (.jsonl/.txt) or 1-based records."""

    source: str
    format: str = ""
    unit: str = "line"
    rows: int = 0
    examples: int = 0
    turns: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_at: dict[str, list[int]] = field(default_factory=dict)
    dropped_turns: Counter[str] = field(default_factory=Counter)
    templated: list[int] = field(
        default_factory=list
    )  # numbers of the examples whose user turns hold a prompt template
    first_bad: tuple[int, str] | None = None  # (number, reason with detail) of the earliest malformed row

    def skip(self, number: int, bad: BadRow) -> None:
        self.skipped[bad.reason] += 1
        numbers = self.skipped_at.setdefault(bad.reason, [])
        if len(numbers) < FIRST_LOCATIONS:
            numbers.append(number)
        # oasst trees are checked after all rows: keep the earliest row, not the earliest found.
        if self.first_bad is None or number < self.first_bad[0]:
            self.first_bad = (number, str(bad))

    def check(self, max_bad_fraction: float) -> None:
        """Raise a one-line `DataError` when more than `max_bad_fraction` of the rows were malformed."""
        bad = sum(self.skipped.values())
        if self.rows == 0:
            raise DataError(f"{self.source}: no rows")
        if self.examples == 0 and self.first_bad is not None:
            raise DataError(
                f"{self.source}: {self.unit} {self.first_bad[0]}: {self.first_bad[1]}; no usable rows ({bad} of "
                f"{self.rows} malformed)"
            )
        if bad / self.rows > max_bad_fraction:
            assert self.first_bad is not None  # bad > 0: `skip` recorded one
            raise DataError(
                f"{self.source}: {self.unit} {self.first_bad[0]}: {self.first_bad[1]}; {bad} of {self.rows} rows "
                f"malformed ({bad / self.rows:.1%}), more than max_bad_fraction {max_bad_fraction:.1%}"
            )

    def describe(self) -> str:
        """One line for logs."""
        parts = [f"{self.source} ({self.format}): {self.examples} examples, {self.turns} turns from {self.rows} rows"]
        if self.skipped:
            skips = []
            for reason, count in self.skipped.items():
                numbers = ", ".join(map(str, self.skipped_at[reason])) + ("..." if count > FIRST_LOCATIONS else "")
                skips.append(f"{count} {reason} ({self.unit}s {numbers})")
            parts.append("skipped " + ", ".join(skips))
        if self.dropped_turns:
            parts.append(
                "dropped turns: " + ", ".join(f"{count} {reason}" for reason, count in self.dropped_turns.items())
            )
        return "; ".join(parts)


def _bounded_lines(handle: IO[str], limit: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of the file's lines, read `limit` characters at most at a time: a longer line comes
    in pieces cut after their last space or tab (or at the limit, where a piece has none), all with its number."""
    number, carry = 1, ""
    while piece := carry + handle.readline(limit - len(carry)):
        carry = ""
        if len(piece) == limit and not piece.endswith("\n"):
            cut = max(piece.rfind(" "), piece.rfind("\t")) + 1 or limit
            piece, carry = piece[:cut], piece[cut:]
        yield number, piece
        number += piece.endswith("\n")


def _text_documents(path: Path, max_chars: int) -> Iterator[tuple[int, dict[str, str]]]:
    """Whole lines grouped into documents of at most `max_chars`, numbered by first line; a longer line is cut
    into documents at spaces. Read as they are used: a huge file, or a line without end, costs memory in
    proportion to the documents taken."""
    if max_chars == 0:
        yield 1, {"text": path.read_text(encoding="utf-8")}
        return
    with path.open(encoding="utf-8") as handle:
        start, size, lines = 1, 0, []
        for number, line in _bounded_lines(handle, max_chars):
            if size and size + len(line) > max_chars:
                yield start, {"text": "".join(lines)}
                size, lines = 0, []
            if not lines:
                start = number
            lines.append(line)
            size += len(line)
        if lines:
            yield start, {"text": "".join(lines)}


def _open(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with _open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue  # blank lines separate nothing and hold no row
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadRow("unparseable JSON", f"{error.msg.removesuffix(' at')} at column {error.colno}")


def _rows(config: DataSourceConfig, summary: LoadSummary) -> Iterator[tuple[int, Any]]:
    """(number, row) pairs of the source; a row that could not even be parsed is a `BadRow`."""
    if config.hub is not None:
        summary.unit = "row"
        kwargs = {"split": config.split, "streaming": config.streaming}
        dataset = hub.load_dataset(config.hub, config.subset, **kwargs)
        if config.limit is not None:
            dataset = (
                dataset.take(config.limit)
                if config.streaming
                else dataset.select(range(min(config.limit, len(dataset))))
            )
        yield from enumerate(dataset, 1)
        return
    assert config.path is not None  # a source names exactly one of `path` and `hub`
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = local_suffix(path)
    if suffix == ".txt":
        yield from _text_documents(path, config.document_chars)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        summary.unit = "row"
        batches = pq.ParquetFile(path).iter_batches()
        yield from enumerate((row for batch in batches for row in batch.to_pylist()), 1)
    elif suffix in (".json", ".json.gz"):
        with _open(path) as handle:
            text = handle.read()
        if not text.lstrip().startswith("["):
            yield from _json_lines(path)  # many `.json` files are JSON lines
            return
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            # One syntax error loses the whole array: there are no row boundaries to resume at.
            raise DataError(
                f"{path}: line {error.lineno}: unparseable JSON ({error.msg}); the whole array is unreadable"
            ) from None
        summary.unit = "record"
        yield from enumerate(records, 1)
    else:
        yield from _json_lines(path)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, date, datetime))


def load_examples(config: DataSourceConfig, required_fields: Sequence[str] = ()) -> tuple[list[Example], LoadSummary]:
    """Every usable conversation or document of `config`, and the summary of what was skipped.

    Rows lacking one of `required_fields` (stage or date fields) count as malformed too.
    """
    summary = LoadSummary(source=config.name)
    examples = list(iter_examples(config, summary, required_fields))
    finish_load(summary, config)
    return examples, summary


def iter_examples(
    config: DataSourceConfig, summary: LoadSummary, required_fields: Sequence[str] = ()
) -> Iterator[Example]:
    """The usable examples of `config` as they are read, counted in `summary` (rows, skips, examples); a caller
    that stops early has read only that far. `finish_load` then checks the share of malformed rows read."""
    rows = _rows(config, summary)
    if config.limit is not None:
        rows = itertools.islice(rows, config.limit)
    head: list[tuple[int, Any]] = []
    if config.path is not None and local_suffix(config.path) == ".txt":
        if config.format not in ("auto", "text"):
            raise DataError(f"{config.path}: a .txt file holds plain text, not format {config.format}")
        schema = Schema("text", DEFAULT_FIELDS["text"])  # the documents are cut from the file itself
    else:
        for number, row in rows:
            head.append((number, row))
            if sum(isinstance(r, dict) for _, r in head) >= DETECT_ROWS:
                break
        schema = detect_schema([r for _, r in head if isinstance(r, dict)], config.format, config.fields, config.name)
    if config.roles == "alternate" and schema.format in ("oasst", "text"):
        raise DataError(
            f"{config.name}: roles: alternate is for conversations, and format {schema.format} has no turns to "
            "alternate"
        )
    schema = dataclasses.replace(schema, roles=config.roles)
    summary.format = schema.format
    meta_excluded = content_fields(schema)

    def counted(example: Example) -> Example:
        summary.examples += 1
        summary.turns += len(example.content) if isinstance(example.content, list) else 0
        if holds_prompt_template(example.content):
            summary.templated.append(example.number)
        return example

    messages: list[OasstMessage] = []
    message_meta: dict[str, dict[str, Any]] = {}
    for number, row in itertools.chain(head, rows):
        summary.rows += 1
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, dict):
                raise BadRow("not a JSON object", type(row).__name__)
            missing = [name for name in required_fields if row.get(name) is None]
            if missing:
                raise BadRow(f"missing field {missing[0]!r}")
            meta = {key: value for key, value in row.items() if key not in meta_excluded and _scalar(value)}
            if schema.format == "oasst":
                message = oasst_message(schema, row, number)
                if message.id in message_meta:
                    raise BadRow("duplicate message_id", message.id)
                messages.append(message)
                message_meta[message.id] = meta
                continue
            content, dropped = normalize_row(schema, row)
        except UnknownRole as unknown:
            raise DataError(
                f"{config.name}: {summary.unit} {number}: unknown role {unknown.role!r}; map speakers to roles with "
                f"`roles: {{{unknown.role}: user, ...}}` (user, assistant, system) or `roles: alternate`"
            ) from None
        except BadRow as bad:
            summary.skip(number, bad)
            continue
        if dropped:
            summary.dropped_turns["leading assistant turn"] += dropped
        yield counted(Example(content, meta, number))

    if schema.format == "oasst":  # trees are whole only once every row is read
        yield from map(counted, _oasst_examples(messages, message_meta, config.oasst_paths, summary))


def finish_load(summary: LoadSummary, config: DataSourceConfig) -> None:
    """Check the share of malformed rows read (`LoadSummary.check`), and log what the load kept."""
    summary.check(config.max_bad_fraction)
    log.info(summary.describe())
    if summary.templated:
        log.warning(
            "%s: %d of %d examples already hold a prompt template in a user turn (first: %s %d), and the chat template "
            "wraps them again; strip it from the data, or load the rows as plain text (format: text)",
            config.name,
            len(summary.templated),
            summary.examples,
            summary.unit,
            summary.templated[0],
        )


def _oasst_examples(
    messages: list[OasstMessage], meta: dict[str, dict[str, Any]], paths: Literal["best", "all"], summary: LoadSummary
) -> list[Example]:
    threads, unreached = oasst_threads(messages, paths)
    for message in unreached:
        summary.skip(message.number, BadRow("parent missing or skipped"))
    examples = []
    for root, path in threads:
        try:
            conversation, dropped = clean_conversation([(m.role, m.text) for m in path])
        except BadRow as bad:
            summary.skip(path[-1].number, bad)
            continue
        if dropped:
            summary.dropped_turns["leading assistant turn"] += dropped
        examples.append(Example(conversation, meta[root.id], root.number))
    if paths == "best":
        # Replies off the best-ranked path are well-formed rows left out by choice: say how many.
        on_paths = {message.id for _, path in threads for message in path}
        off_path = len(messages) - len(unreached) - len(on_paths)
        if off_path:
            summary.dropped_turns["not on the best-ranked path"] += off_path
    return examples


def load_documents(config: DataSourceConfig) -> tuple[list[str], LoadSummary]:
    """The documents of a plain-text source (format `text`)."""
    examples, summary = load_examples(config)
    if summary.format != "text":
        raise DataError(f"{config.name}: holds {summary.format} conversations, expected plain text documents")
    # A text source's contents are all documents (str), never conversations.
    return [example.content for example in examples if isinstance(example.content, str)], summary


def corpus_sources(config: ReplayCorpusConfig) -> list[DataSourceConfig]:
    """One text source per file of the corpus (directories expanded, sorted), or its hub split."""
    common = {
        "format": "text",
        "fields": {"text": config.text_field},
        "limit": config.max_documents,
        "document_chars": config.document_chars,
        "max_bad_fraction": config.max_bad_fraction,
    }
    if config.hub is not None:
        return [DataSourceConfig(hub=config.hub, subset=config.subset, split=config.split, **common)]
    files: list[Path] = []
    for entry in map(Path, config.paths):
        if not entry.exists():
            raise DataError(f"{entry}: no such file or directory")
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if local_suffix(p) is not None)
            if not found:
                raise DataError(f"{entry}: no {'/'.join(LOCAL_SUFFIXES)} files in this directory")
            files += found
        else:
            files.append(entry)
    return [DataSourceConfig(path=str(path), **common) for path in files]


def load_replay_documents(config: ReplayCorpusConfig) -> list[str]:
    """Every document of the replay corpus, file after file (the first `max_documents` of each)."""
    return [document for source in corpus_sources(config) for document in load_documents(source)[0]]
