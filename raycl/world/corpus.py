"""Text of a synthetic "offline world" for continual-learning experiments.

The world has a **base** domain -- a small encyclopedia of invented towns that
tiny base models are pretrained on -- and several **stage** domains
(astronomy, cuisine, ...) whose topic vocabulary, entities and facts the base
model never saw.  Continual fine-tuning on the stages is knowledge acquisition,
and it competes with the base domain, so forgetting can be measured.

Every domain is a table of relations.  A relation has a pool of plausible
English values and two disjoint sets of templates: *train* phrasings and
*held-out* phrasings, each for questions and for statements (a statement is
both a prose sentence and an assistant answer, so facts read in prose are
stated the same way in chat).  Every invented entity gets one value per
relation; these (entity, relation, value) triples are the domain's facts.

Train and held-out splits carry the **same facts in other words**: the train
split teaches every fact with train phrasings only, and the held-out split
states every fact once with held-out phrasings only.  Held-out loss then
measures whether a model knows the facts rather than whether it memorised
particular sentences.

The base train split has prose documents (every fact of an entity, sentences
shuffled, several times with varied phrasing) and also chats, so that the chat
format is already familiar before the first stage: a stage then teaches new
facts, not a new format.  The base held-out split is the retention probe, and
unlike the stages it is held out from the *pretraining distribution*: per
entity one new document (a fresh sentence order) and one chat asking every
fact, both in train phrasings.  Probing the base model with unseen phrasings
instead would measure its (poor) paraphrase generalisation, which any update,
however small, happens to improve: forgetting would read negative.
Stage splits are chats only, 1-3 exchanges about one entity each, and every
stage fact is asked in several train chats.

All randomness comes from ``random.Random`` instances seeded from ``seed``, so
the same seed always yields the same world, and a world with fewer stages is
a prefix of one with more.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

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
    first letter of a rendered sentence is capitalised.
    """

    name: str
    values: tuple[str, ...]
    train_questions: tuple[str, ...]
    train_statements: tuple[str, ...]
    heldout_questions: tuple[str, ...]
    heldout_statements: tuple[str, ...]

    def phrasings(self, heldout: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if heldout:
            return self.heldout_questions, self.heldout_statements
        return self.train_questions, self.train_statements


_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

# Domain name -> relations.  "base" is the pretraining domain; the others are
# stage domains, in the order stages use them.
_DOMAINS: dict[str, tuple[_Relation, ...]] = {
    "base": (  # towns
        _Relation(
            "region",
            values=(
                "north", "south", "east", "west", "far north", "deep south", "hills", "lowlands",
                "highlands", "plains", "marshes", "valleys",
            ),
            train_questions=(
                "Where is {e}?",
                "In which part of the land is {e}?",
                "What region is {e} in?",
            ),
            train_statements=(
                "{e} is a town in the {v}.",
                "The town of {e} lies in the {v}.",
                "{e} can be found in the {v}.",
            ),
            heldout_questions=("Which region holds the town of {e}?", "Tell me where {e} is located."),
            heldout_statements=("You will find {e} in the {v}.", "{e} sits in the {v} of the land."),
        ),
        _Relation(
            "river",
            values=(
                "Amber", "Silver", "Willow", "Cedar", "Grey", "Swift", "Cold", "Red", "Black", "Long",
                "Stone", "Bright",
            ),
            train_questions=(
                "Which river flows through {e}?",
                "What river runs past {e}?",
                "On which river does {e} stand?",
            ),
            train_statements=(
                "The {v} River flows through {e}.",
                "{e} stands on the {v} River.",
                "The town of {e} is built beside the {v} River.",
            ),
            heldout_questions=("Name the river that passes {e}.", "What is the river of {e} called?"),
            heldout_statements=(
                "{e} is a river town on the {v} River.",
                "The river at {e} is the {v} River.",
            ),
        ),
        _Relation(
            "trade",
            values=(
                "wool", "salt", "timber", "fish", "grain", "copper", "glass", "cheese", "pottery",
                "horses", "paper", "honey",
            ),
            train_questions=(
                "What is {e} known for?",
                "What does {e} trade?",
                "What do the people of {e} sell?",
            ),
            train_statements=(
                "{e} is known for its {v}.",
                "The people of {e} trade in {v}.",
                "Merchants come to {e} to buy {v}.",
            ),
            heldout_questions=("What goods come from {e}?", "Which trade made {e} rich?"),
            heldout_statements=("{e} grew rich from {v}.", "The main trade of {e} is {v}."),
        ),
        _Relation(
            "founded in",
            values=(
                "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                "tenth",
            ),
            train_questions=(
                "When was {e} founded?",
                "In which century was {e} founded?",
                "How old is the town of {e}?",
            ),
            train_statements=(
                "{e} was founded in the {v} century.",
                "The town of {e} dates from the {v} century.",
                "The first houses of {e} were built in the {v} century.",
            ),
            heldout_questions=("What century did {e} begin in?", "When did people first settle in {e}?"),
            heldout_statements=(
                "{e} has stood since the {v} century.",
                "People first settled {e} in the {v} century.",
            ),
        ),
        _Relation(
            "founded by",
            values=(
                "Queen Alda", "King Osric", "Lady Maren", "Lord Edwin", "Duke Harold", "Queen Elin",
                "King Roland", "Lady Greta", "Lord Tobias", "Queen Helga",
            ),
            train_questions=("Who founded {e}?", "Who was the founder of {e}?", "Which ruler founded {e}?"),
            train_statements=(
                "{e} was founded by {v}.",
                "{v} founded the town of {e}.",
                "The founder of {e} was {v}.",
            ),
            heldout_questions=(
                "Who built the first walls of {e}?",
                "Whose name is linked to the founding of {e}?",
            ),
            heldout_statements=("{v} built the first walls of {e}.", "{e} owes its founding to {v}."),
        ),
    ),
    "astronomy": (  # planets
        _Relation(
            "orbits",
            values=(
                "Vega", "Sirius", "Rigel", "Altair", "Deneb", "Polaris", "Arcturus", "Capella", "Spica",
                "Antares", "Procyon", "Castor",
            ),
            train_questions=(
                "Which star does {e} orbit?",
                "What star is {e} bound to?",
                "Around which star does {e} travel?",
            ),
            train_statements=(
                "{e} orbits the star {v}.",
                "The planet {e} circles {v}.",
                "{e} travels around {v}.",
            ),
            heldout_questions=("Name the star that {e} goes around.", "What is the home star of {e}?"),
            heldout_statements=("{v} is the home star of {e}.", "{e} moves in a wide path around {v}."),
        ),
        _Relation(
            "color",
            values=("red", "blue", "green", "grey", "white", "golden", "yellow", "violet", "brown", "pink"),
            train_questions=(
                "What color is {e}?",
                "What color does {e} have in a telescope?",
                "How does {e} look in the night sky?",
            ),
            train_statements=(
                "{e} is a {v} planet.",
                "The planet {e} looks {v}.",
                "Through a telescope, {e} appears {v}.",
            ),
            heldout_questions=("Describe the color of {e}.", "Which color would you see on {e}?"),
            heldout_statements=("{e} shines with a {v} light.", "The color of {e} is {v}."),
        ),
        _Relation(
            "moons",
            values=_NUMBERS,
            train_questions=(
                "How many moons does {e} have?",
                "How many moons circle {e}?",
                "What is the number of moons of {e}?",
            ),
            train_statements=(
                "{e} has {v} moons.",
                "There are {v} moons around {e}.",
                "{v} moons circle the planet {e}.",
            ),
            heldout_questions=("Count the moons of {e} for me.", "How many moons travel with {e}?"),
            heldout_statements=("{e} is circled by {v} moons.", "The moons of {e} number {v}."),
        ),
        _Relation(
            "discovered by",
            values=(
                "Ada Crane", "Tom Hale", "Edith Moss", "Hugo Field", "Nora Vance", "Paul Reed",
                "Lena Frost", "Oscar Dell", "Ruth Bell", "Carl Webb",
            ),
            train_questions=(
                "Who discovered {e}?",
                "Which astronomer found {e}?",
                "Who was the first to see {e}?",
            ),
            train_statements=(
                "{e} was discovered by {v}.",
                "The astronomer {v} discovered {e}.",
                "{v} was the first to see {e}.",
            ),
            heldout_questions=("Whose telescope first spotted {e}?", "Who is credited with finding {e}?"),
            heldout_statements=(
                "{v} first spotted {e} through a telescope.",
                "Credit for finding {e} goes to {v}.",
            ),
        ),
        _Relation(
            "surface",
            values=("ice", "rock", "sand", "dust", "lava", "mud", "ash", "water", "snow", "gravel"),
            train_questions=(
                "What is the surface of {e} like?",
                "What covers {e}?",
                "What is {e} covered in?",
            ),
            train_statements=(
                "{e} is covered in {v}.",
                "The surface of {e} is made of {v}.",
                "{v} covers the whole surface of {e}.",
            ),
            heldout_questions=(
                "Describe the ground on {e}.",
                "What would you stand on if you landed on {e}?",
            ),
            heldout_statements=("The ground of {e} is all {v}.", "A lander on {e} would touch {v}."),
        ),
    ),
    "cuisine": (  # dishes
        _Relation(
            "main ingredient",
            values=(
                "rice", "beans", "lamb", "duck", "lentils", "mushrooms", "potatoes", "barley", "pork",
                "chicken", "eggs", "cabbage",
            ),
            train_questions=(
                "What is the main ingredient of {e}?",
                "What is {e} made from?",
                "What goes into {e}?",
            ),
            train_statements=(
                "{e} is made from {v}.",
                "The main ingredient of {e} is {v}.",
                "Cooks make {e} with {v}.",
            ),
            heldout_questions=(
                "Which ingredient is at the heart of {e}?",
                "What food forms the base of {e}?",
            ),
            heldout_statements=("{e} is cooked mainly with {v}.", "{e} is built around {v}."),
        ),
        _Relation(
            "flavor",
            values=("sweet", "sour", "salty", "bitter", "spicy", "smoky", "mild", "tangy", "rich", "nutty"),
            train_questions=(
                "How does {e} taste?",
                "What flavor does {e} have?",
                "What is the taste of {e}?",
            ),
            train_statements=(
                "{e} tastes {v}.",
                "The dish {e} has a {v} flavor.",
                "People say {e} has a {v} taste.",
            ),
            heldout_questions=("Describe the flavor of {e}.", "What would {e} taste like to a new guest?"),
            heldout_statements=("A bite of {e} is {v}.", "The flavor of {e} is {v}."),
        ),
        _Relation(
            "cooked",
            values=(
                "baked", "fried", "boiled", "steamed", "grilled", "roasted", "stewed", "smoked", "braised",
                "poached",
            ),
            train_questions=(
                "How is {e} cooked?",
                "How do cooks prepare {e}?",
                "What is the cooking method for {e}?",
            ),
            train_statements=("{e} is always {v}.", "Cooks serve {e} {v}.", "{e} is a {v} dish."),
            heldout_questions=("Tell me how {e} gets cooked.", "In what way is {e} made ready to eat?"),
            heldout_statements=("{e} comes to the table {v}.", "{e} is only ever eaten {v}."),
        ),
        _Relation(
            "served with",
            values=(
                "flatbread", "pickles", "yogurt", "green salad", "dumplings", "mint tea", "cider",
                "chutney", "olives", "crackers",
            ),
            train_questions=(
                "What is {e} served with?",
                "What do people eat with {e}?",
                "What goes well with {e}?",
            ),
            train_statements=(
                "{e} is served with {v}.",
                "People eat {e} with {v}.",
                "{e} goes well with {v}.",
            ),
            heldout_questions=("What side is placed next to {e}?", "Which side dish comes with {e}?"),
            heldout_statements=(
                "A plate of {e} comes with {v} on the side.",
                "{e} arrives with a side of {v}.",
            ),
        ),
        _Relation(
            "eaten at",
            values=(
                "breakfast", "lunch", "dinner", "supper", "weddings", "festivals", "birthdays", "picnics",
                "feasts",
            ),
            train_questions=(
                "When is {e} eaten?",
                "When do people eat {e}?",
                "On what occasion is {e} served?",
            ),
            train_statements=("{e} is eaten at {v}.", "People enjoy {e} at {v}.", "{e} is a dish for {v}."),
            heldout_questions=(
                "When would a family cook {e}?",
                "At which time is {e} usually on the table?",
            ),
            heldout_statements=("Families cook {e} for {v}.", "{e} appears on the table at {v}."),
        ),
    ),
    "zoology": (  # animals
        _Relation(
            "habitat",
            values=(
                "forests", "deserts", "caves", "swamps", "lakes", "mountains", "grasslands", "reefs",
                "jungles", "meadows",
            ),
            train_questions=(
                "Where does {e} live?",
                "What is the habitat of {e}?",
                "Where can you find {e}?",
            ),
            train_statements=(
                "{e} lives in {v}.",
                "The animal {e} makes its home in {v}.",
                "{e} is found in {v}.",
            ),
            heldout_questions=("In what kind of place does {e} dwell?", "Which places does {e} call home?"),
            heldout_statements=("{e} dwells in {v}.", "Home for {e} is in {v}."),
        ),
        _Relation(
            "diet",
            values=(
                "insects", "seeds", "fruit", "leaves", "roots", "grass", "worms", "berries", "nuts",
                "snails",
            ),
            train_questions=("What does {e} eat?", "What is the diet of {e}?", "What does {e} feed on?"),
            train_statements=("{e} eats {v}.", "{e} feeds on {v}.", "The diet of {e} is mostly {v}."),
            heldout_questions=("Which food keeps {e} alive?", "What would you feed {e}?"),
            heldout_statements=("{e} survives on {v}.", "{e} lives on a diet of {v}."),
        ),
        _Relation(
            "coat",
            values=("striped", "spotted", "plain", "speckled", "banded", "dappled", "patched", "ringed"),
            train_questions=(
                "What does the coat of {e} look like?",
                "What pattern does {e} have?",
                "What markings does {e} have?",
            ),
            train_statements=("{e} has a {v} coat.", "The coat of {e} is {v}.", "{e} is a {v} animal."),
            heldout_questions=("Describe the markings on {e}.", "How would you know {e} by its coat?"),
            heldout_statements=("The fur of {e} is {v}.", "{e} wears a {v} pattern."),
        ),
        _Relation(
            "call",
            values=("hum", "hiss", "bark", "whistle", "growl", "chirp", "croak", "howl", "click", "squeak"),
            train_questions=(
                "What sound does {e} make?",
                "How does {e} call?",
                "What noise does {e} make?",
            ),
            train_statements=(
                "The call of {e} is a {v}.",
                "{e} calls with a {v}.",
                "{e} gives a loud {v}.",
            ),
            heldout_questions=(
                "What would you hear from {e} at dusk?",
                "How can you tell that {e} is near?",
            ),
            heldout_statements=("You can tell {e} is near by its {v}.", "At dusk {e} lets out a {v}."),
        ),
        _Relation(
            "lifespan",
            values=_NUMBERS,
            train_questions=(
                "How long does {e} live?",
                "What is the lifespan of {e}?",
                "How many years does {e} live?",
            ),
            train_statements=(
                "{e} lives for {v} years.",
                "The lifespan of {e} is {v} years.",
                "{e} can live {v} years.",
            ),
            heldout_questions=("For how many years can {e} survive?", "What age can {e} reach?"),
            heldout_statements=("{e} may reach {v} years of age.", "An old {e} has seen {v} summers."),
        ),
    ),
    "machinery": (  # machines
        _Relation(
            "power",
            values=(
                "steam", "wind", "coal", "oil", "sunlight", "springs", "water wheels", "pedals", "gas",
                "tides",
            ),
            train_questions=(
                "What powers {e}?",
                "What does {e} run on?",
                "What is the power source of {e}?",
            ),
            train_statements=(
                "{e} is powered by {v}.",
                "{e} runs on {v}.",
                "The power for {e} comes from {v}.",
            ),
            heldout_questions=("Which kind of power drives {e}?", "What makes {e} move?"),
            heldout_statements=("{e} is driven by {v}.", "{e} takes its power from {v}."),
        ),
        _Relation(
            "used for",
            values=(
                "lifting stone", "pumping water", "weaving cloth", "grinding grain", "cutting wood",
                "printing books", "drilling wells", "sorting letters", "spinning thread",
                "washing clothes",
            ),
            train_questions=("What is {e} used for?", "What job does {e} do?", "What does {e} help with?"),
            train_statements=("{e} is used for {v}.", "The job of {e} is {v}.", "Workers use {e} for {v}."),
            heldout_questions=("Why would a workshop buy {e}?", "What task was {e} built for?"),
            heldout_statements=("{e} was built for {v}.", "A workshop buys {e} for {v}."),
        ),
        _Relation(
            "material",
            values=("iron", "brass", "steel", "oak", "bronze", "tin", "pine", "nickel", "zinc", "walnut"),
            train_questions=(
                "What is {e} made of?",
                "What material is {e} built from?",
                "What metal or wood is {e} made of?",
            ),
            train_statements=(
                "{e} is made of {v}.",
                "The frame of {e} is {v}.",
                "Builders make {e} out of {v}.",
            ),
            heldout_questions=(
                "From which material is the body of {e} formed?",
                "What is the body of {e} built from?",
            ),
            heldout_statements=("The body of {e} is formed from {v}.", "{e} has a body of solid {v}."),
        ),
        _Relation(
            "invented by",
            values=(
                "Felix Marsh", "Greta Pike", "Hans Ridley", "Ivy Colton", "Jonas Keel", "Mabel Thorne",
                "Otto Brandt", "Rosa Wheeler", "Simon Gale", "Vera Lock",
            ),
            train_questions=(
                "Who invented {e}?",
                "Who built the first {e}?",
                "Which engineer designed {e}?",
            ),
            train_statements=(
                "{e} was invented by {v}.",
                "The engineer {v} designed {e}.",
                "{v} built the first {e}.",
            ),
            heldout_questions=("Whose workshop produced the first {e}?", "Who is the inventor of {e}?"),
            heldout_statements=(
                "The inventor of {e} was {v}.",
                "The first {e} came from the workshop of {v}.",
            ),
        ),
        _Relation(
            "gears",
            values=_NUMBERS,
            train_questions=(
                "How many gears does {e} have?",
                "How many gears turn inside {e}?",
                "What is the gear count of {e}?",
            ),
            train_statements=(
                "{e} has {v} gears.",
                "Inside {e} there are {v} gears.",
                "{v} gears turn inside {e}.",
            ),
            heldout_questions=("Count the gears in {e} for me.", "How many toothed wheels does {e} hold?"),
            heldout_statements=("{e} holds {v} toothed wheels.", "The gear count of {e} is {v}."),
        ),
    ),
    "music": (  # instruments
        _Relation(
            "family",
            values=("string", "wind", "brass", "percussion", "keyboard", "reed", "bell", "drum"),
            train_questions=(
                "What kind of instrument is {e}?",
                "Which family does {e} belong to?",
                "What type of instrument is {e}?",
            ),
            train_statements=(
                "{e} is a {v} instrument.",
                "{e} belongs to the {v} family.",
                "Musicians call {e} a {v} instrument.",
            ),
            heldout_questions=(
                "In which group of instruments would you place {e}?",
                "How would you class {e}?",
            ),
            heldout_statements=(
                "{e} is grouped with the {v} instruments.",
                "Players list {e} among the {v} instruments.",
            ),
        ),
        _Relation(
            "tone",
            values=(
                "bright", "soft", "deep", "warm", "sharp", "hollow", "gentle", "loud", "clear", "buzzing",
            ),
            train_questions=(
                "What does {e} sound like?",
                "What is the tone of {e}?",
                "How does {e} sound?",
            ),
            train_statements=("{e} has a {v} tone.", "{e} sounds {v}.", "The sound of {e} is {v}."),
            heldout_questions=("Describe the voice of {e}.", "What would a listener hear from {e}?"),
            heldout_statements=("The voice of {e} is {v}.", "A listener hears a {v} sound from {e}."),
        ),
        _Relation(
            "made from",
            values=(
                "bamboo", "spruce", "maple", "clay", "bone", "horn", "shell", "silver", "ebony", "gourd",
            ),
            train_questions=(
                "What material is used to build {e}?",
                "What is {e} carved from?",
                "What is the body of {e} made of?",
            ),
            train_statements=(
                "{e} is carved from {v}.",
                "The body of {e} is made of {v}.",
                "Makers build {e} from {v}.",
            ),
            heldout_questions=("Which material gives {e} its shape?", "Out of what is {e} crafted?"),
            heldout_statements=("{e} is crafted out of {v}.", "Craftsmen shape {e} from {v}."),
        ),
        _Relation(
            "played with",
            values=(
                "the fingers", "a bow", "sticks", "mallets", "the lips", "the hands", "the thumbs",
                "a pick", "a feather", "a hammer",
            ),
            train_questions=("How do you play {e}?", "What is {e} played with?", "How is {e} played?"),
            train_statements=(
                "{e} is played with {v}.",
                "Musicians play {e} with {v}.",
                "To play {e}, you use {v}.",
            ),
            heldout_questions=(
                "What does a player need to make {e} sound?",
                "Which tool or body part makes {e} sing?",
            ),
            heldout_statements=("A player makes {e} sing with {v}.", "{e} needs {v} to make a sound."),
        ),
        _Relation(
            "made famous by",
            values=(
                "Clara Voss", "Elias Grant", "Fiona Lark", "Hugo Wren", "Iris Hart", "Leon Dale",
                "Mira Quill", "Noel Finch", "Sara Lund", "Theo Swan",
            ),
            train_questions=(
                "Who made {e} famous?",
                "Which musician is known for playing {e}?",
                "Who is the most famous player of {e}?",
            ),
            train_statements=(
                "{e} was made famous by {v}.",
                "The musician {v} made {e} famous.",
                "The most famous player of {e} is {v}.",
            ),
            heldout_questions=("Whose playing brought fame to {e}?", "Name the star player of {e}."),
            heldout_statements=("{v} brought fame to {e}.", "The best known player of {e} is {v}."),
        ),
    ),
}

STAGE_DOMAINS: tuple[str, ...] = tuple(name for name in _DOMAINS if name != "base")

# Entity names are 2-3 of these syllables, capitalised.
_SYLLABLES = (
    "ba", "ko", "ri", "sa", "mel", "tu", "ven", "do", "li", "nar", "po", "ste",
    "gu", "fen", "zo", "ra", "thi", "mo", "kal", "ne", "dor", "an", "dre", "vi",
)
_MAX_ENTITIES = 2000  # far below the ~14k names the syllables allow, so sampling stays fast

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
_BASE_DOCS_PER_ENTITY = 4  # train documents per base entity, each stating all its facts
_BASE_CHAT_ROUNDS = 2  # each base fact is asked in this many train chats
_STAGE_CHAT_ROUNDS = 5  # each stage fact is asked in this many train chats
_MAX_EXCHANGES = 3  # user/assistant exchanges per chat, from 1 up to this

_Pairs = list[tuple[_Relation, str]]  # one entity's facts as (relation, value)
_Orders = dict[str, tuple[list[str], list[str]]]  # relation name -> (questions, statements)


def generate_world_text(
    seed: int = 0, num_stages: int = 3, base_entities: int = 120, stage_entities: int = 24
) -> WorldText:
    """Generate the base domain and the first ``num_stages`` stage domains."""
    if not 0 <= num_stages <= len(STAGE_DOMAINS):
        raise ValueError(
            f"num_stages must be between 0 and {len(STAGE_DOMAINS)}, the number of stage domains "
            f"({', '.join(STAGE_DOMAINS)}); got {num_stages}."
        )
    if base_entities < 1 or stage_entities < 1:
        raise ValueError("base_entities and stage_entities must both be at least 1.")
    # Names are drawn for every stage domain, used or not, so that a world with
    # fewer stages is a prefix of one with more.
    total = base_entities + len(STAGE_DOMAINS) * stage_entities
    if total > _MAX_ENTITIES:
        raise ValueError(f"The world would need {total} entity names; at most {_MAX_ENTITIES} are supported.")
    names = _entity_names(random.Random(seed), total)
    base = _base_domain(random.Random(f"{seed}/base"), names[:base_entities])
    stages = []
    for i, domain in enumerate(STAGE_DOMAINS[:num_stages]):
        start = base_entities + i * stage_entities
        domain_names = names[start : start + stage_entities]
        stages.append(_stage_domain(random.Random(f"{seed}/{domain}"), domain, domain_names))
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
    return {name: [(rel, rng.choice(rel.values)) for rel in _DOMAINS[domain]] for name in names}


def _fact_triples(facts: dict[str, _Pairs]) -> tuple[tuple[str, str, str], ...]:
    return tuple((name, rel.name, value) for name, pairs in facts.items() for rel, value in pairs)


def _render(template: str, entity: str, value: str) -> str:
    text = template.format(e=entity, v=value)
    return text[0].upper() + text[1:]


def _chunks(items: _Pairs, rng: random.Random) -> list[_Pairs]:
    """Split ``items`` into consecutive chunks of 1 to ``_MAX_EXCHANGES`` items."""
    chunks = []
    while items:
        size = rng.randint(1, _MAX_EXCHANGES)
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
    rng: random.Random, entity: str, pairs: _Pairs, orders: _Orders, rounds: int
) -> list[Conversation]:
    """Chats about one entity with 1 to ``_MAX_EXCHANGES`` exchanges; each round asks every fact once."""
    return [
        _conversation(entity, chunk, orders, k)
        for k in range(rounds)
        for chunk in _chunks(rng.sample(pairs, len(pairs)), rng)
    ]


def _document(rng: random.Random, entity: str, pairs: _Pairs, orders: _Orders, k: int) -> str:
    """One sentence per fact, in random order, each using the k-th statement phrasing."""
    sentences = []
    for rel, value in pairs:
        statements = orders[rel.name][1]
        sentences.append(_render(statements[k % len(statements)], entity, value))
    rng.shuffle(sentences)
    return " ".join(sentences)


def _base_domain(rng: random.Random, names: list[str]) -> Domain:
    facts = _assign_facts(rng, "base", names)
    train_docs, train_chats, heldout_docs, heldout_chats = [], [], [], []
    for entity, pairs in facts.items():
        orders = _phrasing_orders(rng, pairs, heldout=False)
        train_docs += [_document(rng, entity, pairs, orders, k) for k in range(_BASE_DOCS_PER_ENTITY)]
        train_chats += _conversations(rng, entity, pairs, orders, _BASE_CHAT_ROUNDS)
        # Held-out: new texts from the pretraining distribution itself (train phrasings), so the
        # probe measures retention of what pretraining taught: a fresh sentence order, and one chat
        # asking every fact, longer than any train chat.
        heldout_docs.append(_document(rng, entity, pairs, orders, _BASE_DOCS_PER_ENTITY))
        heldout_chats.append(_conversation(entity, rng.sample(pairs, len(pairs)), orders, _BASE_DOCS_PER_ENTITY))
    for texts in (train_docs, train_chats, heldout_docs, heldout_chats):
        rng.shuffle(texts)
    return Domain(
        name="base",
        facts=_fact_triples(facts),
        train=Split(documents=tuple(train_docs), conversations=tuple(train_chats)),
        heldout=Split(documents=tuple(heldout_docs), conversations=tuple(heldout_chats)),
    )


def _stage_domain(rng: random.Random, domain: str, names: list[str]) -> Domain:
    facts = _assign_facts(rng, domain, names)
    train_chats, heldout_chats = [], []
    for entity, pairs in facts.items():
        orders = _phrasing_orders(rng, pairs, heldout=False)
        train_chats += _conversations(rng, entity, pairs, orders, _STAGE_CHAT_ROUNDS)
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
