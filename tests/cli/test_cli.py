"""The console script end to end (train -> generate -> eval -> info) and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multitoken import TrainConfig
from multitoken.cli.main import main
from multitoken.config import from_dict, to_dict
from tests.cli.conftest import TINY, assert_one_line_error, run_cli, tiny_args

REPO = Path(__file__).resolve().parents[2]


def test_train_generate_eval_info(trained_run, corpus, capsys):
    code, out, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "def f(", "--max-new-tokens", 10,
                             "--seed", 3)
    assert code == 0 and out.startswith("def f(") and "tokens/s" in err
    assert run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "def f(", "--max_new_tokens", 10,
                   "--seed", 3)[1] == out  # same seed, same text

    code, out, _ = run_cli(capsys, "eval", "--ckpt", trained_run, "--data", corpus, "--json")
    result = json.loads(out)
    assert code == 0 and len(result["loss"]) == 2 and len(result["acc"]) == 2 and len(result["bpb"]) == 2
    assert result["data"] == "validation split of the training data"  # its own data, named again
    code, out, _ = run_cli(capsys, "eval", "--ckpt", trained_run, "--data", corpus)
    assert code == 0 and "t+2" in out and "bits/byte" in out

    code, out, _ = run_cli(capsys, "info", "--ckpt", trained_run)
    assert code == 0 and "trunk (1 layers)" in out and "heads (2 x 1 layer)" in out
    code, out, _ = run_cli(capsys, "info", "--ckpt", trained_run, "--json")
    info = json.loads(out)
    assert info["step"] == 4 and info["params"]["total"] == sum(v for k, v in info["params"].items() if k != "total")


def test_resume_flag_continues_a_run(trained_run, corpus, capsys):
    code, out, err = run_cli(capsys, "train", *TINY[:-6], "--max_steps", 6, "--data.path", corpus,
                             "--out_dir", trained_run, "--resume", "--progress", "false")
    assert code == 0 and "validation after 6 steps" in out


def test_yaml_config_and_overrides(corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"d_model": 32, "n_layer": 3, "n_head": 2, "n_future": 3,
                                                "max_seq_len": 32}, "max_steps": 99, "batch_size": 2}))
    code, out, _ = run_cli(capsys, "train", "--config", config, "--max_steps", 2, "--data.path", corpus,
                           "--out_dir", tmp_path / "r", "--eval_batches", 1, "--progress", "false")
    assert code == 0 and "validation after 2 steps" in out and "t+3" in out
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["model"]["n_future"] == 3 and saved["max_steps"] == 2 and saved["batch_size"] == 2


def test_shipped_default_config_is_the_builtin_default():
    shipped = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    assert from_dict(TrainConfig, shipped) == TrainConfig()
    assert shipped == to_dict(TrainConfig())  # every setting written out, none left to the defaults


def test_shipped_configs_are_valid():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"default.yaml", "gpu-byte-200m.yaml"}  # the folder is where it should be
    for path in paths:
        from_dict(TrainConfig, yaml.safe_load(path.read_text()))


def test_speculative_generate_prints_statistics(trained_run, capsys):
    code, out, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "def f(", "--max-new-tokens", 12,
                             "--temperature", 0, "--speculative")
    assert code == 0 and "tau" in err and "acceptance by draft position" in err
    plain = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "def f(", "--max-new-tokens", 12,
                    "--temperature", 0)[1]
    assert out == plain  # greedy: the same text


def test_bench_decode_table_and_json(trained_run, corpus, capsys, tmp_path):
    path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--num-prompts", 3,
                           "--prompt-len", 8,
                           "--max-new-tokens", 8, "--repeats", 1, "--batch-size", 2, "--json", path)
    assert code == 0 and "speedup" in out and "identical outputs  yes" in out
    result = json.loads(path.read_text())
    for key in ("tokens_per_s_plain", "tokens_per_s_speculative", "speedup", "tau", "acceptance_per_position",
                "identical", "batch_size", "device"):
        assert key in result, key
    assert result["identical"] is True and result["batch_size"] == 2 and len(result["acceptance_per_position"]) == 1
    assert result["tau"] >= 1.0
    # 3 layers = 1 trunk + 2 heads, draft length 1: a plain step reads 2 layers, a speculative one 3.
    assert result["memory_bound_limit"] == 2 / 3 and "memory-bound limit for this shape 0.67" in out

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def f(\n\nclass A:\n")
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--prompts", prompts,
                           "--max-new-tokens", 6, "--repeats", 1)
    assert code == 0 and "2 prompts" in out


def test_bench_decode_sweep_plot(trained_run, corpus, capsys, tmp_path):
    plot, path = tmp_path / "out" / "decode.png", tmp_path / "sweep.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--num-prompts", 2,
                           "--prompt-len", 8, "--max-new-tokens", 6, "--repeats", 2, "--max-repeats", 2,
                           "--batch-size", "1,2",
                           "--json", path, "--plot", plot)
    assert code == 0 and f"wrote {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(path.read_text())
    assert [r["batch_size"] for r in results] == [1, 2]
    for r in results:  # the reported rate is the median of the per-round rates
        assert len(r["tokens_per_s_rounds"]["plain"]) == 2
        assert min(r["tokens_per_s_rounds"]["plain"]) <= r["tokens_per_s_plain"] <= max(r["tokens_per_s_rounds"]["plain"])


def test_bench_decode_tree_auto_reports_the_choice_apart(trained_run, corpus, capsys, tmp_path):
    path = tmp_path / "auto.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--tree", "auto",
                           "--num-prompts", 2, "--prompt-len", 8, "--max-new-tokens", 6, "--repeats", 1,
                           "--json", path)
    assert code == 0 and "--tree auto at batch size 1:" in out and "choosing took" in out
    result = json.loads(path.read_text())
    assert result["identical"] is True and result["tree_choice"]["seconds"] > 0
    assert result["tree_choice"]["table"][0]["tree"] == "plain"  # every size auto considered, plain first


def test_bench_decode_with_a_lookup_chain(trained_run, corpus, capsys, tmp_path):
    path = tmp_path / "lookup.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--tree",
                           "(0,), lookup 3", "--num-prompts", 2, "--prompt-len", 8, "--max-new-tokens", 8,
                           "--repeats", 1, "--json", path)
    assert code == 0 and "identical outputs  yes" in out and "draft tree         (0,), lookup 3" in out
    result = json.loads(path.read_text())
    assert result["tree"] == "(0,), lookup 3" and len(result["acceptance_per_position"]) == 3
    assert 0 <= result["copied_share"] <= 1
    # one extra head is read per step, whatever the copied drafts: 1 trunk layer + head 1 against + head 2
    assert result["memory_bound_limit"] == 2 / 3


def test_bench_decode_refuses_a_directory_before_measuring(trained_run, capsys, tmp_path):
    for flag, example in (("--json", "bench.json"), ("--plot", "decode.png")):
        code, out, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, flag, tmp_path)
        assert_one_line_error(code, err, f"{flag} {tmp_path} is a directory", example)
        assert "tokens/s" not in out  # refused before any decoding


# --- bad input: one line, non-zero, no traceback --------------------------------------------------------------------

def test_missing_checkpoint(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "nope", "--prompt", "x")
    assert_one_line_error(code, err, "does not exist")


def test_corrupt_checkpoint(trained_run, capsys):
    weights = sorted(trained_run.glob("checkpoints/step_*/model.safetensors"))[-1]
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x")
    assert_one_line_error(code, err, "corrupt or truncated")


def test_n_future_zero(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model.n_future", 0, "--max_steps", 1, "--out_dir", tmp_path / "r")
    assert_one_line_error(code, err, "model.n_future must be at least 1")


def test_prompt_longer_than_context(trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x" * 40)
    assert_one_line_error(code, err, "prompt is 40 tokens", "context is 32")
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x" * 20, "--max-new-tokens", 20)
    assert_one_line_error(code, err, "--max-new-tokens 12 or less")


def test_empty_data_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--data.path", tmp_path / "empty", "--max_steps", 1,
                           "--out_dir", tmp_path / "r")
    assert_one_line_error(code, err, "no text, .jsonl or .parquet files found under")


def test_unknown_config_key_on_command_line_and_in_yaml(capsys, tmp_path):
    # --max_steps 1 and a scratch out_dir: were the key wrongly accepted, the test fails fast instead of training.
    guard = ["--max_steps", 1, "--out_dir", tmp_path / "r"]
    code, _, err = run_cli(capsys, "train", "--model.n_futur", 2, *guard)
    assert_one_line_error(code, err, "--model.n_futur")
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  n_futur: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", config, *guard)
    assert_one_line_error(code, err, "n_futur")


def test_wrong_type_and_missing_arguments(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model.n_future", "four", "--max_steps", 1, "--out_dir", tmp_path)
    assert_one_line_error(code, err, "model.n_future")
    code, _, err = run_cli(capsys, "generate", "--prompt", "x")
    assert_one_line_error(code, err, "ckpt")


def test_speculative_bad_input(trained_run, corpus, tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x", "--speculative",
                           "--draft-len", 2)
    assert_one_line_error(code, err, "draft length 2 is out of range", "use 1..1")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--prompts", empty)
    assert_one_line_error(code, err, "has no prompts")
    next_token_only = tmp_path / "ntp"
    assert run_cli(capsys, "train", *tiny_args(n_future=1), "--data", corpus, "--out_dir", next_token_only)[0] == 0
    code, _, err = run_cli(capsys, "generate", "--ckpt", next_token_only, "--prompt", "x", "--speculative")
    assert_one_line_error(code, err, "next-token-only model")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", next_token_only)
    assert_one_line_error(code, err, "next-token-only model", "--tree \"lookup 4\"")
    # copies from the context alone need no heads: the benchmark compares them with plain decoding
    path = tmp_path / "copies.json"
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", next_token_only, "--data", corpus, "--tree", "lookup 3",
                           "--num-prompts", 2, "--prompt-len", 8, "--max-new-tokens", 8, "--repeats", 1,
                           "--json", path)
    assert code == 0 and "identical outputs  yes" in out
    result = json.loads(path.read_text())
    assert result["tree"] == "lookup 3" and result["identical"] and result["copied_share"] is None
    code, out, _ = run_cli(capsys, "bench", "decode", "--ckpt", next_token_only, "--data", corpus, "--tree", "auto",
                           "--num-prompts", 2, "--prompt-len", 8, "--max-new-tokens", 8, "--repeats", 1)
    assert code == 0 and "--tree auto at batch size 1:" in out and "identical outputs  yes" in out
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", next_token_only, "--tree", "auto", "--temperature", 0.5)
    assert_one_line_error(code, err, "verified greedily")


@pytest.mark.slow
def test_real_process_exit_code_and_no_traceback(tmp_path):
    """The installed entry point, in its own process: what a shell user sees."""
    env = {**os.environ, "MULTITOKEN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "multitoken", "info", "--ckpt", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: checkpoint") and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "multitoken", "--debug", "info", "--ckpt", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr  # --debug shows it


def test_help_documents_every_setting(capsys):
    """--help text comes from the config dataclasses' field docstrings (one schema, documented once)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for text in ("Optimizer steps to train for.", "Output heads: head i predicts token t+i.",
                 "Peak learning rate.", "--data PATH"):
        assert text in " ".join(out.split()), text
