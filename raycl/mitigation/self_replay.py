"""Self-generated replay (Marek et al. 2026): sample the frozen base model from BOS alone.

No chat template and temperature 1 with no top-k/top-p truncation, so the samples follow the base
model's own distribution; everything after the first EOS is masked out of the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from raycl.data.tokens import IGNORE_INDEX


@torch.no_grad()
def sample_from_base(
    model: nn.Module, tokenizer, count: int, length: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` sequences of `length` tokens as `(ids, labels)`, labels IGNORE_INDEX after the first EOS."""
    device = next(model.parameters()).device
    start = torch.full((count, 1), tokenizer.bos_token_id, dtype=torch.long, device=device)
    # A private RNG stream: sampling must neither depend on nor disturb the training's randomness.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        # A transformers causal LM; typed as a Module, whose __getattr__ hides `generate` from the checker.
        ids = model.generate(  # pyright: ignore[reportCallIssue]
            input_ids=start,
            attention_mask=torch.ones_like(start),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=length - 1,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).cpu()
    ids = nn.functional.pad(ids, (0, length - ids.shape[1]), value=tokenizer.pad_token_id)
    is_eos = (ids == tokenizer.eos_token_id).int()
    # Positions strictly after the first EOS: at least one EOS before them.
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    return ids, ids.masked_fill(after_eos, IGNORE_INDEX)
