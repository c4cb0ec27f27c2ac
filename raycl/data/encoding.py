"""Token ids with loss labels: all tokens, or assistant tokens only, packed into training blocks.

Labels follow the `transformers` convention: the token id where the loss counts, -100 where it does
not (the model shifts labels itself). Assistant-only labels come from the chat template's
`{% generation %}` marks via `return_assistant_tokens_mask=True`; with the project's template they
cover each assistant message and its EOS. The templates real models ship (SmolLM2, Qwen, Llama) have no
such marks: there the mask is derived from the template itself (`derived_assistant_mask`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from jinja2 import TemplateError
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


# What `check_assistant_masks` renders to learn whether a template without marks yields a mask.
_PROBE_CHAT = [
    {"role": "user", "content": "What do owls eat?"},
    {"role": "assistant", "content": "Mice, mostly."},
    {"role": "user", "content": "At night?"},
    {"role": "assistant", "content": "Yes."},
]


def has_generation_marks(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(GENERATION_MARK.search(template_text(tokenizer)))


def derived_assistant_mask(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation
) -> tuple[list[int], list[int]] | None:
    """Ids and assistant mask of `conversation`, read from renders of its growing prefixes; None where the
    template's renders do not extend each other.

    Each assistant turn adds the text between the render of the turns before it with the generation prompt and
    the render that includes it: its content and end-of-turn token, marked without the trailing whitespace
    (the template's line break, which the model does not generate). A token is marked where it starts inside
    marked text. This gives the same mask as `{% generation %}` marks around content and end-of-turn token.
    """

    def render(messages: Conversation, prompt: bool) -> str:
        return cast(str, tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=prompt))

    try:
        text = render(conversation, False)
        spans = []
        for turn, message in enumerate(conversation):
            if message["role"] != "assistant":
                continue
            before, through = render(conversation[:turn], True), render(conversation[: turn + 1], False)
            added = through[len(before) :].rstrip()
            if not (through.startswith(before) and text.startswith(through) and message["content"].strip() in added):
                return None
            spans.append((len(before), len(before) + len(added)))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (TemplateError, ValueError, IndexError, NotImplementedError):
        return None
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    return ids, [int(any(start <= begin < end for start, end in spans)) for begin, _ in offsets]


def check_assistant_masks(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless the tokenizer's chat template marks assistant turns (`{% generation %}`) or a mask can be
    derived from its renders (`derived_assistant_mask`)."""
    if has_generation_marks(tokenizer):
        return
    derived = derived_assistant_mask(tokenizer, _PROBE_CHAT)
    if derived is None or not any(derived[1]):
        raise ValueError(
            f"loss_on: assistant needs a chat template with {{% generation %}} marks around assistant turns, or one "
            f"whose render of a conversation extends the render of its first turns, and {template_name(tokenizer)} "
            "is neither: use loss_on: all, or set a template that marks them"
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
    if has_generation_marks(tokenizer):
        encoded = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert isinstance(encoded, BatchEncoding)  # return_dict=True
        ids, mask = list(encoded["input_ids"]), encoded["assistant_masks"]
    else:
        derived = derived_assistant_mask(tokenizer, conversation)
        if derived is None:
            raise ValueError(
                f"loss_on: assistant: {template_name(tokenizer)} renders this conversation so that its turns "
                "cannot be told apart: use loss_on: all"
            )
        ids, mask = derived
    if not any(mask) and any(message["role"] == "assistant" for message in conversation):
        raise ValueError(f"loss_on: assistant: {template_name(tokenizer)} marked none of an assistant turn's tokens")
    return Encoded(ids, [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask)])


def pack_masked(
    examples: Sequence[Encoded], block_size: int, bos: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(blocks, labels)`, both `(n, block_size)`: the examples concatenated and cut as `pack_blocks` does.

    A block may hold no label at all (a long user turn under assistant-only loss): training code
    should skip or weight such batches, as a mean over zero tokens is NaN. With `bos` every block starts with
    it (a model that expects BOS first), unlabelled.
    """
    blocks = pack_blocks([example.ids for example in examples], block_size, bos)
    labels = pack_blocks([example.labels for example in examples], block_size, None if bos is None else IGNORE_INDEX)
    return blocks, labels
