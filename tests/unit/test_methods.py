import pytest
import torch
from transformers import LlamaForCausalLM

from raycl.config import FullMethod, GaLoreMethod, LoraMethod, MethodConfig, TrainConfig
from raycl.models.ladder import LADDER, llama_config
from raycl.training.methods import optimizer_state_bytes, prepare_method
from raycl.world.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    texts = [f"the river {i} flows past town {i * 7} in the north" for i in range(200)]
    return train_tokenizer(texts, vocab_size=512, out_dir=tmp_path_factory.mktemp("tok"))


def state_bytes_after_steps(tokenizer, rung: str, method: MethodConfig) -> tuple[int, dict]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(LADDER[rung], tokenizer))
    prepared = prepare_method(model, method, TrainConfig())
    batch = torch.randint(0, len(tokenizer), (2, 16))
    for _ in range(2):
        prepared.model(input_ids=batch, labels=batch).loss.backward()
        prepared.optimizer.step()
        prepared.optimizer.zero_grad()
    return optimizer_state_bytes(prepared.optimizer), prepared.info


def test_lora_and_galore_keep_less_optimizer_state_than_adamw(tokenizer) -> None:
    # raycl-tiny-m has d = 32; GaLore at rank d/4 must keep at most half of AdamW's state.
    full, full_info = state_bytes_after_steps(tokenizer, "raycl-tiny-m", FullMethod())
    lora, lora_info = state_bytes_after_steps(tokenizer, "raycl-tiny-m", LoraMethod(name="lora", lora_rank=8))
    galore, galore_info = state_bytes_after_steps(tokenizer, "raycl-tiny-m", GaLoreMethod(name="galore", galore_rank=8))
    # AdamW: two fp32 moments per parameter, plus a 4-byte step counter per tensor.
    assert 0 < full - 2 * 4 * full_info["trainable_params"] < 4 * 100
    assert lora < full and galore <= full / 2
    assert lora_info["trainable_params"] == lora_info["lora_adapted_params"] < full_info["trainable_params"]
    # 4 layers x 7 projected matrices, every one smaller in rank than its sides.
    assert galore_info["galore_projected_matrices"] == galore_info["galore_saving_matrices"] == 28


def test_galore_reports_a_rank_that_saves_nothing(tokenizer) -> None:
    _, info = state_bytes_after_steps(tokenizer, "raycl-tiny-s", GaLoreMethod(name="galore", galore_rank=24))
    assert info["galore_projected_matrices"] == 21  # 3 layers x 7 matrices
    assert info["galore_saving_matrices"] == 0  # rank 24 >= d = 24: a silent no-op, made visible


def test_target_modules_that_match_nothing_are_an_error(tokenizer) -> None:
    bad = GaLoreMethod(name="galore", galore_target_modules=("query_key_value",))
    with pytest.raises(ValueError, match="method.galore_target_modules"):
        state_bytes_after_steps(tokenizer, "raycl-tiny-s", bad)
    with pytest.raises(ValueError, match="method.lora_target_modules"):
        state_bytes_after_steps(tokenizer, "raycl-tiny-s", LoraMethod(name="lora", lora_target_modules=("dense",)))


@pytest.mark.parametrize(
    "method", [FullMethod(), LoraMethod(name="lora"), GaLoreMethod(name="galore")], ids=lambda m: m.name
)
def test_layer_lr_slope_scales_each_layers_lr_linearly_with_depth(tokenizer, method: MethodConfig) -> None:
    model = LlamaForCausalLM(llama_config(LADDER["raycl-tiny-m"], tokenizer))  # 4 layers
    prepared = prepare_method(model, method, TrainConfig(layer_lr_slope=0.6))
    scales = sorted({group["lr_scale"] for group in prepared.optimizer.param_groups})
    assert scales == pytest.approx([0.4, 0.8, 1.0, 1.2, 1.6] if method.name != "lora" else [0.4, 0.8, 1.2, 1.6])
    trained = {id(p) for group in prepared.optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in prepared.model.parameters() if p.requires_grad}
    assert all(
        "lr_scale" not in group for group in prepare_method(model, FullMethod(), TrainConfig()).optimizer.param_groups
    )
