"""Generated corpus of fictional entities whose facts link across documents (deterministic by seed).

Six entity kinds, one document each: people, companies, cities, universities, books and events.
Relations point from one entity to another (a book's author is a person, that person's birthplace
a city, ...) and attributes are short values (years, names, words). Each relation or attribute is
stated once, in the source entity's document, by a fixed sentence template (`FACT_TEMPLATES`), so a
multi-hop question needs one document per hop. Documents also carry reverse links (a person's
books, a city's notable natives), consistent with the facts, and filler sentences that mention
other entities, often similarly named ones: these are the distractors a search has to read past.

Names come from a syllable generator: unique per document title, with surnames, company words and
title words shared on purpose so that near-duplicates exist. What it leaves out: natural prose
variety (templates are few), and facts stated inconsistently across sources (every fact here is true).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KIND_SHARES = {"person": 0.34, "company": 0.12, "city": 0.08, "university": 0.04, "book": 0.17, "event": 0.25}

# kind -> relation -> target kind
RELATIONS: dict[str, dict[str, str]] = {
    "person": {"birthplace": "city", "employer": "company", "alma_mater": "university"},
    "company": {"founder": "person", "headquarters": "city"},
    "city": {},
    "university": {"home_city": "city"},
    "book": {"author": "person", "publisher": "company"},
    "event": {"host_city": "city", "organizer": "company"},
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "person": ("birth_year", "occupation"),
    "company": ("founded_year", "industry"),
    "city": ("founded_year", "river", "country"),
    "university": ("founded_year",),
    "book": ("year", "genre"),
    "event": ("attendance",),
}
# one sentence per fact; `{s}` is the subject's name, `{v}` the value (a name or a short string)
FACT_TEMPLATES: dict[str, str] = {
    "birthplace": "{s} was born in the city of {v}.",
    "employer": "{s} is employed by {v}.",
    "alma_mater": "{s} studied at {v}.",
    "founder": "{s} was founded by {v}.",
    "headquarters": "{s} is headquartered in {v}.",
    "home_city": "{s} is located in {v}.",
    "author": "{s} was written by {v}.",
    "publisher": "{s} was published by {v}.",
    "host_city": "{s} took place in {v}.",
    "organizer": "{s} was organized by {v}.",
    "birth_year": "{s} was born in the year {v}.",
    "occupation": "{s} works as a {v}.",
    "founded_year": "{s} was established in the year {v}.",
    "industry": "{s} operates in the {v} industry.",
    "river": "{s} lies on the river {v}.",
    "country": "{s} is a city in the country of {v}.",
    "year": "{s} first appeared in the year {v}.",
    "genre": "{s} is a {v} novel.",
    "attendance": "{s} drew a crowd of {v} visitors.",
}
# how questions name each relation/attribute ("the <phrase> of ...")
PHRASES: dict[str, str] = {
    "birthplace": "birthplace",
    "employer": "employer",
    "alma_mater": "alma mater",
    "founder": "founder",
    "headquarters": "headquarters city",
    "home_city": "home city",
    "author": "author",
    "publisher": "publisher",
    "host_city": "host city",
    "organizer": "organizer",
    "birth_year": "birth year",
    "occupation": "occupation",
    "founded_year": "founding year",
    "industry": "industry",
    "river": "river",
    "country": "country",
    "year": "year of first appearance",
    "genre": "genre",
    "attendance": "attendance",
}
REVERSE_TEMPLATES = {
    ("book", "author"): "{v} is the author of {s}.",
    ("company", "founder"): "{v} founded {s}.",
    ("person", "birthplace"): "{v} is the birthplace of {s}.",
    ("event", "organizer"): "{v} organized {s}.",
}
FILLER_TEMPLATES = (
    "{s} is sometimes compared with {o} in regional histories.",
    "A {y} newsletter mentioned {s} next to {o}.",
    "Archivists list {n} catalogued items about {s}.",
    "Visitors often confuse {s} with {o}.",
    "The records of {o} refer to {s} several times.",
    "In {y} a short film about {s} was shown alongside one about {o}.",
    "Scholars disagree on how much {o} influenced {s}.",
    "Old maps place {s} and {o} on the same page.",
    "A {y} survey counted {n} references to {s}.",
    "Local guides recommend reading about {o} before {s}.",
)
OCCUPATIONS = (
    "cartographer", "glassblower", "archivist", "engineer", "botanist", "violinist", "surveyor",
    "translator", "architect", "chemist", "painter", "linguist", "sculptor", "navigator", "printer",
)  # fmt: skip
INDUSTRIES = (
    "shipping",
    "textile",
    "mining",
    "publishing",
    "optics",
    "ceramics",
    "timber",
    "rail",
    "salt",
    "clock",
)
GENRES = ("mystery", "historical", "adventure", "romance", "satirical", "pastoral", "gothic", "epistolary")
ADJECTIVES = (
    "Amber", "Silent", "Crimson", "Hollow", "Distant", "Iron", "Gilded", "Winter", "Pale", "Broken",
    "Hidden", "Last", "Northern", "Quiet", "Scarlet", "Burning", "Frozen", "Lonely", "Secret", "Wandering",
    "Bitter", "Golden", "Sunken", "Velvet", "Ashen", "Restless", "Narrow", "Painted", "Glass", "Salt",
)  # fmt: skip
NOUNS = (
    "Ledger", "Harbor", "Lantern", "Orchard", "Compass", "Tide", "Garden", "Archive", "Mirror", "Bridge",
    "Tower", "Voyage", "Meridian", "Cartographer", "Winter", "Letter", "Atlas", "Chapel", "Furnace", "Canal",
    "Sparrow", "Kingdom", "Clockmaker", "Valley", "Island", "Shepherd", "Signal", "Ferry", "Cellar", "Quarry",
)  # fmt: skip
COMPANY_SUFFIXES = (
    "Industries",
    "Holdings",
    "Works",
    "Labs",
    "Group",
    "Trading",
    "Foundry",
    "Systems",
    "Press",
    "Mills",
)
UNIVERSITY_SUFFIXES = ("Institute", "College", "Academy", "University")
EVENT_SUFFIXES = ("Summit", "Festival", "Congress", "Fair", "Regatta", "Symposium", "Exhibition", "Games")
_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "sh",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "k", "th", "m", "x")


@dataclass
class Entity:
    """One fictional entity: its document id, kind, unique name, relations and attributes."""

    doc_id: str
    kind: str
    name: str
    relations: dict[str, str] = field(default_factory=dict)  # relation -> target doc_id
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Corpus:
    entities: dict[str, Entity]  # doc_id -> entity
    documents: dict[str, list[str]]  # doc_id -> lines (line 0 is the title)


def _word(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    n = rng.randint(*syllables)
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _pool(rng: random.Random, size: int, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    seen: set[str] = set()
    while len(seen) < size:
        seen.add(_word(rng, syllables))
    return sorted(seen)


def _kind_counts(n_docs: int) -> dict[str, int]:
    counts = {k: max(4, int(n_docs * share)) for k, share in KIND_SHARES.items()}
    counts["person"] += n_docs - sum(counts.values())  # the remainder goes to people
    if counts["person"] < 4:
        raise ValueError(f"n_docs={n_docs} is too small; expected at least 40")
    return counts


def _names(kind: str, count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """`count` unique names for a kind, drawn from small shared pools so near-duplicates occur."""
    pools = {
        "person": (_pool(rng, max(20, count // 10), (1, 2)), _pool(rng, max(20, count // 4))),
        "company": (_pool(rng, max(10, count // 3)), COMPANY_SUFFIXES),
        "city": (_pool(rng, count * 2, (2, 3)),),
        "university": (_pool(rng, max(10, count // 2)), UNIVERSITY_SUFFIXES),
        "book": (ADJECTIVES, NOUNS),
        "event": (_pool(rng, max(10, count // 4)), EVENT_SUFFIXES),
    }[kind]
    names: list[str] = []
    attempts = 0
    while len(names) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(
                f"cannot draw {count} unique {kind} names; the corpus is too large for the name pools"
            )
        if kind == "person":
            name = f"{rng.choice(pools[0])} {rng.choice(pools[1])}"
        elif kind == "city":
            name = rng.choice(pools[0])
        elif kind == "book":
            name = f"The {rng.choice(pools[0])} {rng.choice(pools[1])}"
            if rng.random() < 0.5:
                name += f" of {_word(rng, (2, 2))}"
        elif kind == "event":
            name = f"{rng.randint(1850, 2020)} {rng.choice(pools[0])} {rng.choice(EVENT_SUFFIXES)}"
        else:
            name = f"{rng.choice(pools[0])} {rng.choice(pools[1])}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _attribute(kind: str, attr: str, rng: random.Random, rivers: list[str], countries: list[str]) -> str:
    if attr == "birth_year":
        return str(rng.randint(1890, 2000))
    if attr == "founded_year":
        return str(rng.randint(1100, 1990) if kind == "city" else rng.randint(1800, 2015))
    if attr == "year":
        return str(rng.randint(1900, 2023))
    if attr == "attendance":
        return str(rng.randint(300, 90000))
    if attr == "occupation":
        return rng.choice(OCCUPATIONS)
    if attr == "industry":
        return rng.choice(INDUSTRIES)
    if attr == "genre":
        return rng.choice(GENRES)
    if attr == "river":
        return rng.choice(rivers)
    if attr == "country":
        return rng.choice(countries)
    raise ValueError(f"unknown attribute {attr!r}")


def generate_entities(n_docs: int, seed: int) -> dict[str, Entity]:
    """Entities with names, relations and attributes; doc ids `d000000`... in generation order."""
    rng = random.Random(seed)
    taken: set[str] = set()
    by_kind: dict[str, list[Entity]] = {}
    entities: dict[str, Entity] = {}
    for kind, count in _kind_counts(n_docs).items():
        by_kind[kind] = []
        for name in _names(kind, count, rng, taken):
            entity = Entity(f"d{len(entities):06d}", kind, name)
            entities[entity.doc_id] = entity
            by_kind[kind].append(entity)
    rivers = _pool(rng, 60, (2, 2))
    countries = _pool(rng, 25, (2, 3))
    for entity in entities.values():
        for relation, target_kind in RELATIONS[entity.kind].items():
            entity.relations[relation] = rng.choice(by_kind[target_kind]).doc_id
        for attr in ATTRIBUTES[entity.kind]:
            entity.attributes[attr] = _attribute(entity.kind, attr, rng, rivers, countries)
    return entities


def _similar(entity: Entity, pool: list[Entity], rng: random.Random) -> Entity:
    """A distractor: an entity sharing a name word with `entity` when one is found quickly."""
    words = set(entity.name.split())
    for _ in range(12):
        other = rng.choice(pool)
        if other is not entity and words & set(other.name.split()):
            return other
    return rng.choice(pool)


def render_documents(entities: dict[str, Entity], seed: int) -> dict[str, list[str]]:
    """Lines of every document: title, kind line, fact and reverse-link sentences among filler."""
    rng = random.Random(seed + 1)
    pool = list(entities.values())
    same_kind: dict[str, list[Entity]] = {}
    for e in pool:
        same_kind.setdefault(e.kind, []).append(e)
    reverse: dict[str, list[str]] = {}
    for e in pool:
        for relation, target in e.relations.items():
            template = REVERSE_TEMPLATES.get((e.kind, relation))
            if template and len(reverse.setdefault(target, [])) < 5:
                reverse[target].append(template.format(s=e.name, v=entities[target].name))
    documents: dict[str, list[str]] = {}
    for e in pool:
        facts = [FACT_TEMPLATES[r].format(s=e.name, v=entities[t].name) for r, t in e.relations.items()]
        facts += [FACT_TEMPLATES[a].format(s=e.name, v=v) for a, v in e.attributes.items()]
        body = facts + reverse.get(e.doc_id, [])
        for _ in range(rng.randint(8, 24)):
            other = _similar(e, same_kind[e.kind], rng) if rng.random() < 0.5 else rng.choice(pool)
            template = rng.choice(FILLER_TEMPLATES)
            body.append(
                template.format(s=e.name, o=other.name, y=rng.randint(1850, 2023), n=rng.randint(2, 400))
            )
        rng.shuffle(body)
        documents[e.doc_id] = [e.name, f"{e.name} is a {e.kind} described in this archive."] + body
    return documents


def generate_corpus(n_docs: int, seed: int) -> Corpus:
    """The corpus of `n_docs` documents for `seed`."""
    entities = generate_entities(n_docs, seed)
    return Corpus(entities, render_documents(entities, seed))
