"""Captions of generated shapes scenes, and which pictures a caption is true of.

The bundled CLIP learns from these captions, and the relevance tests and the bench ask its queries in the same
words (`object_query`), so what the model was taught and what it is asked are one vocabulary. A caption knows
its own meaning (`Caption.terms`), which lets training treat every picture a caption is true of as a positive,
not only the one it was written for: with 40 colour × shape pairs, a batch holds many red circles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from export.shapes.dataset import CLASS_NAMES, NAMED_COLOURS, Box

COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
PLURALS = {"cross": "crosses"}

Thing = tuple[str, str]  # (colour, shape)


@dataclass(frozen=True)
class Caption:
    """A caption and what it claims.

    complete: the picture holds exactly `terms` and nothing else ("a red circle and two blue stars").
    at_least: each term needs at least its count ("a red circle" is true of a picture with two);
    otherwise each count is exact ("two red circles" is false of a picture with three).
    """

    text: str
    terms: tuple[tuple[Thing, int], ...]
    complete: bool = False
    at_least: bool = False

    def is_true_of(self, things: Counter[Thing]) -> bool:
        if self.complete:
            return dict(self.terms) == dict(things)
        if self.at_least:
            return all(things[thing] >= n for thing, n in self.terms)
        return all(things[thing] == n for thing, n in self.terms)


def phrase(colour: str, shape: str, count: int = 1) -> str:
    if count == 1:
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
    return f"{COUNT_WORDS[count]} {colour} {PLURALS.get(shape, shape + 's')}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def object_query(colour: str, shape: str) -> Caption:
    """"a red circle": the query the relevance measures ask, true of any picture holding one."""
    return Caption(phrase(colour, shape), (((colour, shape), 1),), at_least=True)


def all_object_queries() -> list[Caption]:
    return [object_query(colour, shape) for colour in NAMED_COLOURS for shape in CLASS_NAMES]


def things_of(boxes: Iterable[Box]) -> Counter[Thing]:
    return Counter((b.colour, b.name) for b in boxes)


def scene_caption(things: Counter[Thing], rng: np.random.Generator) -> Caption:
    """One caption of a scene, of a randomly chosen kind: the whole scene, one group with its count, or one
    object as the queries ask for it ("a red circle")."""
    groups = list(things.items())
    order = rng.permutation(len(groups))
    kind = rng.choice(["complete", "group", "object"], p=[0.4, 0.3, 0.3])
    if kind == "complete":
        terms = tuple(groups[i] for i in order)
        return Caption(_join([phrase(c, s, n) for (c, s), n in terms]), terms, complete=True)
    thing, count = groups[int(order[0])]
    if kind == "group":
        return Caption(phrase(*thing, count), ((thing, count),))
    return object_query(*thing)


def truth_matrix(captions: Sequence[Caption], pictures: Sequence[Counter[Thing]]) -> np.ndarray:
    """[pictures × captions] booleans: which caption is true of which picture."""
    return np.array([[c.is_true_of(p) for c in captions] for p in pictures], dtype=bool)
