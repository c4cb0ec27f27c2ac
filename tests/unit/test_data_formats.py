"""Every conversation format loads from a tiny fixture; malformed rows are counted or fail in one line."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from raycl.artifacts.hub import HubUnavailableError
from raycl.config.stream import DataSourceConfig, ReplayCorpusConfig
from raycl.data.formats import BadRow, DataError, clean_conversation
from raycl.data.sources import load_examples, load_replay_documents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def load(name: str, **options):
    return load_examples(DataSourceConfig(path=str(FIXTURES / name), **options))


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def test_lmsys_rows_keep_their_metadata() -> None:
    examples, summary = load("lmsys.jsonl")
    assert (summary.format, summary.rows, summary.examples, summary.turns) == ("messages", 3, 3, 9)
    assert examples[0].content == [user("What is the capital of France?"), assistant("Paris.")]
    assert examples[1].meta["language"] == "Spanish" and "conversation" not in examples[1].meta
    assert examples[2].content[0] == {"role": "system", "content": "You are terse."}


def test_sharegpt_drops_leading_assistant_turns_and_counts_them() -> None:
    examples, summary = load("sharegpt.json", max_bad_fraction=0.5)
    assert summary.format == "sharegpt" and summary.unit == "record"
    assert [e.meta["id"] for e in examples] == ["s1", "s2", "s4"]
    assert examples[1].content == [user("Thanks! One more?"), assistant("Sure: bananas.")]
    assert summary.dropped_turns == {"leading assistant turn": 1}
    assert summary.skipped == {"no user turn": 1} and summary.skipped_at == {"no user turn": [3]}
    assert summary.turns == 2 + 2 + 5


def test_oasst_best_ranked_threads() -> None:
    examples, summary = load("oasst_messages.jsonl", max_bad_fraction=0.5)
    assert summary.format == "oasst"
    assert [e.content for e in examples] == [
        [
            user("How do plants eat?"),
            assistant("Plants make sugar from light, water and CO2."),  # rank 0 beats rank 1
            user("Where does that happen?"),
            assistant("In the chloroplasts."),
        ],
        [user("Tell me a joke."), assistant("Why did the chicken cross the road?")],
    ]
    assert examples[1].meta["message_tree_id"] == "t2" and examples[1].number == 7
    assert summary.skipped == {"parent missing or skipped": 1} and summary.skipped_at["parent missing or skipped"] == [
        9
    ]
    assert summary.dropped_turns == {"not on the best-ranked path": 2}


def test_oasst_all_paths() -> None:
    examples, summary = load("oasst_messages.jsonl", oasst_paths="all", max_bad_fraction=0.5)
    assert sorted(len(e.content) for e in examples) == [2, 3, 4]
    assert summary.examples == 3 and summary.turns == 9 and "not on the best-ranked path" not in summary.dropped_turns


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("alpaca.jsonl", [user("Give three tips for staying healthy."), assistant("Eat well, sleep, move.")]),
        (
            "dolly.jsonl",
            [
                user("When was the telescope invented?\n\nThe first telescopes appeared in the Netherlands in 1608."),
                assistant("In 1608."),
            ],
        ),
        ("prompt_response.jsonl", [user("Say hi."), assistant("Hi!")]),
    ],
)
def test_instruction_variants(name: str, first: list[dict[str, str]]) -> None:
    examples, summary = load(name)
    assert summary.format == "instruction" and summary.examples == 2 and summary.turns == 4
    assert examples[0].content == first


def test_instruction_input_joins_the_instruction() -> None:
    examples, _ = load("alpaca.jsonl")
    assert examples[1].content[0] == user("Translate to French.\n\nGood morning")


def test_human_assistant_transcripts() -> None:
    examples, summary = load("transcripts.jsonl")
    assert summary.format == "transcript" and summary.turns == 6
    assert examples[1].content == [
        user("Hi there"),
        assistant("Hello! How can I help?"),
        user("Tell me about owls."),
        assistant("Owls are nocturnal birds of prey."),
    ]


def test_parquet_loads_like_jsonl(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "lmsys.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "lmsys.parquet")
    examples, summary = load_examples(DataSourceConfig(path=str(tmp_path / "lmsys.parquet")))
    assert summary.unit == "row" and [e.content for e in examples] == [e.content for e in load("lmsys.jsonl")[0]]


def test_format_override_and_field_names(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"q": "Why?", "a": "Because.", "topic": "x"}) + "\n")
    with pytest.raises(DataError, match=r"qa.jsonl: cannot tell the format .*fields: a, q, topic"):
        load_examples(DataSourceConfig(path=str(path)))
    config = DataSourceConfig(path=str(path), format="instruction", fields={"instruction": "q", "output": "a"})
    examples, _ = load_examples(config)
    assert examples[0].content == [user("Why?"), assistant("Because.")] and examples[0].meta == {"topic": "x"}
    with pytest.raises(DataError, match="fields: answer not a field of format instruction"):
        load_examples(DataSourceConfig(path=str(path), format="instruction", fields={"answer": "a"}))


def test_a_broken_line_under_the_threshold_is_skipped_and_counted() -> None:
    examples, summary = load("broken.jsonl", max_bad_fraction=0.1)
    assert summary.rows == 10 and summary.examples == 9
    assert summary.skipped == {"unparseable JSON": 1} and summary.skipped_at == {"unparseable JSON": [4]}
    assert "skipped 1 unparseable JSON (lines 4)" in summary.describe()


def test_a_broken_line_over_the_threshold_fails_in_one_line() -> None:
    with pytest.raises(DataError) as error:
        load("broken.jsonl")  # 1 of 10 rows is 10%, over the default 5%
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{FIXTURES / 'broken.jsonl'}: line 4: unparseable JSON (")
    assert message.endswith("1 of 10 rows malformed (10.0%), more than max_bad_fraction 5.0%")


def test_a_json_array_with_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "chats.json"
    path.write_text('[\n {"conversations": []},\n {"conversations": [}\n]\n')
    with pytest.raises(
        DataError, match=r"chats.json: line 3: unparseable JSON \(Expecting value\); the whole array is unreadable"
    ):
        load_examples(DataSourceConfig(path=str(path)))


def test_every_kind_of_bad_row_is_counted_by_reason() -> None:
    examples, summary = load("bad_rows.jsonl", max_bad_fraction=1.0)
    assert [e.number for e in examples] == [1, 10, 12]  # line 11 is blank: not a row
    assert summary.rows == 11
    assert summary.skipped_at == {
        "unparseable JSON": [2],
        "missing field 'conversation'": [3],
        "empty content": [4],
        "non-string content": [5],
        "wrong role sequence": [6],
        "malformed conversation": [7],
        "not a JSON object": [8],
        "no assistant turn": [9],
    }
    assert sum(summary.skipped.values()) == 8


def test_required_fields_make_rows_without_them_malformed_and_no_usable_row_fails_at_once() -> None:
    # max_bad_fraction 1.0 tolerates any share of bad rows, but not a load that kept none.
    with pytest.raises(
        DataError, match=r"dolly.jsonl: line 1: missing field 'year'; no usable rows \(2 of 2 malformed\)$"
    ):
        load_examples(
            DataSourceConfig(path=str(FIXTURES / "dolly.jsonl"), max_bad_fraction=1.0), required_fields=("year",)
        )


def test_clean_conversation_rules() -> None:
    assert clean_conversation([("human", "a"), ("gpt", "b"), ("human", "c")]) == (
        [user("a"), assistant("b"), user("c")],
        0,
    )
    assert clean_conversation([("system", "s"), ("gpt", "x"), ("human", "a"), ("gpt", "b")])[1] == 1
    for turns, reason in [
        ([("human", "a"), ("system", "s"), ("gpt", "b")], "wrong role sequence"),
        ([], "empty conversation"),
        ([("gpt", "a")], "no user turn"),
        ([("human", "a")], "no assistant turn"),
    ]:
        with pytest.raises(BadRow) as error:
            clean_conversation(turns)
        assert error.value.reason == reason


def test_text_files_become_documents_without_losing_a_character(tmp_path: Path) -> None:
    text = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(50))
    (tmp_path / "corpus.txt").write_text(text)
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    config = ReplayCorpusConfig(paths=(str(tmp_path),), document_chars=100)
    documents = load_replay_documents(config)
    assert documents[-2:] == ["one", "two"]  # files in sorted order: corpus.txt, then docs.jsonl
    assert "".join(documents[:-2]) == text and all(len(d) <= 100 for d in documents[:-2])


def test_replay_documents_are_cut_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": f"a{i}"}) + "\n" for i in range(5)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"body": f"b{i}"}) + "\n" for i in range(5)))
    config = ReplayCorpusConfig(
        paths=(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")), text_field="body", max_documents=2
    )
    assert load_replay_documents(config) == ["a0", "a1", "b0", "b1"]


def test_hub_sources_stream_the_first_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []
    rows = [json.loads(line) for line in (FIXTURES / "lmsys.jsonl").read_text().splitlines()]

    def fake_load_dataset(name, *args, **kwargs):
        calls.append((name, args, kwargs))
        return datasets.Dataset.from_list(rows).to_iterable_dataset()

    monkeypatch.setattr("raycl.artifacts.hub.load_dataset", fake_load_dataset)
    examples, summary = load_examples(DataSourceConfig(hub="lmsys/lmsys-chat-1m", limit=2))
    assert calls == [("lmsys/lmsys-chat-1m", (None,), {"split": "train", "streaming": True})]
    assert summary.source == "lmsys/lmsys-chat-1m[train]" and summary.unit == "row" and len(examples) == 2


def test_hub_sources_fail_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="lmsys/lmsys-chat-1m"):
        load_examples(DataSourceConfig(hub="lmsys/lmsys-chat-1m", limit=10))


def test_source_configs_are_strict() -> None:
    with pytest.raises(ValidationError, match="exactly one of `path` and `hub`"):
        DataSourceConfig()
    with pytest.raises(ValidationError, match="not a .jsonl/.json/.jsonl.gz/.json.gz/.parquet/.txt file"):
        DataSourceConfig(path="data.csv")
    with pytest.raises(ValidationError, match="extra"):
        DataSourceConfig(path="a.jsonl", typo=1)
    with pytest.raises(ValidationError, match="max_documents: required with `hub`"):
        ReplayCorpusConfig(hub="allenai/c4", subset="en")


def write_gzip(path: Path, rows: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(map(json.dumps, rows)) + "\n")
    return path


def two_speaker_chats(tmp_path: Path) -> Path:
    """Human-human conversations whose roles are the speakers' names, gzipped JSON lines."""
    chats = [
        {
            "dialog_id": 1,
            "conversation": [
                {"role": "Alice", "content": "Hi Bob."},
                {"role": "Bob", "content": "Hi Alice."},
                {"role": "Alice", "content": "Lunch?"},
                {"role": "Bob", "content": "Sure."},
            ],
        },
        {
            "dialog_id": 2,
            "conversation": [
                {"role": "Bob", "content": "Seen Carol?"},
                {"role": "Alice", "content": "Not today."},
                {"role": "Bob", "content": "Pity."},
            ],
        },
        {
            "dialog_id": 3,
            "conversation": [{"role": "Alice", "content": "Rain again."}, {"role": "Bob", "content": "As ever."}],
        },
    ]
    return write_gzip(tmp_path / "dialogs.jsonl.gz", chats)


def test_gzipped_two_speaker_conversations_load_with_a_roles_map(tmp_path: Path) -> None:
    path = two_speaker_chats(tmp_path)
    examples, summary = load_examples(DataSourceConfig(path=str(path), roles={"Alice": "user", "Bob": "assistant"}))
    assert (summary.format, summary.rows, summary.examples, summary.turns) == ("messages", 3, 3, 8)
    assert examples[0].content == [user("Hi Bob."), assistant("Hi Alice."), user("Lunch?"), assistant("Sure.")]
    assert [example.meta["dialog_id"] for example in examples] == [1, 2, 3] and not summary.skipped
    # Dialog 2 opens with Bob, the assistant here: that turn leaves, as any leading assistant turn.
    assert examples[1].content == [user("Not today."), assistant("Pity.")]
    assert summary.dropped_turns == {"leading assistant turn": 1}


def test_alternate_roles_ignore_who_speaks(tmp_path: Path) -> None:
    examples, summary = load_examples(DataSourceConfig(path=str(two_speaker_chats(tmp_path)), roles="alternate"))
    assert (summary.examples, summary.turns, summary.dropped_turns) == (3, 9, {})
    assert examples[1].content == [user("Seen Carol?"), assistant("Not today."), user("Pity.")]


def test_speaker_names_without_roles_fail_at_once_naming_file_line_and_role(tmp_path: Path) -> None:
    path = two_speaker_chats(tmp_path)
    with pytest.raises(DataError) as error:
        load_examples(DataSourceConfig(path=str(path), max_bad_fraction=1.0))
    message = str(error.value)
    assert message.startswith(f"{path}: line 1: unknown role 'Alice'; map speakers to roles with `roles:")
    assert "\n" not in message
    # A map that leaves a speaker out names that one.
    with pytest.raises(DataError, match=r"dialogs.jsonl.gz: line 1: unknown role 'Bob'"):
        load_examples(DataSourceConfig(path=str(path), roles={"Alice": "user"}))


def test_preference_transcripts_are_detected_through_fields(tmp_path: Path) -> None:
    # Anthropic HH-RLHF style: the transcript to train on is `chosen`, in a gzipped JSON array.
    rows = [
        {
            "chosen": "\n\nHuman: Is tea hot?\n\nAssistant: Usually.",
            "rejected": "\n\nHuman: Is tea hot?\n\nAssistant: No.",
        },
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
    ]
    path = tmp_path / "hh.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(rows, handle)
    examples, summary = load_examples(DataSourceConfig(path=str(path), fields={"text": "chosen"}))
    assert (summary.format, summary.unit, summary.examples) == ("transcript", "record", 2)
    assert examples[0].content == [user("Is tea hot?"), assistant("Usually.")]
    assert examples[0].meta == {"rejected": rows[0]["rejected"]}
    with pytest.raises(DataError, match="cannot tell the format"):
        load_examples(DataSourceConfig(path=str(path)))


def test_prompts_that_already_hold_a_template_are_counted_and_warned_about_once(tmp_path: Path, caplog) -> None:
    alpaca = (
        "Below is an instruction that describes a task. Write a "
        "response.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:"
    )
    rows = [
        {"prompt": alpaca, "response": "4"},
        {"prompt": "Add 3 and 3.", "response": "6"},
        {"prompt": "[INST] Hi [/INST]", "response": "Hello"},
    ]
    path = tmp_path / "templated.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)) + "\n")
    with caplog.at_level(logging.WARNING, logger="raycl.data.sources"):
        _, summary = load_examples(DataSourceConfig(path=str(path)))
    assert summary.templated == [1, 3]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "2 of 3 examples already hold a prompt template in a user turn (first: line 1)" in warnings[0]
    )
    _, plain = load("alpaca.jsonl")
    assert plain.templated == []
