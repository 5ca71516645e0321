"""Polynomial arithmetic over F_7[X]/(X^5) (paper section 4.2): random expressions with exact answers.

An element of the ring is its 5 coefficients (c0 + c1 X + ... + c4 X^4, each in 0..6); a smaller ring
F_7[X]/(X^d) (the protocol's fallback is d = 3) is the same code with d coefficients, the length of the tuples. An
expression starts as a random element (a leaf); m times, an operation drawn uniformly from negation, addition,
multiplication and composition is applied: negation wraps the expression, a binary operation combines it with a fresh
leaf, the expression on the left or the right with probability 1/2. Composition CMP(a, b) is a(b(X)) reduced
mod (X^d, 7).

Serialized in prefix order over a 13-word vocabulary, a leaf as its five digits, and the answer after `=`:

    ADD 3 0 6 1 2 NEG 1 1 0 0 5 = 2 6 6 1 4

Everything is a pure function of a `random.Random`, so a seed gives the same expressions on every machine.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

P = 7  # the field F_7
DEGREE = 5  # the paper's ring F_7[X]/(X^5): five coefficients
OPS = ("NEG", "ADD", "MUL", "CMP")
VOCAB = tuple(str(d) for d in range(P)) + OPS + ("=", "PAUSE")

Poly = tuple[int, ...]


def add(a: Poly, b: Poly) -> Poly:
    return tuple((x + y) % P for x, y in zip(a, b))


def neg(a: Poly) -> Poly:
    return tuple((-x) % P for x in a)


def mul(a: Poly, b: Poly) -> Poly:
    """The product, truncated at X^d (terms of degree d and above are 0 in the ring)."""
    degree = len(a)
    out = [0] * degree
    for i, x in enumerate(a):
        if x:
            for j in range(degree - i):
                out[i + j] = (out[i + j] + x * b[j]) % P
    return tuple(out)


def compose(a: Poly, b: Poly) -> Poly:
    """a(b(X)) in the ring: sum of a_i b^i, by Horner's rule."""
    degree = len(a)
    out = (0,) * degree
    for coefficient in reversed(a):
        out = add(mul(out, b), (coefficient,) + (0,) * (degree - 1))
    return out


@dataclass(frozen=True)
class Expr:
    op: str  # "LEAF" or one of OPS
    args: tuple  # (Poly,) for a leaf, else sub-expressions

    def value(self) -> Poly:
        if self.op == "LEAF":
            return self.args[0]
        values = [arg.value() for arg in self.args]
        return {"NEG": lambda: neg(values[0]), "ADD": lambda: add(*values), "MUL": lambda: mul(*values),
                "CMP": lambda: compose(*values)}[self.op]()

    def prefix(self) -> list[str]:
        if self.op == "LEAF":
            return [str(c) for c in self.args[0]]
        return [self.op] + [word for arg in self.args for word in arg.prefix()]


def random_leaf(rng: random.Random, degree: int = DEGREE) -> Expr:
    return Expr("LEAF", (tuple(rng.randrange(P) for _ in range(degree)),))


def random_expression(rng: random.Random, operations: int, degree: int = DEGREE) -> Expr:
    """An expression with exactly `operations` operations, grown as the paper describes."""
    expr = random_leaf(rng, degree)
    for _ in range(operations):
        op = rng.choice(OPS)
        if op == "NEG":
            expr = Expr("NEG", (expr,))
        else:
            leaf = random_leaf(rng, degree)
            expr = Expr(op, (expr, leaf) if rng.random() < 0.5 else (leaf, expr))
    return expr


def question(expr: Expr, pauses: int = 0) -> list[str]:
    """The words a model is given: the expression, optional pause tokens, then `=`."""
    return expr.prefix() + ["PAUSE"] * pauses + ["="]


def answer(expr: Expr) -> list[str]:
    return [str(c) for c in expr.value()]


def example(expr: Expr, pauses: int = 0) -> str:
    """One training document: question and answer, space-separated words."""
    return " ".join(question(expr, pauses) + answer(expr))


def training_texts(seed: int, count: int, max_operations: int = 5, pauses: int = 0,
                   exclude: set[str] = frozenset(), degree: int = DEGREE) -> list[str]:
    """`count` training documents, operations drawn uniformly from 1..max_operations, none of them in `exclude`
    (the test and validation questions)."""
    rng = random.Random(seed)
    texts = []
    while len(texts) < count:
        expr = random_expression(rng, rng.randint(1, max_operations), degree)
        if " ".join(expr.prefix()) not in exclude:
            texts.append(example(expr, pauses))
    return texts


def test_set(seed: int, per_operations: int, operations: range = range(1, 11),
             degree: int = DEGREE) -> dict[int, list[Expr]]:
    """Fixed evaluation expressions, `per_operations` for each number of operations (distinct within the set)."""
    rng = random.Random(seed)
    out: dict[int, list[Expr]] = {}
    for m in operations:
        seen, exprs = set(), []
        while len(exprs) < per_operations:
            expr = random_expression(rng, m, degree)
            key = " ".join(expr.prefix())
            if key not in seen:
                seen.add(key)
                exprs.append(expr)
        out[m] = exprs
    return out


def majority_answer_accuracy(exprs: list[Expr]) -> tuple[float, float]:
    """What a model that ignores the question scores: (exact match of the most frequent answer, per-coefficient
    accuracy of the most frequent value at each coefficient). Answers are not uniform (a product with a leaf whose
    constant term is 0 keeps c0 = 0, for one), so this sits above chance, and a run that scores it has learned the
    answers' frequencies and nothing about the question."""
    if not exprs:
        return 0.0, 0.0
    values = [e.value() for e in exprs]
    exact = Counter(values).most_common(1)[0][1] / len(values)
    degree = len(values[0])
    per_coefficient = sum(Counter(v[i] for v in values).most_common(1)[0][1] for i in range(degree))
    return exact, per_coefficient / (degree * len(values))
