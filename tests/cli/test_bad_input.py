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
    assert_one_line_error(code, err, f"--data {empty} holds no text")
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


# --- the last rows of the fuzz: each fixed where it arises ----------------------------------------------------------

def test_runs_too_large_for_the_machine_are_refused_up_front(tmp_path, capsys):
    """An estimate of the memory a run needs, against what the machine has, before anything is allocated."""
    import time

    start = time.perf_counter()
    code, _, err = run_cli(capsys, "train", *TINY, "--batch_size", 10 ** 9, "--out_dir", tmp_path / "a")
    assert_one_line_error(code, err, "needs about", "available", "--batch_size")
    code, _, err = run_cli(capsys, "train", *TINY, "--model.vocab_size", 10 ** 8, "--out_dir", tmp_path / "b")
    assert_one_line_error(code, err, "needs about", "--model.vocab_size")
    code, _, err = run_cli(capsys, "bench", "train", "--vocab-size", 10 ** 13)
    assert_one_line_error(code, err, "bench train at --vocab-size 10000000000000 needs about", "--vocab-size")
    assert time.perf_counter() - start < 60 and not (tmp_path / "a").exists()


def test_a_checkpoint_named_by_its_checkpoints_folder_or_a_file_in_it(trained_run, tmp_path, capsys):
    args = ["--prompt", "def", "--max-new-tokens", 4, "--temperature", 0]
    expected = run_cli(capsys, "generate", "--ckpt", trained_run, *args)[1]
    for ckpt in (trained_run / "checkpoints", newest(trained_run) / "model.safetensors"):
        code, out, _ = run_cli(capsys, "generate", "--ckpt", ckpt, *args)
        assert code == 0 and out == expected
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "notes.txt", *args)
    assert_one_line_error(code, err, "is a file: pass the checkpoint folder")


def test_damaged_checkpoint_files_are_named(trained_run, capsys):
    ckpt = newest(trained_run)
    config = (ckpt / "config.yaml").read_text()
    (ckpt / "config.yaml").write_text("")
    code, _, err = run_cli(capsys, "generate", "--ckpt", ckpt, "--prompt", "x")
    assert_one_line_error(code, err, "config.yaml is empty")
    (ckpt / "config.yaml").write_text(config)
    (ckpt / "model.safetensors").rename(ckpt / "weights.bak")
    code, _, err = run_cli(capsys, "generate", "--ckpt", ckpt, "--prompt", "x")
    assert_one_line_error(code, err, "incomplete (missing model.safetensors)")


def test_config_files_empty_or_with_a_key_twice(corpus, tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "empty.yaml")
    assert_one_line_error(code, err, "empty.yaml is empty")
    (tmp_path / "twice.yaml").write_text("model:\n  n_layer: 2\n  d_model: 32\n  n_layer: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "twice.yaml")
    assert_one_line_error(code, err, "twice.yaml line 4: 'n_layer' is given twice")


def test_output_folders_that_are_files(corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    code, _, err = run_cli(capsys, "train", *TINY, "--data", corpus, "--out_dir", tmp_path / "file")
    assert_one_line_error(code, err, f"--out_dir {tmp_path / 'file'} is a file, not a folder")
    code, _, err = run_cli(capsys, "train", *TINY, "--data", corpus, "--data.cache_dir", tmp_path / "file",
                           "--out_dir", tmp_path / "run")
    assert_one_line_error(code, err, f"--data.cache_dir {tmp_path / 'file'} is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine"


def test_bench_decode_names_the_input_as_given(trained_run, corpus, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", tmp_path / "empty.txt")
    assert_one_line_error(code, err, "--data", "empty.txt holds no text")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", trained_run, "--data", corpus, "--prompt-len", 5000)
    assert_one_line_error(code, err, "--prompt-len is 5000 tokens")


def test_binary_and_empty_data_files(trained_run, tmp_path, capsys):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"PK\x03\x04\x00\x00" * 100)
    for argv in (["train", *TINY, "--data", binary, "--out_dir", tmp_path / "r"],
                 ["eval", "--ckpt", trained_run, "--data", binary],
                 ["prepare", "--data", binary, "--out", tmp_path / "p"],
                 ["tokenizer", "train", "--data", binary, "--vocab-size", 300, "--out", tmp_path / "t"]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, "blob.bin is binary")
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run_cli(capsys, "prepare", "--data", tmp_path / "empty.txt", "--out", tmp_path / "p")
    assert_one_line_error(code, err, "holds no text")
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()


def test_every_option_of_every_subcommand_has_its_dashed_twin():
    """The spellings are declared on the parser (nothing rewrites the command line): walk every subcommand."""
    import argparse

    from multitoken.cli.main import build_parser
    from multitoken.cli.spellings import _subparsers

    seen, parsers = 0, [build_parser()]
    while parsers:
        parser = parsers.pop()
        parsers += _subparsers(parser)
        names = parser._option_string_actions
        for name, action in names.items():
            if name.startswith("--") and "_" in name and action.help is not argparse.SUPPRESS:
                assert names.get(name.replace("_", "-")) is action, name
                seen += 1
        assert names["--debug"].dest == "debug"
    assert seen > 80  # every subcommand was reached
