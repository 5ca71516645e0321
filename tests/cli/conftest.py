"""Shared pieces of the command-line tests: running the console script in-process, the one-line error check, and a
tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from multitoken.cli.main import main


def tiny_args(n_future: int = 2) -> list[str]:
    return ["--model.vocab_size", "256", "--model.d_model", "32", "--model.n_layer", "3", "--model.n_head", "2",
            "--model.n_future", str(n_future), "--model.max_seq_len", "32", "--batch_size", "4", "--max_steps", "4",
            "--eval_interval", "2", "--eval_batches", "2", "--save_interval", "2", "--log_interval", "1",
            "--progress", "false"]


TINY = tiny_args()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def trained_run(corpus, tmp_path, capsys) -> Path:
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", *TINY, "--data", corpus, "--out_dir", out_dir)
    assert code == 0
    assert "validation after 4 steps" in out and "checkpoint:" in out
    return out_dir
