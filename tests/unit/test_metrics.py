import math

import pytest
import torch

from raycl.evaluation import metrics

# Held-out losses R[i][j]: row 0 before training, row i after stage i (three stages).
R = [
    [4.0, 5.0, 6.0],
    [2.0, 4.5, 5.5],
    [2.5, 2.0, 5.0],
    [3.0, 2.5, 1.0],
]


def test_learning_is_the_fractional_perplexity_drop() -> None:
    assert metrics.learning(5.0, 5.0) == 0.0
    assert metrics.learning(5.0, 5.0 + math.log(0.5)) == pytest.approx(0.5)
    assert metrics.learning(5.0, 6.0) < 0  # the new data got worse


def test_forgetting_is_the_rise_of_base_loss_in_nats() -> None:
    assert metrics.forgetting(1.0, 1.5) == pytest.approx(0.5)
    assert metrics.forgetting(1.0, 0.75) == pytest.approx(-0.25)


def test_backward_transfer_by_hand() -> None:
    # ((R[1][0] - R[3][0]) + (R[2][1] - R[3][1])) / 2 = ((2 - 3) + (2 - 2.5)) / 2
    assert metrics.backward_transfer(R) == pytest.approx(-0.75)


def test_forward_transfer_by_hand() -> None:
    # ((R[0][1] - R[1][1]) + (R[0][2] - R[2][2])) / 2 = ((5 - 4.5) + (6 - 5)) / 2
    assert metrics.forward_transfer(R) == pytest.approx(0.75)


def test_stage_forgetting_by_hand() -> None:
    # stage 0: 3.0 - min(2.0, 2.5); stage 1: 2.5 - min(2.0)
    assert metrics.stage_forgetting(R) == pytest.approx([1.0, 0.5])


def test_average_final_loss_and_new_loss() -> None:
    assert metrics.average_final_loss(R) == pytest.approx(6.5 / 3)
    assert metrics.mean_new_loss(R[0]) == pytest.approx(5.0)


def test_single_stage_has_no_transfer() -> None:
    single = [[3.0], [1.0]]
    assert metrics.backward_transfer(single) == 0.0
    assert metrics.forward_transfer(single) == 0.0
    assert metrics.stage_forgetting(single) == []


def test_malformed_matrix_is_rejected() -> None:
    with pytest.raises(ValueError, match="T \\+ 1 rows"):
        metrics.backward_transfer([[1.0, 2.0], [1.0]])


def test_weight_drift_per_layer_and_spread() -> None:
    initial = {
        "model.layers.0.mlp.up_proj.weight": torch.tensor([[3.0, 4.0]]),
        "model.layers.1.self_attn.q_proj.weight": torch.eye(2),
        "model.embed_tokens.weight": torch.ones(3, 2),
        "model.layers.0.input_layernorm.weight": torch.ones(2),  # 1-D: ignored
    }
    current = {
        "model.layers.0.mlp.up_proj.weight": torch.tensor([[3.3, 4.4]]),  # |delta| 0.5 of 5
        "model.layers.1.self_attn.q_proj.weight": 2 * torch.eye(2),  # |delta| = |W0|
        "model.embed_tokens.weight": torch.ones(3, 2),
        "model.layers.0.input_layernorm.weight": 5 * torch.ones(2),
    }
    drift = metrics.weight_drift(initial, current)
    assert drift == pytest.approx({"layer_00": 0.1, "layer_01": 1.0, "other": 0.0})
    assert metrics.drift_spread(drift) == pytest.approx(0.9)


def test_learning_in_nats_and_forgetting_as_a_share_of_pretraining_progress() -> None:
    assert metrics.learning_nats(5.0, 3.5) == 1.5
    # Pretraining took the loss from ln(1000) = 6.91 to 2.0; the stream gave back 0.49 of those 4.91 nats.
    init = metrics.untrained_loss(1000)
    assert init == pytest.approx(6.9078, abs=1e-4)
    assert metrics.forgetting_fraction(init, 2.0, 2.49) == pytest.approx(0.49 / (init - 2.0))
    assert metrics.forgetting_fraction(init, 2.0, 2.0) == 0.0
