"""Tests of the lm-eval harness (raycl.evaluation.harness, raycl.evaluation.probes) and of checkpoint export
(raycl.reporting.checkpoints) on a tiny random model: no pretraining, no /work/shared."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from raycl.config import TrialConfig, WorldConfig
from raycl.config.benchmarks import BenchmarkConfig, TaskFile
from raycl.data.benchmark_files import check_task_file
from raycl.data.tokens import encode_conversation
from raycl.evaluation.harness import benchmark_deltas, prepare_task_dir, run_benchmarks
from raycl.evaluation.probes import domain_probes
from raycl.models.loading import load_base_model
from raycl.reporting.checkpoints import evaluate_checkpoint, export_checkpoint, load_checkpoint_config
from raycl.training.checkpoint import save_checkpoint
from raycl.training.methods import prepare_method
from raycl.world.corpus import _DOMAINS
from raycl.world.offline import World, load_world

STAGE_TASKS = ["raycl_acquisition_astronomy", "raycl_acquisition_cuisine", "raycl_acquisition_zoology"]


@pytest.fixture(scope="module")
def world() -> World:
    return load_world(WorldConfig())


def tiny_model(world: World) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(world.tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def model(world: World) -> LlamaForCausalLM:
    return tiny_model(world)


@pytest.fixture(scope="module")
def task_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_task_dir(world, BenchmarkConfig(), tmp_path_factory.mktemp("tasks"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- config ---------------------------------------------------------------------------------------


def test_default_config_runs_the_world_probes_and_validates_task_names() -> None:
    config = BenchmarkConfig()
    assert config.tasks == ("raycl_retention", "raycl_acquisition") and config.quick_limit == 0
    with pytest.raises(ValidationError, match="raycl_arc_easy needs task_paths.raycl_arc_easy"):
        BenchmarkConfig(tasks=("raycl_arc_easy",))
    with pytest.raises(ValidationError, match="mmlu is not a raycl task .*; set include_path .* or include_defaults"):
        BenchmarkConfig(tasks=("mmlu",))
    assert BenchmarkConfig(tasks=("mmlu",), include_defaults=True).tasks == ("mmlu",)
    assert BenchmarkConfig(tasks=("mmlu",), include_path="tasks").include_path == str(Path("tasks").absolute())
    with pytest.raises(ValidationError, match="arc is not a shipped benchmark template"):
        BenchmarkConfig(task_paths={"arc": "/x.jsonl"})
    named = BenchmarkConfig(tasks=("arc",), task_paths={"arc": {"template": "raycl_arc_easy", "path": "/x.jsonl"}})
    assert named.task_paths["arc"].template == "raycl_arc_easy"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BenchmarkConfig(limits=3)


def test_importing_the_config_loads_neither_torch_nor_lm_eval() -> None:
    # raycl.config holds BenchmarkConfig; validating a YAML must not pay for torch (seconds).
    code = (
        "import sys, raycl.evaluation.harness; print(sorted({'torch', 'transformers', 'lm_eval'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- probes ---------------------------------------------------------------------------------------


def test_probes_ask_every_entity_once_with_the_true_value_among_three_pool_distractors(world, task_dir) -> None:
    items = {task: read_jsonl(task_dir / f"{task}.jsonl") for task in ["raycl_retention", *STAGE_TASKS]}
    assert [len(v) for v in items.values()] == [120, 24, 24, 24]
    domains = {"raycl_retention": world.text.base} | dict(zip(STAGE_TASKS, world.text.stages))
    for task, domain in domains.items():
        facts = {(entity, relation): value for entity, relation, value in domain.facts}
        relations = {relation.name: relation for relation in _DOMAINS[domain.name]}
        assert len({item["entity"] for item in items[task]}) == len(items[task])
        for item in items[task]:
            relation = relations[item["relation"]]
            value = facts[(item["entity"], item["relation"])]
            starts = [choice.strip().lower() for choice in item["choices"]]
            assert len(set(starts)) == 4 and starts[item["gold"]].startswith(value.lower())
            assert all(any(start.startswith(v.lower()) for v in relation.values) for start in starts)
            assert item["context"].startswith("<s><|user|>") and item["context"].count("<s>") == 1
            question = item["context"].removeprefix("<s><|user|>").split("\n")[0]
            assert question in {q.format(e=item["entity"]) for q in relation.heldout_questions}
    # Gold positions spread over the four slots (a probe with a fixed gold slot would be gameable).
    assert len({item["gold"] for item in items["raycl_retention"]}) == 4


def test_probes_are_a_function_of_the_world_seed(world, tmp_path) -> None:
    first = prepare_task_dir(world, BenchmarkConfig(), tmp_path / "a")
    second = prepare_task_dir(world, BenchmarkConfig(), tmp_path / "b")
    assert (first / "raycl_retention.jsonl").read_bytes() == (second / "raycl_retention.jsonl").read_bytes()
    other = domain_probes(load_world(WorldConfig(seed=1)).text.base, world.tokenizer, seed=1)
    assert other != read_jsonl(first / "raycl_retention.jsonl")
    two = domain_probes(world.text.base, world.tokenizer, seed=0, questions_per_entity=2)
    assert len(two) == 240 and len({(item["entity"], item["relation"]) for item in two}) == 240


def test_probe_is_scored_on_the_tokens_of_a_training_chat_with_one_bos(world, model) -> None:
    from lm_eval.models.huggingface import HFLM

    tokenizer = world.tokenizer
    lm = HFLM(pretrained=model, backend="causal", tokenizer=tokenizer, batch_size=1)
    for item in domain_probes(world.text.stages[0], tokenizer, seed=0)[:10]:
        choice = item["choices"][item["gold"]]
        context, continuation = lm._encode_pair(item["context"], choice)
        assert context.count(tokenizer.bos_token_id) == 1 and context[0] == tokenizer.bos_token_id
        question, answer = item["context"].removeprefix("<s><|user|>").split("\n<|assistant|>")
        chat = encode_conversation(
            tokenizer, [{"role": "user", "content": question}, {"role": "assistant", "content": answer + choice}]
        )
        # The chat as trained on, up to the answer's closing EOS.
        assert context + continuation == chat[: chat.index(tokenizer.eos_token_id)]
        assert continuation == tokenizer(choice, add_special_tokens=False)["input_ids"]


# --- task directory -------------------------------------------------------------------------------


def write_real_benchmark_files(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    rows = {
        "raycl_arc_easy": [
            {
                "query": "Question: Which river flows past the town?",
                "choices": ["Amber", "Grey", "Red", "Cold"],
                "gold": 1,
            },
            {"query": "Question: What do towns trade?", "choices": ["wool", "salt", "glass", "fish"], "gold": 0},
        ],
        "raycl_hellaswag": [
            {
                "ind": 0,
                "activity_label": "Trade",
                "ctx": "The town sells wool. the merchants",
                "endings": ["buy salt.", "sing.", "sleep.", "swim."],
                "label": 0,
            },
        ],
        "raycl_lambada": [
            {"context": "The town of Bako stands on the Amber", "continuation": "River"},
            {"context": "Bako is known for its", "continuation": "wool"},
        ],
    }
    paths = {}
    for task, items in rows.items():
        paths[task] = str(directory / f"{task}.jsonl")
        Path(paths[task]).write_text("".join(json.dumps(item) + "\n" for item in items))
    return paths


def test_task_dir_points_every_yaml_at_its_absolute_data_file(world, tmp_path) -> None:
    paths = write_real_benchmark_files(tmp_path / "data")
    out = prepare_task_dir(world, BenchmarkConfig(task_paths=paths), tmp_path / "tasks")
    specs = {path.stem: yaml.safe_load(path.read_text()) for path in out.glob("*.yaml")}
    assert sorted(specs) == sorted(["raycl_retention", *STAGE_TASKS, *paths])
    for task, spec in specs.items():
        data_file = Path(spec["dataset_kwargs"]["data_files"]["test"])
        assert spec["task"] == task and data_file.is_absolute() and data_file.is_file()
        assert spec.get("tag") == (["raycl_acquisition"] if task in STAGE_TASKS else None)
    assert specs["raycl_arc_easy"]["dataset_kwargs"]["data_files"]["test"] == paths["raycl_arc_easy"]
    with pytest.raises(FileNotFoundError, match="task_paths.raycl_lambada: no such file"):
        prepare_task_dir(
            world, BenchmarkConfig(task_paths={"raycl_lambada": str(tmp_path / "nope.jsonl")}), tmp_path / "t2"
        )
    (tmp_path / "arc.jsonl").write_text('{"question": "Why?", "choices": ["a", "b"], "gold": 0}\n')
    with pytest.raises(ValueError, match="task_paths.raycl_arc_easy: the rows of .* lack query"):
        prepare_task_dir(
            world, BenchmarkConfig(task_paths={"raycl_arc_easy": str(tmp_path / "arc.jsonl")}), tmp_path / "t4"
        )
    with pytest.raises(ValueError, match="raycl_acquisition_music is not a stage of this world"):
        prepare_task_dir(world, BenchmarkConfig(tasks=("raycl_acquisition_music",)), tmp_path / "t3")


# --- run_benchmarks -------------------------------------------------------------------------------


def hand_accuracy(model, tokenizer, items: list[dict]) -> float:
    """Multiple-choice accuracy by summed choice loglikelihood, computed directly with the model."""
    correct = 0
    for item in items:
        context = tokenizer(item["context"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in item["choices"]:
            ids = tokenizer(item["context"] + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            scores.append(sum(float(logprobs[i - 1, ids[i]]) for i in range(len(context), len(ids))))
        correct += scores.index(max(scores)) == item["gold"]
    return correct / len(items)


def test_run_benchmarks_reports_the_accuracy_a_hand_computation_gives(world, model, task_dir) -> None:
    scores = run_benchmarks(model, world.tokenizer, BenchmarkConfig(batch_size=8), task_dir, limit=12)
    assert sorted(k for k in scores if "/" not in k) == sorted(["raycl_retention", "raycl_acquisition", *STAGE_TASKS])
    for task in ["raycl_retention", *STAGE_TASKS]:
        assert scores[task] == pytest.approx(
            hand_accuracy(model, world.tokenizer, read_jsonl(task_dir / f"{task}.jsonl")[:12])
        )
        assert 0.0 <= scores[f"{task}/acc_norm"] <= 1.0
    # Equal stage sizes: the aggregate is the plain mean of the stages.
    assert scores["raycl_acquisition"] == pytest.approx(sum(scores[t] for t in STAGE_TASKS) / 3)


def test_run_benchmarks_leaves_mode_and_random_state_alone_and_prints_no_progress(
    world, model, task_dir, capfd
) -> None:
    model.train()
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    run_benchmarks(model, world.tokenizer, BenchmarkConfig(), task_dir, limit=4)
    assert model.training
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    model.eval()
    run_benchmarks(model, world.tokenizer, BenchmarkConfig(), task_dir, limit=4)
    assert not model.training
    err = capfd.readouterr().err
    assert "it/s" not in err and "Running loglikelihood" not in err


def test_shipped_real_benchmark_templates_run_on_local_files(world, model, tmp_path) -> None:
    paths = write_real_benchmark_files(tmp_path / "data")
    config = BenchmarkConfig(tasks=tuple(paths), task_paths=paths)
    scores = run_benchmarks(model, world.tokenizer, config, prepare_task_dir(world, config, tmp_path / "tasks"))
    assert sorted(scores) == sorted(
        [
            "raycl_arc_easy",
            "raycl_arc_easy/acc_norm",
            "raycl_hellaswag",
            "raycl_hellaswag/acc",
            "raycl_lambada",
            "raycl_lambada/perplexity",
        ]
    )
    assert scores["raycl_arc_easy"] in (0.0, 0.5, 1.0) and scores["raycl_hellaswag"] in (0.0, 1.0)
    # A random model over a 512-token vocabulary: the last word costs several tokens of ~ln(512) nats.
    assert scores["raycl_lambada/perplexity"] > 100


def test_a_shipped_template_serves_several_tasks_under_their_own_names(world, model, tmp_path) -> None:
    paths = write_real_benchmark_files(tmp_path / "data")
    challenge = tmp_path / "data" / "arc_challenge.jsonl"
    challenge.write_text(
        json.dumps({"query": "Question: Where is Bako?", "choices": ["north", "south"], "gold": 0}) + "\n"
    )
    config = BenchmarkConfig(
        tasks=("raycl_arc_easy", "arc_challenge", "hellaswag_local"),
        task_paths={
            "raycl_arc_easy": paths["raycl_arc_easy"],
            "arc_challenge": {"template": "raycl_arc_easy", "path": str(challenge)},
            "hellaswag_local": {"template": "raycl_hellaswag", "path": paths["raycl_hellaswag"]},
        },
    )
    out = prepare_task_dir(world, config, tmp_path / "tasks")
    spec = yaml.safe_load((out / "arc_challenge.yaml").read_text())
    assert spec["task"] == "arc_challenge" and spec["dataset_kwargs"]["data_files"]["test"] == str(challenge)
    scores = run_benchmarks(model, world.tokenizer, config, out)
    assert {"raycl_arc_easy", "arc_challenge", "hellaswag_local"} <= set(scores)
    # The HellaSwag template's tasks score acc_norm first, whatever their name.
    assert "hellaswag_local/acc" in scores and "hellaswag_local/acc_norm" not in scores


def write_include_dir(directory: Path, dataset: dict) -> Path:
    """A directory of one lm-eval task YAML, as users write them for `lm_eval --include_path`."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "task": "town_words",
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{query}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    } | dataset
    (directory / "town_words.yaml").write_text(yaml.safe_dump(spec))
    return directory


def test_include_path_tasks_run_beside_raycl_tasks_and_unknown_names_fail_in_one_line(
    world, model, task_dir, tmp_path
) -> None:
    data = tmp_path / "towns.jsonl"
    data.write_text(
        "".join(
            json.dumps({"query": f"Town {i} trades", "choices": ["wool", "salt"], "gold": i % 2}) + "\n"
            for i in range(4)
        )
    )
    include = write_include_dir(
        tmp_path / "mine", {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}}
    )
    config = BenchmarkConfig(tasks=("raycl_retention", "town_words"), include_path=str(include))
    scores = run_benchmarks(model, world.tokenizer, config, task_dir)
    assert scores["town_words"] in (0.0, 0.25, 0.5, 0.75, 1.0) and "raycl_retention" in scores
    # lm-eval's own tasks are not indexed: a built-in name is unknown here.
    with pytest.raises(ValueError, match=f"^tasks: hellaswag is not one of raycl's tasks, {include}$"):
        run_benchmarks(model, world.tokenizer, config.model_copy(update={"tasks": ("hellaswag",)}), task_dir)
    with pytest.raises(ValueError, match="include_path: no such directory"):
        run_benchmarks(
            model, world.tokenizer, config.model_copy(update={"include_path": str(tmp_path / "none")}), task_dir
        )


def test_a_hub_task_offline_fails_in_one_line(world, model, task_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    include = write_include_dir(tmp_path / "hub", {"dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy"})
    config = BenchmarkConfig(tasks=("town_words",), include_path=str(include))
    with pytest.raises(ValueError) as error:
        run_benchmarks(model, world.tokenizer, config, task_dir)
    assert str(error.value).startswith(
        "tasks: town_words: Couldn't reach 'allenai/ai2_arc' on the Hub"
    ) and "\n" not in str(error.value)


def test_task_files_are_checked_before_lm_eval_reads_them(tmp_path) -> None:
    csv = tmp_path / "arc.csv"
    csv.write_text("query,choices,gold\n")
    with pytest.raises(ValueError, match=f"task_paths.raycl_arc_easy: {csv} is not a JSON-lines file"):
        check_task_file("raycl_arc_easy", TaskFile(template="raycl_arc_easy", path=str(csv)))
    broken = tmp_path / "arc.jsonl"
    broken.write_text("\n{query: 1}\n")
    with pytest.raises(ValueError, match=f"task_paths.mine: {broken}: line 2: unparseable JSON"):
        check_task_file("mine", TaskFile(template="raycl_arc_easy", path=str(broken)))


# --- retention metrics ----------------------------------------------------------------------------


def test_benchmark_deltas_in_points_with_the_largest_retention_drop() -> None:
    before = {
        "raycl_retention": 0.50,
        "raycl_arc_easy": 0.40,
        "raycl_acquisition": 0.30,
        "raycl_lambada/perplexity": 90.0,
    }
    after = {
        "raycl_retention": 0.45,
        "raycl_arc_easy": 0.42,
        "raycl_acquisition": 0.10,
        "raycl_lambada/perplexity": 99.0,
    }
    deltas = benchmark_deltas(before, after)
    assert deltas == pytest.approx(
        {
            "bench_raycl_retention_delta": -5.0,
            "bench_raycl_arc_easy_delta": 2.0,
            "bench_raycl_acquisition_delta": -20.0,
            "bench_max_drop": 5.0,  # acquisition is not retention
        }
    )
    assert benchmark_deltas({"a": 0.3}, {"a": 0.4})["bench_max_drop"] == 0.0


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["full", "lora"])
def test_exported_checkpoint_computes_what_the_trained_model_computed(world, tmp_path, method) -> None:
    base = tmp_path / "base"
    tiny_model(world).save_pretrained(base)
    world.tokenizer.save_pretrained(base)
    config = TrialConfig.model_validate(
        {"model": {"name": str(base)}, "method": {"name": method} | ({"lora_rank": 2} if method == "lora" else {})}
    )
    model, _ = load_base_model(config.model, world)
    prepared = prepare_method(model, config.method, config.train)
    with torch.no_grad():
        for parameter in prepared.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))  # LoRA's B starts at zero: move it
    checkpoint = save_checkpoint(
        tmp_path / "stage_000",
        prepared.model,
        prepared.optimizer,
        {"stages_done": 1, "config": config.model_dump(mode="json")},
    )
    assert load_checkpoint_config(checkpoint) == config

    hf_dir = export_checkpoint(checkpoint, config)
    assert hf_dir == checkpoint / "eval" / "hf"
    exported = AutoModelForCausalLM.from_pretrained(hf_dir)
    ids = torch.tensor([encode_conversation(world.tokenizer, [{"role": "user", "content": "Where is Bako?"}])])
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, prepared.model(input_ids=ids).logits, atol=1e-5)
    assert AutoTokenizer.from_pretrained(hf_dir)("Bako")["input_ids"][0] != world.tokenizer.bos_token_id

    if method == "full":
        task_dir = prepare_task_dir(world, BenchmarkConfig(), tmp_path / "tasks")
        in_memory = run_benchmarks(prepared.model, world.tokenizer, BenchmarkConfig(), task_dir, limit=12)
        assert evaluate_checkpoint(checkpoint, ["raycl_retention", "raycl_acquisition"], limit=12) == pytest.approx(
            in_memory
        )


def test_a_checkpoint_never_turns_on_remote_code_by_itself(tmp_path) -> None:
    """progress.json asks for trust_remote_code on a model whose code plants a file: only the flag may run it."""
    from typer.testing import CliRunner

    from raycl.cli import app

    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil_model"
    evil.mkdir()
    (evil / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
            }
        )
    )
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = TrialConfig.model_validate({"model": {"name": str(evil), "trust_remote_code": True}})
    checkpoint = tmp_path / "stage_000"
    checkpoint.mkdir()
    (checkpoint / "progress.json").write_text(json.dumps({"stages_done": 1, "config": config.model_dump(mode="json")}))

    with pytest.raises(ValueError) as caught:
        evaluate_checkpoint(checkpoint, ["raycl_retention"])
    assert str(caught.value).startswith(f"{checkpoint / 'progress.json'}: model.trust_remote_code:")
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--tasks", "raycl_retention"])
    assert (
        result.exit_code == 2
        and "--trust-remote-code" in result.output
        and len(result.output.strip().splitlines()) == 1
    )
    assert not marker.exists()


def test_trials_share_one_task_directory_per_world_settings_and_tokenizer(world, tmp_path, monkeypatch) -> None:
    from raycl.evaluation.harness import shared_task_dir

    monkeypatch.setenv("RAYCL_CACHE", str(tmp_path / "cache"))
    first = shared_task_dir(world, BenchmarkConfig(), world.tokenizer)
    assert (first / ".complete").exists() and (first / "raycl_retention.yaml").is_file()
    stamp = (first / "raycl_retention.yaml").stat().st_mtime_ns
    assert shared_task_dir(world, BenchmarkConfig(), world.tokenizer) == first  # built once, not rewritten
    assert (first / "raycl_retention.yaml").stat().st_mtime_ns == stamp
    other = shared_task_dir(world, BenchmarkConfig(questions_per_entity=2), world.tokenizer)
    assert other != first and (other / ".complete").exists()
    # The limit of each evaluation is not part of what the directory holds.
    assert shared_task_dir(world, BenchmarkConfig(limit=5), world.tokenizer) == first


def test_cli_eval_names_the_key_of_a_bad_task_or_data_file_in_one_line(tmp_path) -> None:
    """Settings are checked before the checkpoint is read: none exists here."""
    from typer.testing import CliRunner

    from raycl.cli import app

    csv = tmp_path / "arc.csv"
    csv.write_text("query,choices,gold\n")
    checkpoint = str(tmp_path / "stage_001")
    cases = [
        (["--tasks", "nope"], "error: raycl eval: tasks: nope is not a raycl task (raycl_retention, "),
        (
            ["--tasks", "raycl_arc_easy", "--task-path", f"raycl_arc_easy={csv}"],
            f"error: task_paths.raycl_arc_easy: {csv} is not a JSON-lines file",
        ),
        (
            ["--tasks", "arc2", "--task-path", f"arc2=raycl_arc_easy:{csv}"],
            f"error: task_paths.arc2: {csv} is not a JSON-lines file",
        ),
        (
            ["--tasks", "mine", "--include-path", str(tmp_path / "none")],
            f"error: include_path: no such directory {tmp_path / 'none'}",
        ),
    ]
    for options, expected in cases:
        result = CliRunner().invoke(app, ["eval", checkpoint, *options])
        assert result.exit_code == 2 and result.output.startswith(expected), result.output
        assert len(result.output.strip().splitlines()) == 1


def test_lm_evals_progress_bars_are_off_inside_the_quiet_block_and_back_after_it() -> None:
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.models.huggingface

    from raycl.evaluation.harness import _quiet_lm_eval

    modules = (lm_eval.api.model, lm_eval.api.task, lm_eval.models.huggingface)
    originals = [module.tqdm for module in modules]
    with _quiet_lm_eval():
        assert all(module.tqdm(range(2)).disable for module in modules)
    assert [module.tqdm for module in modules] == originals
