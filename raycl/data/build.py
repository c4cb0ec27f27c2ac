"""A continual stream from a real dataset: load, split into stages, hold out, encode, pack.

`build_stream` returns a `raycl.data.stream.Stream` whose stages carry the labels of every block
and held-out example (-100 where no loss), and the load's summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from raycl.config.stream import ReplayCorpusConfig, StreamConfig, StreamShapeConfig
from raycl.data.encoding import Encoded, check_assistant_masks, encode_example, pack_masked
from raycl.data.formats import DataError
from raycl.data.shapes import holdout, split_stages, window_spans
from raycl.data.sources import Example, LoadSummary, finish_load, iter_examples, load_replay_documents
from raycl.data.stream import Stage, Stream
from raycl.data.tokens import encode_document, leading_bos, pack_blocks


def _stage(
    name: str, train: Sequence[Encoded], heldout: Sequence[Encoded], seq_len: int, bos: int | None = None
) -> Stage:
    if sum(len(example.ids) for example in train) < seq_len:
        raise DataError(f"stage {name!r}: its training examples cannot fill one block of {seq_len} tokens")
    blocks, labels = pack_masked(train, seq_len, bos)
    return Stage(
        name=name,
        train_blocks=blocks,
        heldout=[example.ids[:seq_len] for example in heldout],
        train_labels=labels,
        heldout_labels=[example.labels[:seq_len] for example in heldout],
    )


def _window_stages(
    encoded: Sequence[Encoded], shape: StreamShapeConfig, seq_len: int, bos: int | None = None
) -> list[Stage]:
    """Rolling windows over the concatenated token stream; each window is cut into blocks, some held out."""
    window, step = shape.window, shape.step
    assert window is not None and step is not None  # the config requires both for by: window
    if window < 2 * seq_len:
        raise DataError(f"window: {window} tokens hold fewer than two blocks of {seq_len} (one to train, one held out)")
    ids = [token for example in encoded for token in example.ids]
    labels = [label for example in encoded for label in example.labels]
    stages = []
    for index, (start, end) in enumerate(window_spans(len(ids), window, step)[: shape.max_stages]):
        name = f"window{index + 1}"
        blocks = [
            Encoded(ids[s : s + seq_len], labels[s : s + seq_len]) for s in range(start, end - seq_len + 1, seq_len)
        ]
        train, heldout = holdout(blocks, shape.heldout_fraction, shape.seed, key=name)
        stages.append(_stage(name, train, heldout, seq_len, bos))
    return stages


def _check_loss_on(config: StreamConfig, summary: LoadSummary, tokenizer: PreTrainedTokenizerBase) -> None:
    if config.loss_on == "assistant":
        if summary.format == "text":
            raise DataError(
                f"{config.source.name}: loss_on: assistant needs conversations, and this source holds plain documents"
            )
        check_assistant_masks(tokenizer)


def _window_prefix(
    examples: Iterable[Example], summary: LoadSummary, config: StreamConfig, tokenizer: PreTrainedTokenizerBase
) -> list[Encoded]:
    """`examples` encoded until their tokens fill the windows kept (`max_stages`); all of them when every window is."""
    shape = config.shape
    assert shape.window is not None and shape.step is not None  # required by `by: window`
    needed = None if shape.max_stages is None else shape.window + (shape.max_stages - 1) * shape.step
    encoded: list[Encoded] = []
    tokens = 0
    for example in examples:
        if not encoded:
            _check_loss_on(config, summary, tokenizer)
        encoded.append(encode_example(tokenizer, example.content, config.loss_on))
        tokens += len(encoded[-1].ids)
        if needed is not None and tokens >= needed:
            break
    return encoded


def original_distribution(
    config: ReplayCorpusConfig, tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> tuple[list[list[int]], torch.Tensor]:
    """(retention probe, replay pool) from the corpus: a seeded `heldout_fraction` of its documents,
    each cut into probe examples of `seq_len` tokens, and the rest packed into blocks; the two never
    share a document. Cut, not truncated: a probe of long documents (speeches, books) would otherwise
    see only their openings. For a model that expects BOS first, every probe example and block starts with it."""
    documents = load_replay_documents(config)
    replay, heldout = holdout(documents, config.heldout_fraction, config.seed, key="original")
    bos = leading_bos(tokenizer)
    probe = [
        block for document in heldout for block in document_blocks(encode_document(tokenizer, document), seq_len, bos)
    ]
    return probe, pack_blocks([encode_document(tokenizer, document) for document in replay], seq_len, bos)


def document_blocks(ids: Sequence[int], seq_len: int, bos: int | None = None) -> list[list[int]]:
    """`ids` cut into consecutive blocks of `seq_len` tokens; the last may be shorter, but a last
    token alone (nothing to predict) is left out.

    With `bos` (for a model that expects every sequence to start with it), `ids` begins with it and every block
    does: `bos` and the next `seq_len - 1` tokens. Gemma scores text after a first token other than `<bos>` far
    worse: its C4/WikiText probe (examples/real_trial.yaml) read 5.53 nats where only each document's first block
    had it, 3.38 with it on every block.
    """
    if bos is None:
        return [list(ids[start : start + seq_len]) for start in range(0, len(ids) - 1, seq_len)]
    body = ids[1:]
    return [[bos, *body[start : start + seq_len - 1]] for start in range(0, len(body), seq_len - 1)]


def build_stream(
    config: StreamConfig,
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    retention: Sequence[Sequence[int]] | None = None,
    replay_pool: torch.Tensor | None = None,
) -> Stream:
    """The stages of `config`, with the original distribution from `config.original` or, without it,
    from `retention` and `replay_pool` (e.g. the offline world's, for its ladder models)."""
    if (config.original is None) == (retention is None or replay_pool is None):
        raise ValueError("give the original distribution in one way: stream.original, or retention with replay_pool")
    summary = LoadSummary(source=config.source.name)
    read = iter_examples(config.source, summary, config.shape.required_fields)
    encoded: list[Encoded] = []
    examples: list[Example] = []
    if config.shape.by == "window":
        # Read and encoded only as far as the windows kept reach: a huge file costs what its stages use.
        encoded = _window_prefix(read, summary, config, tokenizer)
        finish_load(summary, config.source)
    else:
        examples = list(read)
        finish_load(summary, config.source)
        _check_loss_on(config, summary, tokenizer)

    def encode(items: Sequence[Example]) -> list[Encoded]:
        return [encode_example(tokenizer, example.content, config.loss_on) for example in items]

    # A model that expects BOS first (Gemma) gets it at the start of every training block too.
    bos = leading_bos(tokenizer)
    try:
        if config.shape.by == "window":
            stages = _window_stages(encoded, config.shape, seq_len, bos)
        else:
            stages = []
            for name, items in split_stages(examples, config.shape):
                train, heldout = holdout(items, config.shape.heldout_fraction, config.shape.seed, key=name)
                stages.append(_stage(name, encode(train), encode(heldout), seq_len, bos))
    except DataError as error:
        raise DataError(f"{config.source.name}: {error}") from None
    if config.original is not None:
        retention, replay_pool = original_distribution(config.original, tokenizer, seq_len)
    assert retention is not None and replay_pool is not None  # checked on entry: exactly one way was given
    return Stream(stages=stages, retention=[list(ids) for ids in retention], replay_pool=replay_pool, summary=summary)
