"""The polynomial ground truth against an independent computation (sympy over GF(7)), and the generator's shape."""

import random
from collections import Counter

import pytest

from multitoken.experiments import polynomials as poly

sympy = pytest.importorskip("sympy")
X = sympy.Symbol("X")


def reference(expr: poly.Expr, degree: int) -> sympy.Poly:
    """The expression's value with sympy's polynomials over GF(7), reduced mod X^degree after every operation."""
    def reduce(p: sympy.Poly) -> sympy.Poly:
        return p.rem(sympy.Poly(X ** degree, X, modulus=poly.P))

    if expr.op == "LEAF":
        return sympy.Poly(sum(c * X ** i for i, c in enumerate(expr.args[0])), X, modulus=poly.P)
    args = [reference(a, degree) for a in expr.args]
    if expr.op == "NEG":
        return reduce(-args[0])
    if expr.op == "ADD":
        return reduce(args[0] + args[1])
    if expr.op == "MUL":
        return reduce(args[0] * args[1])
    return reduce(args[0].compose(args[1]))  # CMP: a(b(X))


def coefficients(p: sympy.Poly, degree: int) -> tuple[int, ...]:
    low_first = [int(c) % poly.P for c in reversed(p.all_coeffs())]
    return tuple(low_first + [0] * (degree - len(low_first)))


@pytest.mark.parametrize("degree", [poly.DEGREE, 3])  # the paper's ring and the protocol's fallback
def test_values_match_sympy_over_gf7(degree):
    rng = random.Random(0)
    for m in range(0, 9):
        for _ in range(40):
            expr = poly.random_expression(rng, m, degree)
            assert len(expr.value()) == degree
            assert expr.value() == coefficients(reference(expr, degree), degree), expr.prefix()


def test_ring_identities():
    rng = random.Random(1)
    one, x = (1, 0, 0, 0, 0), (0, 1, 0, 0, 0)
    for _ in range(50):
        a = tuple(rng.randrange(7) for _ in range(5))
        assert poly.mul(a, one) == a and poly.compose(a, x) == a and poly.add(a, poly.neg(a)) == (0,) * 5
    assert poly.mul(x, (0, 0, 0, 0, 1)) == (0,) * 5  # X * X^4 = X^5 = 0 in the ring


def test_serialization_and_operation_counts():
    rng = random.Random(2)
    expr = poly.random_expression(rng, 4)
    words = poly.example(expr, pauses=2).split()
    assert set(words) <= set(poly.VOCAB)
    assert sum(w in poly.OPS for w in words) == 4 and words.count("PAUSE") == 2
    assert words[-6] == "=" and tuple(int(w) for w in words[-5:]) == expr.value()
    ops = Counter(poly.random_expression(random.Random(s), 1).op for s in range(2000))
    assert set(ops) == set(poly.OPS) and min(ops.values()) > 400  # uniform over the four operations


def test_test_sets_are_fixed_distinct_and_kept_out_of_training():
    tests = poly.test_set(seed=5, per_operations=30, operations=range(1, 4))
    assert tests == poly.test_set(seed=5, per_operations=30, operations=range(1, 4))
    held = {" ".join(e.prefix()) for exprs in tests.values() for e in exprs}
    assert len(held) == 90
    train = poly.training_texts(seed=6, count=3000, max_operations=3, exclude=held)
    asked = {t.split(" = ")[0] for t in train}
    assert not asked & held


def test_majority_answer_accuracy_on_a_hand_made_set():
    leaf = lambda *c: poly.Expr("LEAF", (c,))  # noqa: E731
    exprs = [leaf(0, 0, 0), leaf(0, 0, 0), leaf(0, 1, 2), leaf(3, 1, 5)]
    exact, per_coefficient = poly.majority_answer_accuracy(exprs)
    assert exact == 2 / 4  # (0, 0, 0) twice
    assert per_coefficient == (3 + 2 + 2) / 12  # c0: 0 three times; c1 and c2: 0 twice
    assert poly.majority_answer_accuracy([]) == (0.0, 0.0)
