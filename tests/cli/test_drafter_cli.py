"""The drafter through the command line, as a user runs it: train one on a frozen model, decode and benchmark with
it (output identical to plain decoding), export it for vLLM; and bad drafter settings refused in one line."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import TINY, assert_one_line_error, run_cli, tiny_args


@pytest.fixture
def drafter_run(corpus, tmp_path, capsys):
    base = tmp_path / "base"
    assert run_cli(capsys, "train", *tiny_args(1), "--model.n_layer", "4", "--data", corpus, "--out_dir", base)[0] == 0
    run = tmp_path / "drafter"
    code, out, err = run_cli(capsys, "train", *tiny_args(1), "--data", corpus, "--out_dir", run, "--init-from", base,
                             "--freeze", "base", "--model.drafter", "eagle3", "--drafter-steps", "2")
    assert code == 0, err
    assert "a new eagle3 drafter reading base layers [1, 2, 3]" in out
    assert "  d1       t+2" in out and "with the drafter's chain" in out  # the validation table names its steps
    return run


def test_decode_benchmark_and_export_with_the_drafter(drafter_run, corpus, capsys, tmp_path):
    code, plain, _ = run_cli(capsys, "generate", "--ckpt", drafter_run, "--prompt", "def f(", "--max-new-tokens", 12,
                             "--temperature", 0)
    assert code == 0
    code, fast, err = run_cli(capsys, "generate", "--ckpt", drafter_run, "--prompt", "def f(", "--max-new-tokens",
                              12, "--temperature", 0, "--speculative")
    assert code == 0 and fast == plain and "drafter: chain of 3" in err
    code, fast, err = run_cli(capsys, "generate", "--ckpt", drafter_run, "--prompt", "def f(", "--max-new-tokens",
                              12, "--temperature", 0, "--speculative", "--tree", "drafter (0,), (1,), (0, 0)")
    assert code == 0 and fast == plain, err
    path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", drafter_run, "--data", corpus, "--num-prompts", 2,
                           "--prompt-len", 8, "--max-new-tokens", 8, "--repeats", 1, "--json", path)
    assert code == 0 and "identical outputs  yes" in out
    assert json.loads(path.read_text())["tree"] == "drafter (0,), (0, 0), (0, 0, 0)"
    code, out, _ = run_cli(capsys, "export", "--ckpt", drafter_run, "--format", "eagle3", "--out", tmp_path / "d")
    assert code == 0 and "config.json, model.safetensors" in out


def test_bad_drafter_settings_get_one_line(trained_run, corpus, capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x", "--speculative", "--tree",
                           "drafter chain 2")
    assert_one_line_error(code, err, "no drafter", "--model.drafter eagle3")
    code, _, err = run_cli(capsys, "train", *TINY, "--data", corpus, "--out_dir", tmp_path / "x",
                           "--model.drafter", "eagle3")
    assert_one_line_error(code, err, "base has 2", "deeper model")
    code, _, err = run_cli(capsys, "train", *TINY, "--data", corpus, "--out_dir", tmp_path / "y",
                           "--model.drafter_layers", "[0, 0, 1]")
    assert_one_line_error(code, err, "three distinct")
    code, _, err = run_cli(capsys, "export", "--ckpt", trained_run, "--format", "eagle3", "--out", tmp_path / "z")
    assert_one_line_error(code, err, "no drafter to export")
