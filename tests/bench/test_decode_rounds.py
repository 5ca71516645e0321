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


def test_references_are_timed_in_the_same_rounds_and_checked_for_identical_tokens():
    """A peer (here a stand-in for llama.cpp that decodes plain greedy itself, and one that is off by a token)
    gets its tokens/s, plain's and speculative's ratios to it, and an identical-tokens verdict."""
    from multitoken.decoding.generate import generate

    model = sharp_model(0, 3)

    def same(batch):
        return generate(model, batch[0], 5, lengths=batch[1])

    def off_by_one(batch):
        out = same(batch)
        out[:, -1] = (out[:, -1] + 1) % 16
        return out

    for peer, identical in ((same, True), (off_by_one, False)):
        result = bench_decode(model, [[1, 2, 3], [4, 5]], 1, 5, repeats=2, max_repeats=2,
                              references={"llama.cpp": peer})
        assert result["identical_to_llama_cpp"] is identical and result["tokens_per_s_llama_cpp"] > 0
        assert result["speculative_vs_llama_cpp"] == pytest.approx(
            result["tokens_per_s_speculative"] / result["tokens_per_s_llama_cpp"])
        table = format_decode_table(result)
        assert "plain vs llama.cpp" in table and "speculative vs llama.cpp" in table
        assert ("identical tokens: yes" in table) is identical


def test_against_llama_cpp_without_the_package_or_the_file_gets_one_line(tmp_path, capsys, monkeypatch):
    import sys

    from tests.cli.conftest import assert_one_line_error, run_cli

    ckpt = tmp_path / "ckpt"
    from multitoken import TrainConfig
    from multitoken.data.tokenizer import ByteTokenizer
    from multitoken.training.checkpoint import save_checkpoint

    model = sharp_model(0, 3, vocab=256)
    save_checkpoint(ckpt, 1, model, TrainConfig(model=model.config), ByteTokenizer(), {}, {}, 1)
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", ckpt, "--against-llama-cpp", tmp_path / "none.gguf",
                           "--prompts", tmp_path / "none.txt")
    assert_one_line_error(code, err, "is not a file")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", ckpt, "--against-llama-cpp", tmp_path / "model.gguf")
    assert_one_line_error(code, err, "needs llama-cpp-python")
