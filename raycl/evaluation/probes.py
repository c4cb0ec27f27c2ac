"""Multiple-choice probes of the offline world's facts, written as jsonl files lm-eval can score.

An item asks about one fact in a chat: the user's question, then the assistant's answer up to the
fact's value. The choices are the true value and three distractors from the relation's value pool,
each followed by the rest of the answer, so lm-eval compares the loglikelihood of the four completed
answers. The question uses a held-out phrasing, which no train text contains, so an item asks about
the fact rather than replaying a memorised exchange; the answer uses a train phrasing, the words the
model learned to state the fact in. (Held-out answers as well leave even the base model near chance
on its own base facts: 29% against 34% with train answers on raycl-tiny-s, 600 items, chance 25%.)
Everything is drawn from the world seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from raycl.config.benchmarks import ACQUISITION, RETENTION
from raycl.world.corpus import _DOMAINS, Domain

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from raycl.world.offline import World

NUM_CHOICES = 4


def acquisition_task(domain_name: str) -> str:
    """The per-stage acquisition task, e.g. `raycl_acquisition_astronomy`."""
    return f"{ACQUISITION}_{domain_name}"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def domain_probes(
    domain: Domain, tokenizer: PreTrainedTokenizerBase, seed: int, questions_per_entity: int = 1
) -> list[dict]:
    """Probe items `{context, choices, gold, entity, relation}` for `questions_per_entity` facts of
    each entity (distinct relations), in the order of the domain's entities."""
    relations = {relation.name: relation for relation in _DOMAINS[domain.name]}
    by_entity: dict[str, list[tuple[str, str]]] = {}
    for entity, relation, value in domain.facts:
        by_entity.setdefault(entity, []).append((relation, value))
    rng = random.Random(f"{seed}/probes/{domain.name}")
    items = []
    for entity, facts in by_entity.items():
        for relation_name, value in rng.sample(facts, min(questions_per_entity, len(facts))):
            relation = relations[relation_name]
            question = _capitalized(rng.choice(relation.heldout_questions).format(e=entity))
            before, after = rng.choice(relation.train_statements).split("{v}")
            before, after = before.format(e=entity), after.format(e=entity)
            values = rng.sample([v for v in relation.values if v != value], NUM_CHOICES - 1)
            gold = rng.randrange(NUM_CHOICES)
            values.insert(gold, value)
            # The chat template frames the question exactly as in training, BOS included: this
            # world's tokenizer never adds BOS by itself, and lm-eval adds none to a non-empty
            # context, so BOS must be in the text (lm-eval then encodes it without adding another).
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
            assert isinstance(prompt, str)  # tokenize=False renders text
            if before:
                # The space before the value belongs to the choice, as tokenized in training.
                context, choices = prompt + _capitalized(before.rstrip(" ")), [f" {v}{after}" for v in values]
            else:
                context, choices = prompt, [_capitalized(v) + after for v in values]
            items.append(
                {"context": context, "choices": choices, "gold": gold, "entity": entity, "relation": relation_name}
            )
    return items


def write_world_probes(
    world: World, tokenizer: PreTrainedTokenizerBase, out: Path, questions_per_entity: int = 1
) -> dict[str, Path]:
    """Write the retention probe (base facts) and one acquisition probe per stage to `out`;
    return `{task name: jsonl path}`."""
    out.mkdir(parents=True, exist_ok=True)
    domains = {RETENTION: world.text.base} | {acquisition_task(d.name): d for d in world.text.stages}
    paths = {}
    for task, domain in domains.items():
        items = domain_probes(domain, tokenizer, world.config.seed, questions_per_entity)
        paths[task] = out / f"{task}.jsonl"
        paths[task].write_text("".join(json.dumps(item) + "\n" for item in items))
    return paths
