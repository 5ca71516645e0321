"""Procedural children's stories with two-token names: the induction benchmark of paper section 4.1, made offline.

A story has 2 or 3 characters, each mentioned 2 to 6 times in sentences drawn from about 30 templates over a
vocabulary of about 350 words. A fresh name is two tokens, a first syllable (S1, capitalized) and a second (S2):
`Ka zor`. Within a story the characters' S1s differ and so do their S2s, so after a repeat mention's S1 only copying
from the earlier mention gives the right S2: that is the induction the metric scores (head 1's argmax at the S2 slot
of every repeat mention, teacher-forced). The S2 of a first mention cannot be known (chance is 1/48): a control.

20% of the S1 x S2 pairs never occur in training; the test stories use only those, so a model cannot have memorized
a name. The pressure knob p: in training each character gets a fresh two-token name with probability p, otherwise a
common one-token name (`Tom`); p = 0.05 mimics the paper's Fig. 7 (induction is rarely needed), p = 1.0 its App. J.

Everything is a pure function of a `random.Random`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

CONSONANTS = "BDFGKLMNPRST"
S1 = tuple(c + v for c in CONSONANTS for v in "aeiou")[:48]  # Ba Be Bi Bo Bu Da ... : 48 first syllables
S2 = tuple(f"{c}{v}{e}" for c, v, e in itertools.product("zvxq", "aeiou", "nlr"))[:48]  # zan zal zar zen ...
COMMON_NAMES = ("Tom", "Anna", "Ben", "Lucy", "Max", "Emma", "Sam", "Lily", "Jack", "Mia", "Leo", "Zoe", "Finn",
                "Ruby", "Noah", "Ella", "Oscar", "Grace", "Hugo", "Alice", "Theo", "Ivy", "Owen", "Nora", "Jake",
                "Rose", "Eli", "Lola", "Ned", "Amy", "Paul", "Kate", "Dan", "Eva", "Luke", "Maya", "Carl", "Jane",
                "Adam", "Sara")

NOUNS = ("ball", "tree", "house", "dog", "cat", "bird", "flower", "box", "cake", "apple", "book", "hat", "boat",
         "car", "kite", "rock", "river", "hill", "garden", "park", "forest", "door", "window", "bed", "cup", "toy",
         "star", "moon", "sun", "cloud", "fish", "frog", "bear", "rabbit", "horse", "duck", "egg", "bread", "milk",
         "shoe", "sock", "coat", "bag", "key", "lamp", "chair", "table", "song", "game", "picture", "letter", "gift",
         "bell", "drum", "map", "shell", "leaf", "seed", "nest", "pond", "bridge", "road", "town", "farm", "barn",
         "cookie", "pie", "jar", "basket", "blanket", "pillow", "candle", "clock", "feather", "stone", "stick",
         "rope", "wagon", "train", "ship")
ADJECTIVES = ("big", "small", "red", "blue", "green", "yellow", "happy", "sad", "little", "old", "new", "soft",
              "shiny", "funny", "kind", "brave", "quiet", "loud", "warm", "cold", "bright", "dark", "pretty", "tall",
              "round", "sweet", "tiny", "huge", "fast", "slow", "clever", "gentle", "sleepy", "busy", "proud",
              "silly", "strong", "lucky", "fluffy", "golden", "wet", "dry", "clean", "dirty", "best", "secret",
              "magic", "favorite", "hungry", "tired")
VERBS = ("found", "saw", "liked", "wanted", "made", "took", "gave", "held", "lost", "painted", "built", "carried",
         "opened", "closed", "hid", "washed", "fixed", "loved", "shared", "threw", "caught", "picked", "dropped",
         "pushed", "pulled", "counted", "watched", "drew", "kept", "brought", "found", "touched", "cleaned",
         "tasted", "smelled", "hugged", "followed", "helped", "called", "visited")
PLACES = ("the park", "the garden", "the forest", "the river", "the house", "the farm", "the town", "the hill",
          "the beach", "the school", "the shop", "the lake", "the barn", "the bridge", "the kitchen", "the yard")
FEELINGS = ("happy", "sad", "scared", "excited", "surprised", "angry", "proud", "sleepy", "hungry", "curious")
TIMES = ("One day", "In the morning", "Later", "After lunch", "That night", "The next day", "Soon", "Then",
         "At noon", "In the evening")

# {A}, {B}: characters (distinct); {n}: noun; {a}: adjective; {v}: past verb; {p}: place; {f}: feeling; {t}: time.
TEMPLATES_ONE = (
    "{t} , {A} went to {p} .", "{A} {v} a {a} {n} .", "{A} felt very {f} .", "{A} looked at the {a} {n} .",
    "{t} , {A} {v} the {n} .", "{A} ran to {p} with a {n} .", "{A} sat under the {a} tree .",
    "{A} smiled and said hello .", "{A} could not find the {n} .", "{A} sang a song about a {n} .",
    "{A} was {f} and went home .", "{t} , {A} played with the {a} {n} .", "{A} wanted to see {p} .",
    "{A} put the {n} in the {a} box .", "{A} laughed at the {a} {n} .", "{A} {v} a {n} near {p} .",
)
TEMPLATES_TWO = (
    "{A} and {B} went to {p} .", "{A} gave {B} a {a} {n} .", "{A} told {B} about the {n} .",
    "{B} helped {A} find the {n} .", "{A} and {B} {v} a {a} {n} .", "{t} , {A} saw {B} at {p} .",
    "{A} asked {B} to play .", "{B} showed {A} a {a} {n} .", "{A} and {B} were {f} .",
    "{A} waved at {B} .", "{B} {v} the {n} for {A} .", "{t} , {A} and {B} ate a {n} .",
    "{A} followed {B} to {p} .", "{B} and {A} built a {a} {n} .",
)
NEUTRAL = ("The {a} {n} was in {p} .", "It was a {a} day .", "The {n} was very {a} .",
           "There was a {a} {n} by {p} .", "{t} , the wind blew over {p} .", "A {a} bird sang in a tree .")
INTRO = ("Once upon a time , there was {A} .", "This is a story about {A} .", "{A} lived near {p} .")
ENDINGS = ("The end .", "They were happy .", "It was a good day .", "And that was that .")


def vocabulary() -> list[str]:
    """Every word a story can contain, in a fixed order."""
    words = []
    for template in (*TEMPLATES_ONE, *TEMPLATES_TWO, *NEUTRAL, *INTRO, *ENDINGS, *PLACES, *TIMES):
        words += [w for w in template.split() if not w.startswith("{")]
    words += [*NOUNS, *ADJECTIVES, *VERBS, *FEELINGS, *COMMON_NAMES, *S1, *S2]
    return list(dict.fromkeys(words))


def held_out_pairs(seed: int = 0, fraction: float = 0.2) -> set[tuple[str, str]]:
    """The S1 x S2 pairs reserved for testing: `fraction` of all, the same for a seed."""
    pairs = [(a, b) for a in S1 for b in S2]
    return set(random.Random(seed).sample(pairs, round(fraction * len(pairs))))


@dataclass(frozen=True)
class Story:
    words: list[str]
    # Word positions of each two-token name mention's S2, split into first mentions and repeats.
    first_s2: list[int]
    repeat_s2: list[int]

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _names(rng: random.Random, count: int, p_fresh: float, pairs: list[tuple[str, str]]) -> list[list[str]]:
    """`count` names with distinct S1s, distinct S2s and distinct common names."""
    names: list[list[str]] = []
    used_s1, used_s2, used_common = set(), set(), set()
    while len(names) < count:
        if rng.random() < p_fresh:
            s1, s2 = rng.choice(pairs)
            if s1 in used_s1 or s2 in used_s2:
                continue
            used_s1.add(s1)
            used_s2.add(s2)
            names.append([s1, s2])
        else:
            name = rng.choice(COMMON_NAMES)
            if name in used_common:
                continue
            used_common.add(name)
            names.append([name])
    return names


def story(rng: random.Random, p_fresh: float, pairs: list[tuple[str, str]]) -> Story:
    """One story: 2-3 characters named from `pairs` (fresh, with probability p_fresh) or common names, each
    mentioned 2-6 times."""
    names = _names(rng, rng.randint(2, 3), p_fresh, pairs)
    left = [rng.randint(2, 6) for _ in names]
    fill = {"n": NOUNS, "a": ADJECTIVES, "v": VERBS, "p": PLACES, "f": FEELINGS, "t": TIMES}
    words: list[str] = []
    first, repeat = [], []
    seen = [False] * len(names)

    def sentence(template: str, chars: list[int]) -> None:
        slots = iter(chars)
        for token in template.split():
            if token in ("{A}", "{B}"):
                c = next(slots)
                if len(names[c]) == 2:
                    (repeat if seen[c] else first).append(len(words) + 1)
                seen[c] = True
                left[c] -= 1
                words.extend(names[c])
            elif token.startswith("{"):
                words.extend(rng.choice(fill[token[1]]).split())
            else:
                words.append(token)

    sentence(rng.choice(INTRO), [0])
    while any(n > 0 for n in left):
        waiting = [c for c, n in enumerate(left) if n > 0]
        if rng.random() < 0.4:  # scenery between mentions: stories of 60-200 words, and distance to copy over
            sentence(rng.choice(NEUTRAL), [])
        if len(waiting) >= 2 and rng.random() < 0.5:
            sentence(rng.choice(TEMPLATES_TWO), rng.sample(waiting, 2))
        else:
            sentence(rng.choice(TEMPLATES_ONE), [rng.choice(waiting)])
    words += rng.choice(ENDINGS).split()
    return Story(words, first, repeat)


def training_stories(seed: int, count: int, p_fresh: float, heldout_seed: int = 0) -> list[Story]:
    pairs = sorted(set((a, b) for a in S1 for b in S2) - held_out_pairs(heldout_seed))
    rng = random.Random(seed)
    return [story(rng, p_fresh, pairs) for _ in range(count)]


def test_stories(seed: int, count: int, heldout_seed: int = 0) -> list[Story]:
    """Stories whose characters all have fresh names made of held-out pairs."""
    pairs = sorted(held_out_pairs(heldout_seed))
    rng = random.Random(seed)
    return [story(rng, 1.0, pairs) for _ in range(count)]


def copy_sequences(seed: int, count: int, length: int = 40) -> list[list[str]]:
    """Control: random words, then the same words again; copying scores on the second half."""
    rng = random.Random(seed)
    words = [w for w in vocabulary() if w not in S1 and w not in S2]
    out = []
    for _ in range(count):
        half = [rng.choice(words) for _ in range(length)]
        out.append(half + half)
    return out
