"""Bad input on every subcommand: a specific one-line error naming the problem, before any long work; one spelling
style for options; nothing read or written because a file inside a checkpoint or a prepared folder said so."""

import json
import os
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file

from tests.cli.conftest import TINY, assert_one_line_error, run_cli


def newest(run):
    return sorted((run / "checkpoints").glob("step_*"))[-1]


# --- specific errors ---------------------------------------------------------------------------------------------------

def test_eval_errors(trained_run, corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(capsys, "eval", "--ckpt", trained_run, "--data", empty)
    assert_one_line_error(code, err, "holds no text to evaluate on")
    code, _, err = run_cli(capsys, "eval", "--ckpt", trained_run, "--data", corpus, "--batches", 0)
    assert_one_line_error(code, err, "--batches must be at least 1", "got 4 and 0")
    code, _, err = run_cli(capsys, "eval", "--ckpt", trained_run, "--data", "/dev/null")
    assert_one_line_error(code, err, "/dev/null is not a regular file or folder")


def test_corrupt_meta_json_is_named(trained_run, capsys):
    for damage in ("{not json", json.dumps({"tokens_seen": 3})):
        (newest(trained_run) / "meta.json").write_text(damage)
        code, _, err = run_cli(capsys, "info", "--ckpt", trained_run)
        assert_one_line_error(code, err, str(newest(trained_run) / "meta.json"), "is corrupt")


def test_seeds_and_prompts(trained_run, capsys, tmp_path):
    for seed in (-1, 2 ** 70):
        code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", "x", "--seed", seed)
        assert_one_line_error(code, err, "--seed must be in [0, 2**63)")
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python hands over a Latin-1 argument
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, "--prompt", bad)
    assert_one_line_error(code, err, "--prompt is not valid UTF-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--prompts", latin)
    assert_one_line_error(code, err, "is not UTF-8 text (byte 3)")


def test_bench_decode_settings(trained_run, corpus, capsys):
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--temperature", -1)
    assert_one_line_error(code, err, "--temperature must be >= 0")
    code, out, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--num-prompts", 2,
                             "--prompt-len", 8, "--max-new-tokens", 8, "--batch-size", 100000)
    assert_one_line_error(code, err, "--batch-size 100000 exceeds the 2 prompts")


def test_tokenizer_vocab_size_beyond_reason(corpus, tmp_path, capsys):
    code, _, err = run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 10 ** 12,
                           "--out", tmp_path / "tok")
    assert_one_line_error(code, err, "--vocab-size must be at most 1,048,576")


# --- the weights are the truth ----------------------------------------------------------------------------------------

def test_an_edited_config_yaml_is_caught_by_the_weights(trained_run, capsys):
    ckpt = newest(trained_run)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    config["model"]["max_seq_len"] = 4096  # would let generate run far past the trained context
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    for command in (["info"], ["generate", "--prompt", "x"]):
        code, _, err = run_cli(capsys, *command, "--ckpt", trained_run)
        assert_one_line_error(code, err, "does not describe the weights", "max_seq_len 32 -> 4096")


def test_info_counts_come_from_weights_even_without_a_saved_model_header(trained_run, capsys):
    ckpt = newest(trained_run)
    weights = load_file(ckpt / "model.safetensors")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})  # as checkpoints before the header
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    config["model"]["d_model"] = 64
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli(capsys, "info", "--ckpt", trained_run)
    assert_one_line_error(code, err, "does not describe the weights", "in the weights")


# --- one spelling style -------------------------------------------------------------------------------------------------

def test_dashes_and_underscores_and_bare_booleans_everywhere(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", *TINY, "--data", corpus, "--out-dir", run, "--data.mask-documents",
                           "--eval-batches", 1)
    assert code == 0 and yaml.safe_load((run / "config.yaml").read_text())["data"]["mask_documents"] is True
    code, out, _ = run_cli(capsys, "train", *TINY, "--data", corpus, "--out_dir", run, "--data.mask_documents",
                           "--max_steps", 6, "--resume")
    assert code == 0 and "validation after 6 steps" in out
    for spelling in ("--max-new-tokens", "--max_new_tokens"):
        code, out, err = run_cli(capsys, "generate", "--ckpt", run, "--prompt", "x", spelling, 3)
        assert code == 0 and "[3 tokens in" in err
    code, out, _ = run_cli(capsys, "eval", "--ckpt", run, "--data", corpus, "--batch_size", 2, "--batches", 1)
    assert code == 0


# --- nothing followed because a file said so -------------------------------------------------------------------------

def test_paths_inside_a_checkpoint_are_not_followed(trained_run, tmp_path, capsys):
    ckpt = newest(trained_run)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    private = tmp_path / "private"
    private.mkdir()
    (private / "notes.txt").write_text("not for a downloaded checkpoint to read\n" * 50)
    config["data"].update(path=[str(private)], cache_dir=str(tmp_path / ".." / "elsewhere"))
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    for command in (["eval"], ["bench", "decode"]):
        code, _, err = run_cli(capsys, *command, "--ckpt", ckpt)
        assert_one_line_error(code, err, f"trained on {private}", "does not read paths named inside a checkpoint",
                              f"--data {private}")
    assert not (tmp_path / ".." / "elsewhere").exists()
    # Named by the user, the same folder is read, and the cache goes where the user's settings say, not the file's.
    code, out, _ = run_cli(capsys, "eval", "--ckpt", ckpt, "--data", private)
    assert code == 0 and not (tmp_path / ".." / "elsewhere").exists()
    assert any((Path(os.environ["MULTITOKEN_CACHE"]) / "tokens").iterdir())  # the user's cache, not the file's
