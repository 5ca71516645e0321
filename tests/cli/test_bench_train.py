"""`multitoken bench train`: every case measured in its own process, table + JSON + PNG."""

import json

import pytest

from tests.cli.conftest import assert_one_line_error, run_cli


@pytest.mark.slow
def test_bench_train_records_table_and_plot(capsys, tmp_path):
    out_json, out_png = tmp_path / "train.json", tmp_path / "train.png"
    code, out, _ = run_cli(capsys, "bench", "train", "--vocab-size", 600, "--d-model", 32, "--n-layer", 3,
                           "--n-head", 2, "--batch-size", 2, "--seq-len", 16, "--n-future", "1,2", "--steps", 1,
                           "--json", out_json, "--plot", out_png)
    assert code == 0 and "mtp_chunked" in out and "peak RSS" in out
    records = json.loads(out_json.read_text())
    assert [(r["case"], r["n_future"]) for r in records] == [
        ("ntp", 1), ("ntp_chunked", 1), ("mtp_naive", 2), ("mtp_sequential", 2), ("mtp_chunked", 2)]
    for r in records:
        assert r["vocab_size"] == 600 and r["device"] == "cpu"
        assert r["peak_memory_bytes"] > 0 and r["tokens_per_s"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_train_bad_input(capsys, tmp_path):
    code, _, err = run_cli(capsys, "bench", "train", "--vocab-size", "32k")
    assert_one_line_error(code, err, "--vocab-size takes comma-separated integers")
    code, _, err = run_cli(capsys, "bench", "train", "--n-future", "8", "--n-layer", "4")
    assert_one_line_error(code, err, "model.n_layer (4) must be at least model.n_future (8)")
    code, out, err = run_cli(capsys, "bench", "train", "--json", tmp_path)  # refused before measuring anything
    assert_one_line_error(code, err, f"--json {tmp_path} is a directory")


@pytest.mark.slow
def test_bench_train_selected_cases_rounds_and_flops(capsys, tmp_path):
    out_json = tmp_path / "train.json"
    code, out, _ = run_cli(capsys, "bench", "train", "--vocab-size", 600, "--d-model", 32, "--n-layer", 3,
                           "--n-head", 2, "--batch-size", 2, "--seq-len", 16, "--n-future", "2", "--steps", 1,
                           "--cases", "ntp_chunked,mtp_chunked", "--rounds", 2, "--json", out_json)
    assert code == 0 and "by FLOPs" in out and "median of 2 rounds" in out
    records = json.loads(out_json.read_text())
    assert [(r["case"], r["n_future"]) for r in records] == [("ntp_chunked", 1), ("mtp_chunked", 2)]
    for r in records:  # the median of two rounds is their mean
        assert len(r["tokens_per_s_rounds"]) == 2 and r["tokens_per_s"] == sum(r["tokens_per_s_rounds"]) / 2
    # By hand: SwiGLU width 256 (Llama's rule for d 32); per layer q,k,v,o 4*32*32 + 3*32*256 + attention 17*32;
    # each head adds a 32 x 600 unembedding; 6 FLOPs per multiply-add.
    per_layer = 4 * 32 * 32 + 3 * 32 * 256 + 17 * 32
    assert records[0]["flops_per_token"] == 6 * (3 * per_layer + 1 * 32 * 600)
    assert records[1]["flops_per_token"] == 6 * (3 * per_layer + 2 * 32 * 600)
    ratio = records[0]["flops_per_token"] / records[1]["flops_per_token"]
    assert f"{ratio:.2f}x" in out.splitlines()[3]  # the mtp_chunked row's 'by FLOPs' column


def test_bench_train_bad_cases(capsys):
    code, _, err = run_cli(capsys, "bench", "train", "--cases", "ntp,mtp_fast")
    assert_one_line_error(code, err, "--cases takes a comma-separated subset of ntp,ntp_chunked")
    code, _, err = run_cli(capsys, "bench", "train", "--n-future", "1", "--cases", "mtp_chunked")
    assert_one_line_error(code, err, "nothing to run")
    code, _, err = run_cli(capsys, "bench", "train", "--rounds", "0")
    assert_one_line_error(code, err, "--rounds must be at least 1")
