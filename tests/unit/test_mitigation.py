import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raycl.mitigation.penalties import EWC, kl_to_base
from raycl.mitigation.replay import reservoir_sample, select_blocks
from raycl.mitigation.self_replay import sample_from_base


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


class Specials:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0


def test_reservoir_keeps_size_distinct_indices_and_every_item_can_survive() -> None:
    survivors = torch.zeros(20)
    for seed in range(300):
        kept = reservoir_sample(20, 5, torch.Generator().manual_seed(seed))
        assert len(kept) == 5 and len(set(kept.tolist())) == 5
        survivors[kept] += 1
    # Algorithm R keeps each item with probability 5/20: 75 of 300 on average.
    assert survivors.min() > 40 and survivors.max() < 115


def test_select_blocks_by_base_loss() -> None:
    pool = torch.arange(6).unsqueeze(1)
    scores = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1, 4.0])
    assert select_blocks(pool, 2, "hardest", 0, scores).flatten().tolist() == [5, 1]
    assert select_blocks(pool, 2, "easiest", 0, scores).flatten().tolist() == [4, 0]
    assert select_blocks(pool, None, "random", 0) is pool
    random = select_blocks(pool, 3, "random", 0).flatten().tolist()
    assert len(set(random)) == 3 and random == select_blocks(pool, 3, "random", 0).flatten().tolist()
    with pytest.raises(ValueError, match="replay.selection"):
        select_blocks(pool, 2, "hardest", 0)


def test_self_generated_samples_start_at_bos_and_mask_after_the_first_eos() -> None:
    ids, labels = sample_from_base(tiny_llama(), Specials, count=8, length=12, seed=3)
    assert ids.shape == labels.shape == (8, 12)
    assert (ids[:, 0] == 1).all()
    for row, label in zip(ids.tolist(), labels.tolist()):
        end = row.index(2) + 1 if 2 in row else len(row)
        assert label[:end] == row[:end]  # the EOS itself is still learned
        assert all(value == -100 for value in label[end:])
    again, _ = sample_from_base(tiny_llama(), Specials, count=8, length=12, seed=3)
    assert torch.equal(ids, again)


def test_kl_to_base_is_zero_at_the_base_and_positive_away_from_it() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.ones(2, 5, dtype=torch.long)
    assert kl_to_base(logits, logits, labels) == pytest.approx(0.0, abs=1e-6)
    assert kl_to_base(logits + torch.randn(2, 5, 7), logits, labels) > 0.01
    # Masked positions do not count, however different they are.
    shifted = logits.clone()
    shifted[:, -1] += 10 * torch.randn(2, 7)
    labels[:, -1] = -100
    assert kl_to_base(shifted, logits, labels) == pytest.approx(0.0, abs=1e-6)


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance() -> None:
    model = tiny_llama()
    blocks = torch.randint(3, 40, (8, 10))
    ewc = EWC(model, blocks, samples=4, seed=0)
    assert ewc.penalty().item() == 0.0
    assert all((f >= 0).all() for f in ewc.fisher.values()) and any(f.sum() > 0 for f in ewc.fisher.values())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    small = ewc.penalty().item()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    assert small > 0 and ewc.penalty().item() == pytest.approx(4 * small, rel=1e-4)
