from pathlib import Path

import pytest

from raycl.config import ConfigError, TrialConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_the_default_trial() -> None:
    assert load_config(None) == TrialConfig()


def test_yaml_sections_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "method:\n  name: galore\n  galore_rank: 4\ntrain:\n  lr: 0.001\n"))
    assert (config.method.name, config.method.galore_rank, config.train.lr) == ("galore", 4, 0.001)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  learning_rate: 0.1\n", "trial.yaml: train.learning_rate: unknown key"),
        ("trian:\n  lr: 0.1\n", "trial.yaml: trian: unknown key"),
        ("train:\n  lr: -1\n", "trial.yaml: train.lr: Input should be greater than 0"),
        ("method:\n  name: adapter\n", "trial.yaml: method.name: 'adapter' is not one of 'full', 'lora', 'galore'"),
        ("method:\n  name: galore\n  lora_rank: 4\n", "trial.yaml: method.lora_rank: not used by a galore method"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", "trial.yaml: line 3: key 'lr' is given twice"),
        (
            "model:\n  pretrain_tokens_per_param: 7\n",
            "trial.yaml: model.pretrain_tokens_per_param: the ladder is pretrained to 5, 10, 20, 40",
        ),
        ("world:\n  num_stages: 9\n", "trial.yaml: world.num_stages: Input should be less than or equal to 5"),
        ("train:\n  warmup_steps: 500\n", "trial.yaml: train.warmup_steps: longer than the whole stream"),
        ("- just\n- a list\n", "trial.yaml: the top level must be a mapping"),
        ("train: [unclosed\n", "trial.yaml: not valid YAML"),
        ("train:\n  lr: .nan\n", "trial.yaml: train.lr: Input should be a finite number"),
        ("train:\n  grad_clip: .inf\n", "trial.yaml: train.grad_clip: Input should be a finite number"),
        ("replay:\n  kl_weight: .nan\n", "trial.yaml: replay.kl_weight: Input should be a finite number"),
        ("train:\n  weight_decay: 1000.0\n", "trial.yaml: train.weight_decay: Input should be less than or equal to 1"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path))
    assert expected in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_by_dotted_key() -> None:
    config = TrialConfig().with_overrides({"train.lr": 1e-4, "method.name": "lora"})
    assert (config.train.lr, config.method.name) == (1e-4, "lora")
    with pytest.raises(ConfigError, match="train.rate: unknown key"):
        TrialConfig().with_overrides({"train.rate": 1.0})
    with pytest.raises(ConfigError, match="overrides: train.lr: Input should be less than 1"):
        TrialConfig().with_overrides({"train.lr": 5.0})


def test_switching_method_by_override_leaves_no_other_methods_defaults() -> None:
    lora = (
        TrialConfig()
        .with_overrides({"method.name": "galore"})
        .with_overrides({"method.name": "lora", "method.lora_rank": 2})
    )
    assert (lora.method.name, lora.method.lora_rank) == ("lora", 2)
    assert "galore_rank" not in lora.method.model_dump()
    # A key set for one method is an error under another, not silently ignored.
    galore = TrialConfig().with_overrides({"method.name": "galore", "method.galore_rank": 4})
    with pytest.raises(ConfigError, match="method.galore_rank: not used by a lora method"):
        galore.with_overrides({"method.name": "lora"})
