"""Training and evaluating on data made by `multitoken prepare`, and the tokenizer check between data and checkpoint."""

import pytest

from tests.cli.conftest import TINY, assert_one_line_error, run_cli


def test_train_and_eval_on_prepared_shards_and_refuse_another_tokenizer(capsys, corpus, tmp_path):
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--tokenizer", "bytes", "--out", tmp_path / "prep",
                           "--val-fraction", "0.3")
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "prep", "--out_dir", tmp_path / "run", *TINY,
                             "--data.mask_documents", "true", "--data.order", "sequential")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "--ckpt", tmp_path / "run", "--data", tmp_path / "prep")
    assert code == 0 and "t+2" in out, err
    # The same folder prepared with a BPE tokenizer cannot be read by this byte-level checkpoint.
    pytest.importorskip("tokenizers")
    code, _, err = run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", "300", "--out",
                           tmp_path / "bpe")
    assert code == 0, err
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--tokenizer", tmp_path / "bpe", "--out",
                           tmp_path / "prep_bpe", "--val-fraction", "0.3")
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", "--ckpt", tmp_path / "run", "--data", tmp_path / "prep_bpe")
    assert_one_line_error(code, err, "another tokenizer", "prepare")
