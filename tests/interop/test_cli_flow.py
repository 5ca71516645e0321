"""The whole path for a model people already have, through the command line: convert a Hugging Face folder, use it,
give it heads with a frozen trunk, decode with them, export it back."""

from __future__ import annotations

import json
import sys

import pytest

from multitoken.cli.main import main
from tests.interop.conftest import make_hf_model

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")


def cli(capsys, *argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out + err


@pytest.mark.slow
def test_convert_use_add_heads_decode_export(tmp_path, corpus, capsys):
    transformers = pytest.importorskip("transformers")
    make_hf_model(tmp_path / "hf", num_key_value_heads=2, tie_word_embeddings=True)
    mt = tmp_path / "mt"
    out = cli(capsys, "convert", tmp_path / "hf", "--out", mt, "--progress", "false")
    assert "converted hf folder" in out and "tied embeddings" in out
    assert "unembedding (tied to input)" in cli(capsys, "info", "--ckpt", mt)
    assert "tokens/s" in cli(capsys, "generate", "--ckpt", mt, "--prompt", "w5 w6", "--max-new-tokens", "8")
    bench = cli(capsys, "bench", "decode", "--ckpt", mt, "--against-transformers", "--prompt-len", "8",
                "--num-prompts", "2", "--max-new-tokens", "8", "--repeats", "1", "--json", tmp_path / "b.json")
    assert "identical tokens: yes" in bench and json.loads((tmp_path / "b.json").read_text())["plain_vs_transformers"] > 0

    # Heads for the existing model: the trunk stays as it was, heads 2..3 start from head 1 and train
    cli(capsys, "train", "--init-from", mt, "--model.n_future", "3", "--freeze", "trunk", "--data", corpus,
        "--data.tokenizer", mt, "--seq_len", "16", "--max_steps", "3", "--batch_size", "2", "--eval_interval", "3",
        "--eval_batches", "1", "--out_dir", tmp_path / "heads", "--progress", "false")
    spec = cli(capsys, "generate", "--ckpt", tmp_path / "heads", "--prompt", "w5 w6", "--speculative",
               "--temperature", "0", "--max-new-tokens", "8")
    assert "speculative, draft length 2" in spec

    cli(capsys, "export", "--ckpt", tmp_path / "heads", "--format", "hf", "--out", tmp_path / "back",
        "--progress", "false")
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").config.tie_word_embeddings
    assert json.loads((tmp_path / "back" / "mtp_heads.json").read_text())["n_future"] == 3
