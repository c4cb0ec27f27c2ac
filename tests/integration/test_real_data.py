"""The loaders on the real samples in ../shared/data (skipped in a fresh clone, which has none).

Expected counts are computed here from the files with plain json parsing, independently of the loaders.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from raycl.config.stream import DataSourceConfig, ReplayCorpusConfig, StreamConfig
from raycl.data.build import build_stream
from raycl.data.shapes import split_by_field
from raycl.data.sources import load_examples, load_replay_documents
from raycl.world.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.is_dir(), reason=f"needs the real data samples at {DATA}")]

MESSAGES = DATA / "conversations" / "oasst1_en_validation_messages.jsonl"
THREADS = DATA / "conversations" / "oasst1_en_validation_threads.jsonl"
SHAREGPT = DATA / "conversations" / "sharegpt_sample_1000.json"
MEDQUAD = DATA / "topical" / "medquad_qa_subset.jsonl"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(path: Path, **options):
    return load_examples(DataSourceConfig(path=str(path), **options))


def oasst_trees() -> tuple[list[dict], dict, list[dict]]:
    """Messages, children by parent id, and the messages under a root (plain json)."""
    messages = jsonl(MESSAGES)
    children: dict = {}
    for message in messages:
        children.setdefault(message["parent_id"], []).append(message)
    reached, stack = [], list(children[None])
    while stack:
        message = stack.pop()
        reached.append(message)
        stack += children.get(message["message_id"], [])
    return messages, children, reached


def test_oasst_messages_rebuild_the_published_best_threads() -> None:
    messages, _, reached = oasst_trees()
    examples, summary = load(MESSAGES)
    published = {row["message_tree_id"]: row["conversation"] for row in jsonl(THREADS)}
    assert {e.meta["message_tree_id"]: e.content for e in examples} == published
    turns = sum(map(len, published.values()))
    assert summary.format == "oasst" and summary.rows == len(messages)
    assert summary.examples == len(published)
    assert summary.turns == turns
    orphans = [n for n, m in enumerate(messages, 1) if m["message_id"] not in {r["message_id"] for r in reached}]
    assert orphans, "the sample holds messages whose parent is missing"
    assert summary.skipped == {"parent missing or skipped": len(orphans)}
    assert summary.skipped_at["parent missing or skipped"] == orphans
    assert summary.dropped_turns == {"not on the best-ranked path": len(reached) - turns}


def test_oasst_messages_all_paths() -> None:
    messages, children, reached = oasst_trees()
    leaves = [m for m in reached if m["message_id"] not in children]
    by_id = {m["message_id"]: m for m in messages}

    def path_length(message: dict) -> int:
        return 1 if message["parent_id"] is None else 1 + path_length(by_id[message["parent_id"]])

    examples, summary = load(MESSAGES, oasst_paths="all")
    assert summary.examples == len(leaves)
    assert summary.turns == sum(map(path_length, leaves))
    assert all(e.content[0]["role"] == "user" for e in examples)


def test_oasst_threads_file() -> None:
    rows = jsonl(THREADS)
    examples, summary = load(THREADS)
    assert summary.format == "messages" and not summary.skipped and not summary.dropped_turns
    assert (summary.examples, summary.turns) == (len(rows), sum(len(r["conversation"]) for r in rows))
    assert examples[0].content == rows[0]["conversation"]


def test_sharegpt_sample() -> None:
    rows = json.loads(SHAREGPT.read_text())
    expected_skips, expected_turns, expected_leading = Counter(), 0, 0
    empty_at = []
    for number, row in enumerate(rows, 1):
        turns = row["conversations"]
        if any(not turn["value"].strip() for turn in turns):
            expected_skips["empty content"] += 1
            empty_at.append(number)
        elif all(turn["from"] == "gpt" for turn in turns):
            expected_skips["no user turn"] += 1
        else:
            leading = next(i for i, turn in enumerate(turns) if turn["from"] != "gpt")
            expected_leading += leading
            expected_turns += len(turns) - leading
    examples, summary = load(SHAREGPT)
    assert expected_skips["no user turn"] and expected_skips["empty content"] and expected_leading
    assert summary.format == "sharegpt" and summary.rows == len(rows)
    assert summary.skipped == expected_skips
    assert summary.skipped_at["empty content"] == empty_at
    assert summary.examples == len(rows) - expected_skips.total()
    assert summary.turns == expected_turns
    assert summary.dropped_turns == {"leading assistant turn": expected_leading}
    assert all(e.content[0]["role"] in ("user", "system") for e in examples)


def test_medquad_topical_streams() -> None:
    rows = jsonl(MEDQUAD)
    examples, summary = load(MEDQUAD, format="instruction")
    assert summary.format == "instruction" and not summary.skipped
    assert (summary.examples, summary.turns) == (len(rows), 2 * len(rows))
    stages = split_by_field(examples, "stream")
    assert [(name, len(items)) for name, items in stages] == list(Counter(r["stream"] for r in rows).items())
    assert len(stages) > 1
    assert examples[0].content == [
        {"role": "user", "content": rows[0]["question"]},
        {"role": "assistant", "content": rows[0]["answer"]},
    ]


def test_pretrain_files_as_replay_documents() -> None:
    pretrain = DATA / "pretrain"
    documents = load_replay_documents(ReplayCorpusConfig(paths=(str(pretrain),)))
    c4 = [row["text"] for row in jsonl(pretrain / "c4_demo.jsonl")]
    assert documents[: len(c4)] == c4
    limit = ReplayCorpusConfig(paths=(str(pretrain),)).document_chars
    rest = documents[len(c4) :]
    counts = [len(c4)]
    for name in ("tinyshakespeare.txt", "wikitext2_raw_test.txt"):
        text = (pretrain / name).read_text()
        # Whole lines, in order, every character in exactly one document, each as long as fits the limit.
        count, chars = 0, 0
        while chars < len(text):
            chars, count = chars + len(rest[count]), count + 1
        mine, rest = rest[:count], rest[count:]
        assert "".join(mine) == text
        for document, following in zip(mine, mine[1:]):
            assert len(document) <= limit or document.count("\n") <= 1
            assert len(document) + len(following.splitlines(keepends=True)[0]) > limit
        counts.append(count)
    assert not rest
    fifty = load_replay_documents(ReplayCorpusConfig(paths=(str(pretrain),), max_documents=50))
    assert len(fifty) == sum(min(50, count) for count in counts)


def test_the_example_trial_builds_its_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository root
    config = StreamConfig.model_validate(
        yaml.safe_load((ROOT / "examples" / "conversations_trial.yaml").read_text())["stream"]
    )
    tokenizer = train_tokenizer(
        [(DATA / "pretrain" / "c4_demo.jsonl").read_text()[:300_000]], 512, tmp_path / "tokenizer"
    )
    stream = build_stream(config, tokenizer, 128)
    assert [stage.name for stage in stream.stages] == ["1_CancerGov_QA", "5_NIDDK_QA", "9_CDC_QA"]
    held = round(config.shape.examples_per_stage * config.shape.heldout_fraction)
    assert all(len(stage.heldout) == held for stage in stream.stages)
    assert all(((stage.train_labels != -100).float().mean() > 0.5) for stage in stream.stages)  # answers are long
    # A share of the original documents, each cut into blocks of 128 tokens (its first one starts with BOS): all of it
    # probes.
    documents = round(len(load_replay_documents(config.original)) * config.original.heldout_fraction)
    assert sum(example[0] == tokenizer.bos_token_id for example in stream.retention) == documents
    assert len(stream.retention) > 5 * documents and all(len(example) <= 128 for example in stream.retention)
    assert stream.replay_pool.shape[1] == 128


def test_raycl_run_learns_from_real_conversations_with_pretraining_text_as_replay(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = yaml.safe_load((ROOT / "examples" / "conversations_trial.yaml").read_text())
    config["train"]["steps_per_stage"] = 8
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "raycl.cli", "run", str(path), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["stage_names"] == ["1_CancerGov_QA", "5_NIDDK_QA", "9_CDC_QA"]
    assert result["learning"] > 0.15 and isinstance(result["forgetting"], float)
    assert result["config"]["replay"]["ratio"] == 0.25
    assert (
        "medquad_qa_subset.jsonl" in result["data_summary"]
        and f"{len(jsonl(MEDQUAD))} examples" in result["data_summary"]
    )
