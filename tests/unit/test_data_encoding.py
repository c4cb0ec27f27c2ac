"""Loss masks (all tokens / assistant only), masked packing, and whole streams built from small files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from raycl.config import TrialConfig
from raycl.config.stream import StreamConfig
from raycl.data.build import build_stream, document_blocks
from raycl.data.encoding import GENERATION_MARK, Encoded, derived_assistant_mask, encode_example, pack_masked
from raycl.data.formats import DataError
from raycl.data.stream import Stage
from raycl.data.tokens import IGNORE_INDEX, batch_at, encode_conversation, encode_document
from raycl.world.tokenizer import ASSISTANT, CHAT_TEMPLATE, train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CHAT = [
    {"role": "user", "content": "What do owls eat?"},
    {"role": "assistant", "content": "Mice, mostly, and insects."},
    {"role": "user", "content": "At night?"},
    {"role": "assistant", "content": "Yes: they hunt at night."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """The project's BPE and chat template, trained in a fraction of a second on a few sentences."""
    text = "Owls eat mice and insects. They hunt at night; what do owls do by day? Yes, they sleep.\n" * 40
    return train_tokenizer([text], vocab_size=320, out_dir=tmp_path_factory.mktemp("tokenizer"))


def test_assistant_labels_are_exactly_the_assistant_tokens_and_eos(tokenizer) -> None:
    encoded = encode_example(tokenizer, CHAT, "assistant")
    assert encoded.ids == encode_conversation(tokenizer, CHAT)
    expected = []
    for message in CHAT[1::2]:
        expected += tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    kept = [position for position, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert [encoded.ids[position] for position in kept] == expected
    assert all(encoded.labels[position] == encoded.ids[position] for position in kept)
    # Each labelled run starts right after an assistant marker.
    starts = [position for position in kept if position - 1 not in kept]
    assert [encoded.ids[position - 1] for position in starts] == [tokenizer.convert_tokens_to_ids(ASSISTANT)] * 2


def test_all_token_labels_are_the_ids(tokenizer) -> None:
    encoded = encode_example(tokenizer, CHAT, "all")
    assert encoded.labels == encoded.ids == encode_conversation(tokenizer, CHAT)
    document = encode_example(tokenizer, "Owls hunt.", "all")
    assert document.ids == document.labels == encode_document(tokenizer, "Owls hunt.")


def test_assistant_loss_needs_marks_or_a_template_whose_renders_extend_each_other(tokenizer) -> None:
    counting = copy.deepcopy(tokenizer)
    # Each render starts with the number of messages, so a longer conversation does not extend a shorter one.
    counting.chat_template = (
        "{{ messages | length }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(ValueError, match=r"loss_on: assistant needs a chat template with \{% generation %\} marks"):
        encode_example(counting, CHAT, "assistant")
    assert encode_example(counting, CHAT, "all").ids  # all-token loss works with any template
    with pytest.raises(ValueError, match="needs conversations"):
        encode_example(tokenizer, "a document", "assistant")


def test_the_mask_derived_from_growing_prefixes_equals_the_generation_marks_mask(tokenizer) -> None:
    marked = encode_example(tokenizer, CHAT, "assistant")
    derived = derived_assistant_mask(tokenizer, CHAT)
    assert derived is not None
    assert derived[0] == marked.ids
    assert derived[1] == [int(label != IGNORE_INDEX) for label in marked.labels]
    assert sum(derived[1]) > 4  # both assistant turns
    # The same template without its marks (as real models ship theirs) gives the same labels through encode_example.
    unmarked = copy.deepcopy(tokenizer)
    # (transformers renders with trim_blocks: the line break after a block tag is not output.)
    unmarked.chat_template = GENERATION_MARK.sub("", CHAT_TEMPLATE).replace("{% endgeneration %}\n", "")
    assert "{% generation" not in unmarked.chat_template
    assert encode_example(unmarked, CHAT, "assistant") == marked
    # A ChatML-style template (SmolLM2's and Qwen's shape): each turn ends with EOS and a line break.
    chatml = copy.deepcopy(tokenizer)
    chatml.chat_template = (
        "{% for m in messages %}{{ '<|user|>' if m['role'] == 'user' else '<|assistant|>' }}{{ m['content'] }}"
        "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    encoded = encode_example(chatml, CHAT, "assistant")
    kept = [token for token, label in zip(encoded.ids, encoded.labels) if label != IGNORE_INDEX]
    expected = []
    for message in CHAT[1::2]:
        expected += tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert kept == expected


def test_a_system_message_joins_the_first_user_turn_when_the_template_ignores_it(tokenizer) -> None:
    chat = [{"role": "system", "content": "Be brief."}, *CHAT]
    merged = [{"role": "user", "content": "Be brief.\n\nWhat do owls eat?"}, *CHAT[1:]]
    assert encode_example(tokenizer, chat, "assistant") == encode_example(tokenizer, merged, "assistant")


def test_masked_packing_keeps_labels_aligned(tokenizer) -> None:
    examples = [Encoded([1, 2, 3], [-100, 2, 3]), Encoded([4, 5], [4, -100]), Encoded([6, 7, 8, 9], [-100, -100, 8, 9])]
    blocks, labels = pack_masked(examples, 4)
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert labels.tolist() == [[-100, 2, 3, 4], [-100, -100, -100, 8]]
    # For a model that expects BOS first: every block starts with it, unlabelled.
    blocks, labels = pack_masked(examples, 4, bos=0)
    assert blocks.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 8, 9]]
    assert labels.tolist() == [[-100, -100, 2, 3], [-100, 4, -100, -100], [-100, -100, 8, 9]]
    # The trial draws labels with the same call as blocks: same rows.
    many = torch.arange(40).view(10, 4)
    assert torch.equal(batch_at(many, 3, 5, seed=1) + 100, batch_at(many + 100, 3, 5, seed=1))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def topics_file(tmp_path: Path) -> Path:
    rows = [
        {
            "question": f"What is fact {i} of {topic}?",
            "answer": f"Fact {i} of {topic} is that owls hunt.",
            "topic": topic,
        }
        for topic in ("owls", "bats", "moths")
        for i in range(10)
    ]
    return write_jsonl(tmp_path / "topics.jsonl", rows)


def test_stream_by_field_with_assistant_labels(tokenizer, tmp_path: Path) -> None:
    config = StreamConfig.model_validate(
        {
            "source": {"path": str(topics_file(tmp_path))},
            "shape": {"by": "field", "field": "topic", "values": ["moths", "owls"], "heldout_fraction": 0.2},
            "loss_on": "assistant",
        }
    )
    retention, pool = [[1, 5, 6, 2]], torch.zeros(3, 16, dtype=torch.long)
    stream = build_stream(config, tokenizer, 16, retention=retention, replay_pool=pool)
    assert [stage.name for stage in stream.stages] == ["moths", "owls"]
    assert stream.retention == retention and stream.replay_pool is pool
    assert stream.summary.examples == 30 and stream.summary.format == "instruction"
    for stage in stream.stages:
        assert isinstance(stage, Stage)
        assert len(stage.heldout) == len(stage.heldout_labels) == 2  # 20% of 10
        assert stage.train_labels.shape == stage.train_blocks.shape
        kept = stage.train_labels != IGNORE_INDEX
        assert torch.equal(stage.train_labels[kept], stage.train_blocks[kept])
        assert 0 < kept.float().mean() < 1
        assert all(len(example) <= 16 for example in stage.heldout)


def test_stream_needs_the_original_distribution_exactly_once(tokenizer, tmp_path: Path) -> None:
    config = StreamConfig.model_validate({"source": {"path": str(topics_file(tmp_path))}})
    with pytest.raises(ValueError, match="give the original distribution in one way"):
        build_stream(config, tokenizer, 16)


def test_stream_of_rolling_windows_has_exact_sizes(tokenizer, tmp_path: Path) -> None:
    documents = [f"Owls hunt at night number {i}. " * 3 for i in range(40)]
    write_jsonl(tmp_path / "docs.jsonl", [{"text": document} for document in documents])
    config = StreamConfig.model_validate(
        {
            "source": {"path": str(tmp_path / "docs.jsonl")},
            "shape": {"by": "window", "window": 160, "step": 96, "heldout_fraction": 0.25},
        }
    )
    stream = build_stream(config, tokenizer, 32, retention=[[1, 2]], replay_pool=torch.zeros(1, 32, dtype=torch.long))
    flat = [token for document in documents for token in encode_document(tokenizer, document)]
    assert len(stream.stages) == (len(flat) - 160) // 96 + 1
    for index, stage in enumerate(stream.stages):
        # 160 tokens: 5 blocks of 32, one (25%, rounded) held out; together exactly the window's tokens.
        assert stage.train_blocks.shape == (4, 32) and len(stage.heldout) == 1
        start = index * 96
        expected = sorted(flat[s : s + 32] for s in range(start, start + 160, 32))
        assert sorted(stage.train_blocks.tolist() + stage.heldout) == expected


def test_stream_with_its_own_original_corpus(tokenizer, tmp_path: Path) -> None:
    lines = [f"The base corpus, line {i:03d}, about towns.\n" for i in range(200)]  # 40 characters each
    (tmp_path / "base.txt").write_text("".join(lines))
    config = StreamConfig.model_validate(
        {
            "source": {"path": str(topics_file(tmp_path))},
            "shape": {"stages": 2},
            "original": {"paths": [str(tmp_path / "base.txt")], "document_chars": 200, "heldout_fraction": 0.2},
        }
    )
    stream = build_stream(config, tokenizer, 32)
    assert [stage.name for stage in stream.stages] == ["part1", "part2"]
    # 5 lines a document, 40 documents: 8 held out as the probe, 32 packed into the replay pool.
    # Each held-out document is cut into blocks of 32 tokens, all of which probe: the whole document.
    documents = ["".join(lines[i : i + 5]) for i in range(0, 200, 5)]
    starts = [example for example in stream.retention if example[0] == tokenizer.bos_token_id]
    held = {tokenizer.decode(example, skip_special_tokens=True)[:25] for example in starts}
    probed = [document for document in documents if document[:25] in held]
    assert len(starts) == 8 and all(len(example) <= 32 for example in stream.retention)
    assert [token for example in stream.retention for token in example] == [
        token for document in probed for token in encode_document(tokenizer, document)
    ]
    assert len(stream.retention) > 8  # more than each document's opening
    assert document_blocks(list(range(66)), 32) == [list(range(32)), list(range(32, 64)), [64, 65]]
    assert document_blocks(list(range(65)), 32) == [list(range(32)), list(range(32, 64))]  # 64 alone predicts nothing
    # A model that expects BOS first (Gemma) gets it at the start of every block: BOS and the next 31 tokens.
    ids = [-1, *range(1, 66)]
    assert document_blocks(ids, 32, bos=-1) == [[-1, *range(1, 32)], [-1, *range(32, 63)], [-1, 63, 64, 65]]


def test_assistant_loss_on_plain_documents_is_refused(tokenizer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "docs.jsonl", [{"text": f"doc {i}"} for i in range(10)])
    config = StreamConfig.model_validate({"source": {"path": str(tmp_path / "docs.jsonl")}, "loss_on": "assistant"})
    with pytest.raises(DataError, match="docs.jsonl: loss_on: assistant needs conversations"):
        build_stream(config, tokenizer, 16, retention=[[1]], replay_pool=torch.zeros(1, 16, dtype=torch.long))


def test_the_example_trial_validates() -> None:
    data = yaml.safe_load((ROOT / "examples" / "conversations_trial.yaml").read_text())
    StreamConfig.model_validate(data.pop("stream"))
    TrialConfig.model_validate(data)
