"""Tests of the synthetic world text (raycl.world.corpus)."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from raycl.world.corpus import (
    _DOMAINS,
    STAGE_DOMAINS,
    Conversation,
    Domain,
    Split,
    WorldText,
    generate_world_text,
    parse_domains,
    partition,
    popularity,
)


@pytest.fixture(scope="module")
def world() -> WorldText:
    """Every stage domain, default sizes (the base and first stages equal those of the default world)."""
    return generate_world_text(num_stages=len(STAGE_DOMAINS))


def _domains(world: WorldText) -> tuple[Domain, ...]:
    return (world.base, *world.stages)


def _chars(split: Split) -> int:
    return sum(map(len, split.documents)) + sum(len(m["content"]) for c in split.conversations for m in c)


def _sentences(split: Split) -> list[str]:
    return [s for doc in split.documents for s in re.split(r"(?<=[.?!])\s+", doc)]


def _answers(conversation: Conversation) -> list[str]:
    return [m["content"] for m in conversation if m["role"] == "assistant"]


def _mentions(text: str, value: str) -> bool:
    """Whether ``text`` contains ``value`` as whole words (capitalised or not at a sentence start)."""
    first = re.escape(value[0].lower()) + re.escape(value[0].upper())
    return re.search(rf"\b[{first}]{re.escape(value[1:])}\b", text) is not None


def _statements(split: Split) -> list[str]:
    """Every unit of text that states one fact: document sentences and assistant answers."""
    return _sentences(split) + [a for c in split.conversations for a in _answers(c)]


def _by_entity(texts: list[str]) -> dict[str, list[str]]:
    """Texts indexed by the capitalised words in them (entity names among them)."""
    index: dict[str, list[str]] = {}
    for text in texts:
        for word in set(re.findall(r"\b[A-Z][a-z]+\b", text)):
            index.setdefault(word, []).append(text)
    return index


def test_same_seed_gives_identical_world() -> None:
    assert generate_world_text(seed=7) == generate_world_text(seed=7)


def test_different_seeds_give_different_entities_and_facts() -> None:
    a, b = generate_world_text(seed=0), generate_world_text(seed=1)
    assert {e for e, _, _ in a.base.facts} != {e for e, _, _ in b.base.facts}
    assert a.stages[0].facts != b.stages[0].facts
    assert a.base.train != b.base.train


def test_fewer_stages_give_a_prefix_of_the_world(world: WorldText) -> None:
    small = generate_world_text(num_stages=2)
    assert small.base == world.base
    assert small.stages == world.stages[:2]


def test_stage_domains_are_used_in_order(world: WorldText) -> None:
    assert len(STAGE_DOMAINS) >= 5
    assert "base" not in STAGE_DOMAINS
    assert world.base.name == "base"
    assert tuple(d.name for d in world.stages) == STAGE_DOMAINS


def test_too_many_stages_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="stage domains"):
        generate_world_text(num_stages=len(STAGE_DOMAINS) + 1)


def test_entity_names_are_invented_words_unique_across_domains(world: WorldText) -> None:
    entities = [{e for e, _, _ in d.facts} for d in _domains(world)]
    assert [len(es) for es in entities] == [120] + [24] * len(STAGE_DOMAINS)
    everything = set().union(*entities)
    assert len(everything) == sum(map(len, entities)), "an entity appears in two domains"
    table_words = {
        word
        for relations in _DOMAINS.values()
        for rel in relations
        for texts in (rel.values, *rel.phrasings(heldout=False), *rel.phrasings(heldout=True))
        for text in texts
        for word in re.findall(r"[a-z]+", text.lower())
    }
    for name in everything:
        assert re.fullmatch(r"[A-Z][a-z]{2,11}", name), name
        assert name.lower() not in table_words, name


def test_relation_tables_give_values_and_disjoint_phrasings() -> None:
    assert set(_DOMAINS) == {"base", *STAGE_DOMAINS}
    for domain, relations in _DOMAINS.items():
        assert (10 <= len(relations) <= 14) if domain == "base" else (4 <= len(relations) <= 6), domain
        assert len({rel.name for rel in relations}) == len(relations), domain
        for rel in relations:
            assert 8 <= len(rel.values) <= 15, rel.name
            train_q, train_s = rel.phrasings(heldout=False)
            heldout_q, heldout_s = rel.phrasings(heldout=True)
            assert len(train_q) >= 3 and len(train_s) >= 3, rel.name
            assert len(heldout_q) >= 2 and len(heldout_s) >= 2, rel.name
            assert not set(train_q + train_s) & set(heldout_q + heldout_s), rel.name


def test_some_base_relations_depend_on_earlier_ones() -> None:
    relations = {rel.name: rel for rel in _DOMAINS["base"]}
    dependent = [rel for rel in relations.values() if rel.given]
    assert len(dependent) >= 2
    for rel in dependent:
        assert set(rel.typical) == set(relations[rel.given].values), rel.name
        assert set(rel.typical.values()) <= set(rel.values), rel.name


def test_dependent_facts_usually_take_the_typical_value(world: WorldText) -> None:
    values = {(entity, relation): value for entity, relation, value in world.base.facts}
    entities = {entity for entity, _ in values}
    for rel in (rel for rel in _DOMAINS["base"] if rel.given):
        typical = sum(values[e, rel.name] == rel.typical[values[e, rel.given]] for e in entities)
        assert 0.6 <= typical / len(entities) <= 0.95, rel.name


def _row(name: str, **extra: object) -> dict:
    return {
        "name": name, "values": ["a", "b"], "train_questions": ["{e}?"], "train_statements": ["{e} {v}."],
        "heldout_questions": ["{e}??"], "heldout_statements": ["{v} {e}."],
    } | extra  # fmt: skip


def test_domain_table_errors_are_caught_at_load() -> None:
    ok = parse_domains({"d": [_row("x"), _row("y", given="x", typical={"a": "b", "b": "b"})]})
    assert ok["d"][1].typical == {"a": "b", "b": "b"} and ok["d"][0].given is None
    with pytest.raises(ValueError, match="not an earlier relation"):
        parse_domains({"d": [_row("y", given="x", typical={}), _row("x")]})
    with pytest.raises(ValueError, match="every value"):
        parse_domains({"d": [_row("x"), _row("y", given="x", typical={"a": "b"})]})
    with pytest.raises(ValueError, match="not in its values"):
        parse_domains({"d": [_row("x"), _row("y", given="x", typical={"a": "z", "b": "b"})]})


def test_popularity_is_zipfian_with_mean_one() -> None:
    weights = popularity(100, exponent=1.0)
    assert sum(weights) == pytest.approx(100)
    assert weights == sorted(weights, reverse=True)
    assert weights[0] / weights[9] == pytest.approx(10)


def test_partition_sizes_stay_in_bounds_and_sum_up() -> None:
    rng = random.Random(0)
    for count in range(3, 40):
        sizes = partition(rng, count, 3, 5)
        assert sum(sizes) == count and all(3 <= size <= 5 for size in sizes), (count, sizes)
    assert partition(rng, 12, 6, 6) == [6, 6]
    assert partition(rng, 2, 3, 5) == [2]


def test_popular_towns_are_written_about_far_more_than_rare_ones(world: WorldText) -> None:
    index = _by_entity(_statements(world.base.train))
    counts = sorted(len(index[entity]) for entity in {entity for entity, _, _ in world.base.facts})
    assert counts[-1] >= 8 * counts[0]


def test_each_entity_has_one_value_per_relation(world: WorldText) -> None:
    for domain in _domains(world):
        relations = [rel.name for rel in _DOMAINS[domain.name]]
        by_entity: dict[str, list[str]] = {}
        for entity, relation, value in domain.facts:
            assert value in next(r.values for r in _DOMAINS[domain.name] if r.name == relation)
            by_entity.setdefault(entity, []).append(relation)
        assert all(rels == relations for rels in by_entity.values()), domain.name


def test_every_fact_is_taught_in_train_and_probed_in_heldout(world: WorldText) -> None:
    for domain in _domains(world):
        train, heldout = _by_entity(_statements(domain.train)), _by_entity(_statements(domain.heldout))
        for entity, _, value in domain.facts:
            assert any(_mentions(s, value) for s in train[entity]), (domain.name, entity, value)
            assert any(_mentions(s, value) for s in heldout[entity]), (domain.name, entity, value)


def test_base_facts_are_seen_several_times_in_train(world: WorldText) -> None:
    train = _by_entity(_statements(world.base.train))
    for entity, _, value in world.base.facts:
        # Counting stops at ten: popular towns have thousands of statements.
        mentions = (s for s in train[entity] if _mentions(s, value))
        assert len(list(itertools.islice(mentions, 10))) == 10, (entity, value)


def test_each_stage_fact_is_in_at_least_four_train_conversations(world: WorldText) -> None:
    for stage in world.stages:
        # Conversations indexed by entity, as the text of their answers.
        answers = _by_entity([" ".join(_answers(c)) for c in stage.train.conversations])
        for entity, _, value in stage.facts:
            assert sum(_mentions(a, value) for a in answers[entity]) >= 4, (stage.name, entity, value)


def test_stage_heldout_sentences_never_appear_in_train(world: WorldText) -> None:
    for domain in world.stages:
        train = "\n".join(m["content"] for c in domain.train.conversations for m in c)
        heldout = [m["content"] for c in domain.heldout.conversations for m in c]
        assert heldout
        for text in heldout:
            assert text not in train, (domain.name, text)


def test_base_heldout_is_new_text_in_train_phrasings(world: WorldText) -> None:
    base = world.base
    assert not set(base.heldout.documents) & set(base.train.documents)
    train_chats = {tuple(m["content"] for m in c) for c in base.train.conversations}
    assert not {tuple(m["content"] for m in c) for c in base.heldout.conversations} & train_chats
    train_sentences = set(_sentences(base.train))
    assert set(_sentences(base.heldout)) <= train_sentences


def test_conversations_alternate_roles_starting_with_user(world: WorldText) -> None:
    for domain in _domains(world):
        for split in (domain.train, domain.heldout):
            for conversation in split.conversations:
                # Base train chats ask one or two questions, its held-out chats three.
                least, most = 1, 3
                if domain.name == "base":
                    least, most = (3, 3) if split == domain.heldout else (1, 2)
                assert least <= len(conversation) // 2 <= most and len(conversation) % 2 == 0, conversation
                for i, message in enumerate(conversation):
                    assert set(message) == {"role", "content"}
                    assert message["role"] == ("user" if i % 2 == 0 else "assistant"), conversation
                    assert message["content"].strip() and message["content"][-1] in ".?", message


def test_base_has_prose_and_chats_and_heldout_states_every_fact_once(world: WorldText) -> None:
    base = world.base
    entities = {e for e, _, _ in base.facts}
    relations = len(_DOMAINS["base"])
    assert len(base.train.documents) >= 3 * len(entities)
    assert len(base.train.conversations) >= 2 * len(entities)
    for doc in base.train.documents:
        assert 3 <= len(re.split(r"(?<=\.)\s+", doc)) <= 5, doc
    heldout = base.heldout
    sentences = {entity: 0 for entity in entities}
    for doc in heldout.documents:
        (entity,) = [e for e in entities if re.search(rf"\b{e}\b", doc)]
        sentences[entity] += len(re.split(r"(?<=\.)\s+", doc))
    questions = {entity: 0 for entity in entities}
    for chat in heldout.conversations:
        (entity,) = [e for e in entities if re.search(rf"\b{e}\b", chat[0]["content"])]
        questions[entity] += len(chat) // 2
    assert set(sentences.values()) == {relations}
    assert set(questions.values()) == {relations}


def test_stages_are_chat_only(world: WorldText) -> None:
    for stage in world.stages:
        assert stage.train.documents == () and stage.heldout.documents == ()
        assert len(stage.train.conversations) >= 6 * 24


def test_sizes_at_defaults(world: WorldText) -> None:
    assert 2_000_000 <= _chars(world.base.train) <= 3_000_000
    # Every fact of every base entity once in held-out documents and once in held-out chats.
    assert 100_000 <= _chars(world.base.heldout) <= 200_000
    for stage in world.stages:
        assert 30_000 <= _chars(stage.train) <= 80_000, stage.name
        assert 5_000 <= _chars(stage.heldout) <= 20_000, stage.name


def test_familiar_domains_add_other_entities_of_every_stage_domain_to_the_base_only() -> None:
    plain = generate_world_text(seed=3, num_stages=1)
    familiar = generate_world_text(seed=3, num_stages=1, familiar_entities=4)
    # The base keeps every text it had (and its held-out probe), the stage keeps its facts.
    assert familiar.base.heldout == plain.base.heldout and familiar.base.facts == plain.base.facts
    assert familiar.base.train.documents == plain.base.train.documents
    before = {json.dumps(chat) for chat in plain.base.train.conversations}
    assert before <= {json.dumps(chat) for chat in familiar.base.train.conversations}
    assert familiar.stages[0].facts == plain.stages[0].facts
    added = [c for c in familiar.base.train.conversations if json.dumps(c) not in before]
    assert added
    stage_names = {entity for entity, _, _ in familiar.stages[0].facts}
    text = " ".join(m["content"] for chat in added for m in chat)
    # Words of every stage domain, none of the stage's own entities.
    for domain in STAGE_DOMAINS:
        assert any(word in text for rel in _DOMAINS[domain] for word in rel.values), domain
    assert not any(name in text for name in stage_names)
    # Each held-out stage chat asks all of an entity's facts, more exchanges than any train chat.
    longest_train = max(len(chat) for chat in familiar.stages[0].train.conversations)
    assert all(len(chat) > longest_train for chat in familiar.stages[0].heldout.conversations)
