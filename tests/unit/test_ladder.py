"""Tests of the model ladder (raycl.models.ladder): schedule, budgets, parameter counts."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from raycl.models.ladder import (
    LADDER,
    PretrainRecipe,
    budget_steps,
    check_budget,
    cooldown_steps,
    ladder_model_dir,
    ladder_violations,
    llama_config,
    parameter_counts,
    peak_lr,
    wsd_lr,
)

VOCAB = 512


class _Tokenizer:
    """Just what `llama_config` reads from a tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return VOCAB


def _non_embedding_by_hand(d: int, layers: int, ff: int) -> int:
    # Per layer: q, k, v, o (d x d each), gate, up, down (d x ff each), two RMSNorms; one final norm.
    return layers * (4 * d * d + 3 * d * ff + 2 * d) + d


def test_wsd_warms_up_holds_then_decays_linearly_to_zero() -> None:
    lrs = [wsd_lr(step, peak=1.0, warmup_steps=4, total_steps=20, cooldown_steps=5) for step in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4:15] == [1.0] * 11
    assert lrs[15:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def test_every_budget_shares_the_stable_phase_of_the_largest() -> None:
    """Why one run serves every budget: until a budget's cool-down starts, its schedule is the largest's."""
    recipe = PretrainRecipe()
    steps = {b: budget_steps(b, 50_000, recipe.batch_size * recipe.block_size) for b in recipe.budgets}
    warmup = budget_steps(recipe.warmup_tokens_per_param, 50_000, recipe.batch_size * recipe.block_size)
    largest = max(steps.values())
    for total in steps.values():
        cooldown = cooldown_steps(total, recipe.cooldown)
        assert warmup < total - cooldown, "warm-up must end before the smallest budget cools down"
        for step in range(total - cooldown):
            assert wsd_lr(step, 1e-3, warmup, total, cooldown) == wsd_lr(
                step, 1e-3, warmup, largest, cooldown_steps(largest, recipe.cooldown)
            )


def test_budget_steps_cover_the_budget() -> None:
    assert budget_steps(20, 1000, 1024) == 20  # 20,000 tokens: 19.5 steps, rounded up
    assert budget_steps(20, 1024, 1024) == 20
    assert budget_steps(0.001, 10, 1024) == 1


def test_an_unknown_budget_names_the_config_field_and_the_budgets() -> None:
    check_budget(20.0, (5.0, 10.0, 20.0, 40.0))
    with pytest.raises(ValueError, match=r"model\.pretrain_tokens_per_param=30 .* 5, 10, 20, 40"):
        check_budget(30.0, (5.0, 10.0, 20.0, 40.0))


def test_ladder_model_dir_checks_name_and_budget_before_building() -> None:
    with pytest.raises(ValueError, match="pretrain_tokens_per_param"):
        ladder_model_dir("raycl-tiny-s", None, None, "world", 7.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="raycl-tiny-xs"):
        ladder_model_dir("raycl-tiny-huge", None, None, "world", 20.0)  # type: ignore[arg-type]
    # The out-of-sample rung is pretrained to 10 tokens per parameter at most.
    with pytest.raises(ValueError, match="the budgets available are 5, 10 "):
        ladder_model_dir("raycl-tiny-xxl", None, None, "world", 20.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_counts_split_embeddings_and_count_tied_ones_once(tied: bool) -> None:
    d, layers, ff = 16, 2, 40
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=d, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=ff, tie_word_embeddings=tied,
    )  # fmt: skip
    counts = parameter_counts(LlamaForCausalLM(config))
    assert counts["embedding_params"] == VOCAB * d * (1 if tied else 2)
    assert counts["non_embedding_params"] == _non_embedding_by_hand(d, layers, ff)
    assert counts["total_params"] == counts["embedding_params"] + counts["non_embedding_params"]


def test_ladder_spans_thirty_fold_in_non_embedding_params() -> None:
    assert {"raycl-tiny-s", "raycl-tiny-m", "raycl-tiny-l"} <= set(LADDER) and len(LADDER) >= 5
    sizes = [
        _non_embedding_by_hand(rung.hidden_size, rung.num_layers, rung.intermediate_size) for rung in LADDER.values()
    ]
    assert sizes == sorted(sizes), "rungs are listed smallest first"
    assert sizes[-1] / sizes[0] >= 30
    for rung in LADDER.values():
        assert llama_config(rung, _Tokenizer()).vocab_size == VOCAB
    lrs = [peak_lr(rung, PretrainRecipe()) for rung in LADDER.values()]
    assert lrs == sorted(lrs, reverse=True), "narrower rungs get a higher LR"


def test_ladder_violations_name_each_axis_where_loss_does_not_fall() -> None:
    good = {"a": {10.0: 3.0, 20.0: 2.5}, "b": {10.0: 2.0, 20.0: 1.5}}
    assert ladder_violations(good) == []
    bad = {"a": {10.0: 3.0, 20.0: 2.5}, "b": {10.0: 2.0, 20.0: 2.6}}
    assert ladder_violations(bad) == [
        "at 20 tokens/param b (2.600) is not below a (2.500)",
        "b at 20 tokens/param (2.600) is not below 10 (2.000)",
    ]
