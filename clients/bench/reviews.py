"""A generated corpus of product reviews labelled positive or negative: the text data the
tests and the text benchmark train on (nothing is downloaded; the same seed gives the same
rows).

The sentiment is in the words: a few strong ones, most reviews mixing in a word of the other
side, neutral filler, a product, misspellings, capitals and punctuation, and some blank
reviews. Words never in any generated review (`UNSEEN_WORDS`) are for held-out checks.
"""

from __future__ import annotations

import numpy as np

POSITIVE = [
    "great",
    "excellent",
    "wonderful",
    "loved",
    "amazing",
    "superb",
    "fantastic",
    "delightful",
    "reliable",
    "sturdy",
    "brilliant",
    "perfect",
    "happy",
    "recommend",
    "pleasant",
]
NEGATIVE = [
    "terrible",
    "awful",
    "broken",
    "disappointing",
    "useless",
    "horrible",
    "poor",
    "flimsy",
    "waste",
    "refund",
    "annoying",
    "cheap",
    "faulty",
    "regret",
    "worst",
]
FILLER = [
    "the",
    "it",
    "this",
    "was",
    "is",
    "and",
    "a",
    "very",
    "really",
    "quite",
    "after",
    "of",
    "with",
    "for",
    "my",
    "to",
    "day",
    "week",
    "box",
    "delivery",
    "price",
    "colour",
    "size",
    "arrived",
    "looked",
    "works",
    "used",
]
PRODUCTS = ("kettle", "lamp", "headphones", "backpack", "blender", "keyboard")
UNSEEN_WORDS = ("zorblax", "quintessentially", "flibbertigibbet", "snorkelwise")


def _misspell(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    at = int(rng.integers(1, len(word) - 1))
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def review(positive: bool, rng: np.random.Generator) -> str:
    """One review: mostly words of its sentiment, filler, maybe one of the other side."""
    own, other = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
    words = list(rng.choice(FILLER, int(rng.integers(4, 12))))
    words += list(rng.choice(own, int(rng.integers(1, 4))))
    if rng.random() < 0.35:
        words.append(str(rng.choice(other)))
    words.append(str(rng.choice(PRODUCTS)))
    rng.shuffle(words)
    words = [_misspell(w, rng) if rng.random() < 0.05 else w for w in words]
    words = [w.upper() if rng.random() < 0.05 else w for w in words]
    text = " ".join(words)
    return text[0].upper() + text[1:] + str(rng.choice([".", "!", "!!", "...", " :)", ""]))


def reviews(rows: int, seed: int = 0, blank: float = 0.02) -> dict[str, list[str | None]]:
    """Columns review (None: blank), product, and sentiment."""
    rng = np.random.default_rng(seed)
    positive = rng.random(rows) < 0.5
    texts: list[str | None] = [review(bool(p), rng) for p in positive]
    for index in np.flatnonzero(rng.random(rows) < blank):
        texts[index] = None
    return {
        "review": texts,
        "product": [str(p) for p in rng.choice(PRODUCTS, rows)],
        "sentiment": ["positive" if p else "negative" for p in positive],
    }
