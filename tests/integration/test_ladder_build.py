"""A tiny ladder build: every budget saved, more pretraining tokens help, the cache is reused, and a
cool-down branch equals a standalone run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from raycl.models.ladder import PretrainRecipe, budget_dirname, ladder_rung_dir, pretrain_record
from raycl.world.corpus import generate_world_text
from raycl.world.tokenizer import train_tokenizer

pytestmark = pytest.mark.slow


def test_tiny_ladder_build_saves_every_budget_and_more_tokens_help(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path / "cache"))
    text = generate_world_text(seed=0, num_stages=1, base_entities=12)
    texts = [*text.base.train.documents, *(m["content"] for c in text.base.train.conversations for m in c)]
    tokenizer = train_tokenizer(texts, 300, tmp_path / "tokenizer")
    recipe = PretrainRecipe(budgets=(5.0, 40.0))
    rung_dir = ladder_rung_dir("raycl-tiny-xs", text.base, tokenizer, "tiny-world", recipe)

    records = {}
    for budget in recipe.budgets:
        directory = rung_dir / budget_dirname(budget)
        assert (directory / "config.json").exists() and (directory / "tokenizer.json").exists()
        LlamaForCausalLM.from_pretrained(directory)
        records[budget] = pretrain_record(directory)
        assert records[budget]["tokens_per_param"] == budget
        assert records[budget]["pretrain_tokens"] >= budget * records[budget]["non_embedding_params"]
    assert records[40.0]["heldout_base_loss"] < records[5.0]["heldout_base_loss"]
    assert json.loads((rung_dir / "rung.json").read_text())["build_minutes"] > 0
    # A second call finds the cache entry instead of pretraining again.
    assert ladder_rung_dir("raycl-tiny-xs", text.base, tokenizer, "tiny-world", recipe) == rung_dir
    # The cool-down branch at 5 tokens/param is the very model a standalone run to 5 would give.
    alone = ladder_rung_dir("raycl-tiny-xs", text.base, tokenizer, "tiny-world", PretrainRecipe(budgets=(5.0,)))
    branched = LlamaForCausalLM.from_pretrained(rung_dir / budget_dirname(5.0)).state_dict()
    standalone = LlamaForCausalLM.from_pretrained(alone / budget_dirname(5.0)).state_dict()
    assert all(torch.equal(branched[key], standalone[key]) for key in branched)


def test_world_build_pretrains_missing_rungs_in_parallel_then_finds_them(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from raycl.cli import app

    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path / "cache"))
    first = CliRunner().invoke(app, ["world", "build", "--sizes", "raycl-tiny-xs,raycl-tiny-s", "--processes", "2"])
    assert first.exit_code == 0, first.output
    assert "pretraining 2 ladder rung(s) before any trial, 2 at a time (one thread each)" in first.output
    assert {"ladder rung ready: raycl-tiny-xs", "ladder rung ready: raycl-tiny-s"} <= {
        line.split(" (")[0] for line in first.output.splitlines()
    }
    rungs = [json.loads(path.read_text()) for path in (tmp_path / "cache" / "models").glob("*/rung.json")]
    assert sorted(rung["name"] for rung in rungs) == ["raycl-tiny-s", "raycl-tiny-xs"]
    assert {rung["threads"] for rung in rungs} == {1}

    again = CliRunner().invoke(app, ["world", "build", "--sizes", "raycl-tiny-xs,raycl-tiny-s"])
    assert again.exit_code == 0 and "built 0 rung(s); 2 were in the cache already" in again.output
    wrong = CliRunner().invoke(app, ["world", "build", "--sizes", "raycl-tiny-xxs"])
    assert wrong.exit_code == 2 and "raycl-tiny-xxs not a ladder rung" in wrong.output
