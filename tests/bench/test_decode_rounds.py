"""bench decode's rounds: added until the medians settle (or up to --max-repeats), each side's spread reported, and a
speedup that its own spread cannot tell from 1.00x said to be so."""

from __future__ import annotations

import pytest

from multitoken.bench import decode
from multitoken.bench.decode import bench_decode, settled
from multitoken.bench.decode_report import format_decode_table, noise_verdict
from tests.conftest import sharp_model


def test_settled_needs_three_rounds_and_a_median_that_stays_put():
    assert not settled([1.0, 1.0])
    assert settled([1.0, 1.01, 1.0])
    assert not settled([1.0, 1.2, 1.4])  # the median moved from 1.1 to 1.2


def _result(ratios, settled_=True):
    return {"ratio_rounds_speculative": ratios, "ratio_speculative_settled": settled_,
            "ratio_speculative_beyond_noise": min(ratios) > 1 or max(ratios) < 1, "repeats": len(ratios),
            "max_repeats": 6}


def test_verdicts_follow_the_spread():
    assert "not told apart from 1.00x" in noise_verdict(_result([0.92, 1.09, 1.01]), "speculative", "the speedup")
    assert "every round faster" in noise_verdict(_result([1.10, 1.20, 1.15]), "speculative", "the speedup")
    assert "every round slower" in noise_verdict(_result([0.80, 0.90, 0.85]), "speculative", "the speedup")
    assert "had not settled after 3 rounds" in noise_verdict(_result([1.1, 1.2, 1.3], False), "speculative", "x")
    assert "one round" in noise_verdict(_result([1.3]), "speculative", "the speedup")


@pytest.mark.parametrize("always_settled,expected_rounds", [(True, 3), (False, 5)])
def test_rounds_are_added_until_settled_or_the_maximum(monkeypatch, always_settled, expected_rounds):
    monkeypatch.setattr(decode, "settled", lambda ratios: always_settled)
    model = sharp_model(0, 3)
    result = bench_decode(model, [[1, 2, 3], [4, 5]], 1, 6, repeats=3, max_repeats=5)
    assert result["repeats"] == expected_rounds and len(result["tokens_per_s_rounds"]["plain"]) == expected_rounds
    spread = result["tokens_per_s_spread"]["speculative"]
    assert spread["min"] <= result["tokens_per_s_speculative"] <= spread["max"]
    assert len(result["ratio_rounds_speculative"]) == expected_rounds and result["identical"] is True
    table = format_decode_table(result)
    assert "min-max/round" in table and f"median of {expected_rounds} rounds" in table


def test_max_repeats_equal_to_repeats_times_exactly_that_many():
    result = bench_decode(sharp_model(0, 3), [[1, 2, 3]], 1, 4, repeats=2, max_repeats=2)
    assert result["repeats"] == 2 and result["max_repeats"] == 2
