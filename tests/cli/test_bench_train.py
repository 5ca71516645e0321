"""`multitoken bench train`: every case measured in its own process, table + JSON + PNG."""

import json

from tests.cli.test_cli import assert_one_line_error, run_cli


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


def test_bench_train_bad_input(capsys):
    code, _, err = run_cli(capsys, "bench", "train", "--vocab-size", "32k")
    assert_one_line_error(code, err, "--vocab-size takes comma-separated integers")
    code, _, err = run_cli(capsys, "bench", "train", "--n-future", "8", "--n-layer", "4")
    assert_one_line_error(code, err, "model.n_layer (4) must be at least model.n_future (8)")
