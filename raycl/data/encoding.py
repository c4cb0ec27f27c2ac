"""Token ids with loss labels: all tokens, or assistant tokens only, packed into training blocks.

Labels follow the `transformers` convention: the token id where the loss counts, -100 where it does
not (the model shifts labels itself). Assistant-only labels come from the chat template's
`{% generation %}` marks via `return_assistant_tokens_mask=True`; with the project's template they
cover each assistant message and its EOS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from raycl.config.stream import LossOn
from raycl.data.formats import Conversation
from raycl.data.tokens import IGNORE_INDEX, encode_conversation, encode_document, pack_blocks

GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    labels: list[int]  # the id where the loss counts, IGNORE_INDEX elsewhere


def template_name(tokenizer: PreTrainedTokenizerBase) -> str:
    return (
        f"the chat template of {tokenizer.name_or_path!r}"
        if tokenizer.name_or_path
        else "the tokenizer's chat template"
    )


def template_text(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template; all of them where it names several."""
    template = tokenizer.chat_template or ""
    return template if isinstance(template, str) else "\n".join(template.values())


def check_assistant_masks(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless the tokenizer's chat template marks assistant turns (`{% generation %}`)."""
    if not GENERATION_MARK.search(template_text(tokenizer)):
        raise ValueError(
            f"loss_on: assistant needs a chat template with {{% generation %}} marks around assistant turns, "
            f"and {template_name(tokenizer)} has none: use loss_on: all, or set a template that marks them"
        )


def fit_system(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> Conversation:
    """The conversation, with a system message folded into the first user turn if the template ignores `system`.

    A template that never mentions the system role (the project's default among them) would render
    a system message as something else, e.g. an assistant turn that then gets trained on.
    """
    if conversation[0]["role"] != "system" or "system" in template_text(tokenizer):
        return conversation
    system, user, *rest = conversation
    return [{"role": "user", "content": f"{system['content']}\n\n{user['content']}"}, *rest]


def encode_example(tokenizer: PreTrainedTokenizerBase, content: Conversation | str, loss_on: LossOn) -> Encoded:
    """Ids and labels of a conversation (chat template) or a document (`BOS text EOS`)."""
    if isinstance(content, str):
        if loss_on == "assistant":
            raise ValueError("loss_on: assistant needs conversations, and this example is a plain document")
        ids = encode_document(tokenizer, content)
        return Encoded(ids, list(ids))
    conversation = fit_system(tokenizer, content)
    if loss_on == "all":
        ids = encode_conversation(tokenizer, conversation)
        return Encoded(ids, list(ids))
    check_assistant_masks(tokenizer)
    encoded = tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert isinstance(encoded, BatchEncoding)  # return_dict=True
    ids, mask = list(encoded["input_ids"]), encoded["assistant_masks"]
    if not any(mask) and any(message["role"] == "assistant" for message in conversation):
        raise ValueError(f"loss_on: assistant: {template_name(tokenizer)} marked none of an assistant turn's tokens")
    return Encoded(ids, [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask)])


def pack_masked(examples: Sequence[Encoded], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(blocks, labels)`, both `(n, block_size)`: the examples concatenated and cut as `pack_blocks` does.

    A block may hold no label at all (a long user turn under assistant-only loss): training code
    should skip or weight such batches, as a mean over zero tokens is NaN.
    """
    blocks = pack_blocks([example.ids for example in examples], block_size)
    labels = pack_blocks([example.labels for example in examples], block_size)
    return blocks, labels
