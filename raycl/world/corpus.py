"""Text of a synthetic "offline world" for continual-learning experiments.

The world has a **base** domain -- an encyclopedia of invented towns that
tiny base models are pretrained on -- and several **stage** domains
(astronomy, cuisine, ...) whose topic vocabulary, entities and facts the base
model never saw.  Continual fine-tuning on the stages is knowledge acquisition,
and it competes with the base domain, so forgetting can be measured.

Every domain is a table of relations (``domains.yaml``).  A relation has a
pool of plausible English values and two disjoint sets of templates: *train*
phrasings and *held-out* phrasings, each for questions and for statements (a
statement is both a prose sentence and an assistant answer, so facts read in
prose are stated the same way in chat).  Every invented entity gets one value
per relation; these (entity, relation, value) triples are the domain's facts.
A relation may depend on an earlier one (a town's climate on its region, its
crop on its climate): it then usually takes the typical value, so part of the
facts can be inferred rather than memorised.

Train and held-out splits carry the **same facts in other words**: the train
split teaches every fact with train phrasings only, and the held-out split
states every fact once with held-out phrasings only.  Held-out loss then
measures whether a model knows the facts rather than whether it memorised
particular sentences.

The base domain is built so that a ladder of base models behaves like one:
held-out loss keeps falling with model size and with pretraining tokens.  It
has a dozen relations per town, some of them learnable regularities, and
town popularity is Zipfian: popular towns are written about many times, rare
ones a few times (each fact still at least ten), so small or briefly trained
models know the popular towns and bigger or longer trained ones know more of
the tail.  Its train split has prose documents (3-5 facts of a town each,
shuffled; every round of documents states all of a town's facts with varied
phrasing) and chats of one or two questions, so that the chat format is
already familiar before the first stage: a stage then teaches new facts, not
a new format.  The base held-out split is the retention probe, and unlike the
stages it is held out from the *pretraining distribution*: per town, every
fact once in new documents (six sentences each, in a fresh order) and once in
new chats (three questions each), both in train phrasings and each shorter
than 128 tokens.  Probing the base model with unseen phrasings instead would
measure its (poor) paraphrase generalisation, which any update, however
small, happens to improve: forgetting would read negative.  Stage splits are
chats only, 1-3 exchanges about one entity each, and every stage fact is
asked in several train chats.

A world may also make the stages' **domains familiar** without their facts:
``familiar_entities`` further entities of every stage domain, none of them a
stage's own, are described in the base train split (chats in both train and
held-out phrasings).  The base model then knows how astronomy or cuisine is
talked about, as a real pretrained model does, and a stage teaches new facts
in familiar words: its loss starts below a uniform guess, and learning it
disturbs the base less.  With none (the default) the base is unchanged.

All randomness comes from ``random.Random`` instances seeded from ``seed``, so
the same seed always yields the same world, and a world with fewer stages is
a prefix of one with more.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

Message = dict[str, str]  # {"role": "user" | "assistant", "content": str}
Conversation = list[Message]


@dataclass(frozen=True)
class Split:
    documents: tuple[str, ...]  # plain prose documents
    conversations: tuple[Conversation, ...]  # user/assistant alternating, user first


@dataclass(frozen=True)
class Domain:
    name: str
    facts: tuple[tuple[str, str, str], ...]  # (entity, relation, value)
    train: Split
    heldout: Split


@dataclass(frozen=True)
class WorldText:
    base: Domain
    stages: tuple[Domain, ...]


@dataclass(frozen=True)
class _Relation:
    """A relation, its value pool and its phrasings.

    Templates use ``{e}`` for the entity name and ``{v}`` for the value; the
    first letter of a rendered sentence is capitalised.  A relation ``given``
    another takes ``typical[that relation's value]`` with probability
    ``_TYPICAL_SHARE``, else any value of its pool.
    """

    name: str
    values: tuple[str, ...]
    train_questions: tuple[str, ...]
    train_statements: tuple[str, ...]
    heldout_questions: tuple[str, ...]
    heldout_statements: tuple[str, ...]
    given: str | None = None
    typical: dict[str, str] = field(default_factory=dict)

    def phrasings(self, heldout: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if heldout:
            return self.heldout_questions, self.heldout_statements
        return self.train_questions, self.train_statements


def parse_domains(table: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[_Relation, ...]]:
    """The relations of each domain from the raw table of ``domains.yaml``, checked."""
    domains = {}
    for domain, rows in table.items():
        relations: list[_Relation] = []
        for row in rows:
            texts = {key: tuple(row[key]) for key in row if key not in ("name", "given", "typical")}
            relation = _Relation(name=row["name"], **texts, given=row.get("given"), typical=row.get("typical", {}))
            earlier = {r.name: r for r in relations}
            if relation.given is not None:
                if relation.given not in earlier:
                    raise ValueError(f"{domain}/{relation.name}: given {relation.given!r} is not an earlier relation")
                if set(relation.typical) != set(earlier[relation.given].values):
                    raise ValueError(f"{domain}/{relation.name}: typical must map every value of {relation.given!r}")
                if not set(relation.typical.values()) <= set(relation.values):
                    raise ValueError(f"{domain}/{relation.name}: a typical value is not in its values")
            relations.append(relation)
        domains[domain] = tuple(relations)
    return domains


# Domain name -> relations.  "base" is the pretraining domain; the others are
# stage domains, in the order stages use them.
_DOMAINS: dict[str, tuple[_Relation, ...]] = parse_domains(
    yaml.safe_load(resources.files("raycl.world").joinpath("domains.yaml").read_text())
)
STAGE_DOMAINS: tuple[str, ...] = tuple(name for name in _DOMAINS if name != "base")

# Entity names are 2-3 of these syllables, capitalised.
_SYLLABLES = (
    "ba",
    "ko",
    "ri",
    "sa",
    "mel",
    "tu",
    "ven",
    "do",
    "li",
    "nar",
    "po",
    "ste",
    "gu",
    "fen",
    "zo",
    "ra",
    "thi",
    "mo",
    "kal",
    "ne",
    "dor",
    "an",
    "dre",
    "vi",
)
_MAX_ENTITIES = 4000  # far below the ~14k names the syllables allow, so sampling stays fast

# Every lowercase word of the tables: entity names must not collide with them.
_VOCABULARY = frozenset(
    word
    for relations in _DOMAINS.values()
    for rel in relations
    for texts in (rel.values, *rel.phrasings(heldout=False), *rel.phrasings(heldout=True))
    for text in texts
    for word in re.findall(r"[a-z]+", text.lower())
)

# Repetition counts, tuned for the text sizes at the defaults (see the tests).
# The base train split is large enough (~1M tokens) that the largest rung at the largest budget
# sees it ~10 times: at 21 times (half the text) its held-out loss rose as it began to memorise.
_BASE_DOC_ROUNDS = (6, 20)  # (least, extra on average) rounds of train documents per base entity
_BASE_CHAT_ROUNDS = (4, 6)  # the same for base train chats
_BASE_DOC_SENTENCES = (3, 5)  # facts per base train document, least and most
_HELDOUT_DOC_SENTENCES = 6  # facts per base held-out document: never the size of a train document
_BASE_EXCHANGES = 2  # most questions per base train chat
_HELDOUT_EXCHANGES = 3  # questions per base held-out chat: more than any train chat asks
_ZIPF_EXPONENT = 0.8  # popularity of the k-th base entity ~ k^-0.8
_TYPICAL_SHARE = 0.75  # how often a dependent relation takes its typical value
_STAGE_CHAT_ROUNDS = 5  # each stage fact is asked in this many train chats
_MAX_EXCHANGES = 3  # user/assistant exchanges per chat, from 1 up to this
_FAMILIAR_CHAT_ROUNDS = 2  # rounds of chats per familiar entity, in each of its two phrasing sets

_Pairs = list[tuple[_Relation, str]]  # one entity's facts as (relation, value)
_Orders = dict[str, tuple[list[str], list[str]]]  # relation name -> (questions, statements)


def generate_world_text(
    seed: int = 0, num_stages: int = 3, base_entities: int = 120, stage_entities: int = 24, familiar_entities: int = 0
) -> WorldText:
    """Generate the base domain (with ``familiar_entities`` of every stage domain) and the first ``num_stages``
    stage domains."""
    if not 0 <= num_stages <= len(STAGE_DOMAINS):
        raise ValueError(
            f"num_stages must be between 0 and {len(STAGE_DOMAINS)}, the number of stage domains "
            f"({', '.join(STAGE_DOMAINS)}); got {num_stages}."
        )
    if base_entities < 1 or stage_entities < 1 or familiar_entities < 0:
        raise ValueError("base_entities and stage_entities must be at least 1, familiar_entities at least 0.")
    # Names are drawn for every stage domain, used or not, so that a world with
    # fewer stages is a prefix of one with more.
    # Familiar entities take the names after all others, so the rest of the world does not depend on them.
    total = base_entities + len(STAGE_DOMAINS) * (stage_entities + familiar_entities)
    if total > _MAX_ENTITIES:
        raise ValueError(f"The world would need {total} entity names; at most {_MAX_ENTITIES} are supported.")
    names = _entity_names(random.Random(seed), total)
    base = _base_domain(random.Random(f"{seed}/base"), names[:base_entities])
    if familiar_entities:
        familiar = names[total - len(STAGE_DOMAINS) * familiar_entities :]
        base = _with_familiar_domains(random.Random(f"{seed}/familiar"), base, familiar, familiar_entities)
    stages = []
    for i, domain in enumerate(STAGE_DOMAINS[:num_stages]):
        start = base_entities + i * stage_entities
        domain_names = names[start : start + stage_entities]
        stages.append(_stage_domain(random.Random(f"{seed}/{domain}"), domain, domain_names, familiar_entities > 0))
    return WorldText(base=base, stages=tuple(stages))


def _entity_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
        if name not in seen and name not in _VOCABULARY:
            seen.add(name)
            names.append(name.capitalize())
    return names


def _assign_facts(rng: random.Random, domain: str, names: list[str]) -> dict[str, _Pairs]:
    facts = {}
    for name in names:
        values: dict[str, str] = {}
        for rel in _DOMAINS[domain]:
            if rel.given is not None and rng.random() < _TYPICAL_SHARE:
                values[rel.name] = rel.typical[values[rel.given]]
            else:
                values[rel.name] = rng.choice(rel.values)
        facts[name] = [(rel, values[rel.name]) for rel in _DOMAINS[domain]]
    return facts


def popularity(count: int, exponent: float = _ZIPF_EXPONENT) -> list[float]:
    """Zipfian weights of ``count`` entities (the k-th ~ k^-exponent), scaled to a mean of 1."""
    weights = [(k + 1) ** -exponent for k in range(count)]
    return [w * count / sum(weights) for w in weights]


def partition(rng: random.Random, count: int, least: int, most: int) -> list[int]:
    """Random sizes between ``least`` and ``most`` that sum to ``count`` (one size if ``count < least``)."""
    sizes = []
    while count > most:
        size = rng.randint(least, min(most, count - least))
        sizes.append(size)
        count -= size
    return [*sizes, count]


def _fact_triples(facts: dict[str, _Pairs]) -> tuple[tuple[str, str, str], ...]:
    return tuple((name, rel.name, value) for name, pairs in facts.items() for rel, value in pairs)


def _render(template: str, entity: str, value: str) -> str:
    text = template.format(e=entity, v=value)
    return text[0].upper() + text[1:]


def _chunks(items: _Pairs, rng: random.Random, most: int) -> list[_Pairs]:
    """Split ``items`` into consecutive chunks of 1 to ``most`` items."""
    chunks = []
    while items:
        size = rng.randint(1, most)
        chunks.append(items[:size])
        items = items[size:]
    return chunks


def _phrasing_orders(rng: random.Random, pairs: _Pairs, heldout: bool) -> _Orders:
    """Each relation's question and statement templates in a random order.

    The k-th use of a fact takes the k-th template of its order (cyclically),
    so a fact repeated in several texts is phrased differently each time.
    """
    orders = {}
    for rel, _ in pairs:
        questions, statements = rel.phrasings(heldout)
        orders[rel.name] = (rng.sample(questions, len(questions)), rng.sample(statements, len(statements)))
    return orders


def _conversation(entity: str, pairs: _Pairs, orders: _Orders, k: int) -> Conversation:
    """One chat asking each fact in ``pairs`` in turn, with the k-th phrasings."""
    conversation: Conversation = []
    for rel, value in pairs:
        questions, statements = orders[rel.name]
        question = _render(questions[k % len(questions)], entity, value)
        answer = _render(statements[k % len(statements)], entity, value)
        conversation += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return conversation


def _conversations(
    rng: random.Random, entity: str, pairs: _Pairs, orders: _Orders, rounds: int, most: int = _MAX_EXCHANGES
) -> list[Conversation]:
    """Chats about one entity with 1 to ``most`` exchanges; each round asks every fact once."""
    return [
        _conversation(entity, chunk, orders, k)
        for k in range(rounds)
        for chunk in _chunks(rng.sample(pairs, len(pairs)), rng, most)
    ]


def _document(rng: random.Random, entity: str, pairs: _Pairs, orders: _Orders, k: int) -> str:
    """One sentence per fact, in random order, each using the k-th statement phrasing."""
    sentences = []
    for rel, value in pairs:
        statements = orders[rel.name][1]
        sentences.append(_render(statements[k % len(statements)], entity, value))
    rng.shuffle(sentences)
    return " ".join(sentences)


def _documents(
    rng: random.Random, entity: str, pairs: _Pairs, orders: _Orders, k: int, sizes: tuple[int, int]
) -> list[str]:
    """One round of documents: every fact once, shuffled, ``sizes`` (least, most) facts a document."""
    shuffled = rng.sample(pairs, len(pairs))
    documents = []
    for size in partition(rng, len(shuffled), *sizes):
        documents.append(_document(rng, entity, shuffled[:size], orders, k))
        shuffled = shuffled[size:]
    return documents


def _base_domain(rng: random.Random, names: list[str]) -> Domain:
    facts = _assign_facts(rng, "base", names)
    train_docs, train_chats, heldout_docs, heldout_chats = [], [], [], []
    for (entity, pairs), weight in zip(facts.items(), popularity(len(names))):
        doc_rounds = _BASE_DOC_ROUNDS[0] + round(_BASE_DOC_ROUNDS[1] * weight)
        chat_rounds = _BASE_CHAT_ROUNDS[0] + round(_BASE_CHAT_ROUNDS[1] * weight)
        orders = _phrasing_orders(rng, pairs, heldout=False)
        for k in range(doc_rounds):
            train_docs += _documents(rng, entity, pairs, orders, k, _BASE_DOC_SENTENCES)
        train_chats += _conversations(rng, entity, pairs, orders, chat_rounds, _BASE_EXCHANGES)
        # Held-out: new texts from the pretraining distribution itself (train phrasings), so the
        # probe measures retention of what pretraining taught.  Their sizes differ from every train
        # text's, so none can coincide with one.
        size = _HELDOUT_DOC_SENTENCES
        heldout_docs += _documents(rng, entity, pairs, orders, doc_rounds, (size, size))
        shuffled = rng.sample(pairs, len(pairs))
        for start in range(0, len(shuffled), _HELDOUT_EXCHANGES):
            chunk = shuffled[start : start + _HELDOUT_EXCHANGES]
            heldout_chats.append(_conversation(entity, chunk, orders, chat_rounds))
    for texts in (train_docs, train_chats, heldout_docs, heldout_chats):
        rng.shuffle(texts)
    return Domain(
        name="base",
        facts=_fact_triples(facts),
        train=Split(documents=tuple(train_docs), conversations=tuple(train_chats)),
        heldout=Split(documents=tuple(heldout_docs), conversations=tuple(heldout_chats)),
    )


def _with_familiar_domains(rng: random.Random, base: Domain, names: list[str], per_domain: int) -> Domain:
    """``base`` with chats about ``per_domain`` entities of every stage domain added to its train split, in train
    and held-out phrasings: the words and phrasings of every domain, but none of a stage's facts."""
    chats = list(base.train.conversations)
    for i, domain in enumerate(STAGE_DOMAINS):
        facts = _assign_facts(rng, domain, names[i * per_domain : (i + 1) * per_domain])
        for entity, pairs in facts.items():
            for heldout in (False, True):
                orders = _phrasing_orders(rng, pairs, heldout=heldout)
                chats += _conversations(rng, entity, pairs, orders, _FAMILIAR_CHAT_ROUNDS)
    rng.shuffle(chats)
    return Domain(
        name=base.name,
        facts=base.facts,
        train=Split(documents=base.train.documents, conversations=tuple(chats)),
        heldout=base.heldout,
    )


def _stage_domain(rng: random.Random, domain: str, names: list[str], familiar: bool = False) -> Domain:
    """A stage's chats. Its held-out split asks every fact once in held-out phrasings; where the base model knows
    the domain (``familiar``) it read those phrasings in pretraining, so instead each held-out chat asks all of an
    entity's facts in train phrasings, in a fresh order: more exchanges than any train chat, so none coincides."""
    facts = _assign_facts(rng, domain, names)
    train_chats, heldout_chats = [], []
    for entity, pairs in facts.items():
        orders = _phrasing_orders(rng, pairs, heldout=False)
        train_chats += _conversations(rng, entity, pairs, orders, _STAGE_CHAT_ROUNDS)
        if familiar:
            heldout_chats.append(_conversation(entity, rng.sample(pairs, len(pairs)), orders, _STAGE_CHAT_ROUNDS))
            continue
        orders = _phrasing_orders(rng, pairs, heldout=True)
        heldout_chats += _conversations(rng, entity, pairs, orders, 1)
    rng.shuffle(train_chats)
    rng.shuffle(heldout_chats)
    return Domain(
        name=domain,
        facts=_fact_triples(facts),
        train=Split(documents=(), conversations=tuple(train_chats)),
        heldout=Split(documents=(), conversations=tuple(heldout_chats)),
    )
