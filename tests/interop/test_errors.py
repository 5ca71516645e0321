"""Bad input to convert and export: one line naming the problem and the fix, no traceback, nothing at --out."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from multitoken.cli.main import main
from tests.interop.test_meta import write_meta_folder

needs_transformers = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()  # drop what building the fixture printed (transformers' progress bars)
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


def assert_nothing_written(out) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]


def test_folder_of_neither_format(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "weights.bin").write_bytes(b"\0" * 16)
    code, err = run_cli(capsys, "convert", str(tmp_path / "src"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "neither a Hugging Face model folder", "params.json")
    assert_nothing_written(tmp_path / "out")


# Look-alikes of the supported families that the one block cannot compute: transformers' class, the config fields
# beyond a tiny Llama's that it needs, and the reason the refusal gives.
UNSUPPORTED = {
    "Phi3": (dict(pad_token_id=0), "it fuses q, k and v"),
    "Mixtral": (dict(num_local_experts=2, num_experts_per_tok=1), "it is a mixture of experts"),
    "Qwen2Moe": (dict(moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=2,
                      num_experts_per_tok=1), "it is a mixture of experts"),
    "Qwen3Moe": (dict(moe_intermediate_size=16, num_experts=2, num_experts_per_tok=1), "it is a mixture of experts"),
    "Gemma2": (dict(head_dim=16), "it soft-caps attention and logits"),
}


@needs_transformers
@pytest.mark.parametrize("family", list(UNSUPPORTED))
def test_unsupported_architecture(tmp_path, capsys, family):
    transformers = pytest.importorskip("transformers")
    config_class = getattr(transformers, f"{family}Config", None)
    if config_class is None:
        pytest.skip(f"this transformers has no {family}Config")
    extra, reason = UNSUPPORTED[family]
    config = config_class(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, **extra)
    getattr(transformers, f"{family}ForCausalLM")(config).save_pretrained(tmp_path / "model")
    code, err = run_cli(capsys, "convert", str(tmp_path / "model"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"{family}ForCausalLM is not supported ({reason})", "Gemma3ForCausalLM")
    assert_nothing_written(tmp_path / "out")


@needs_transformers
def test_missing_shard(tmp_path, capsys):
    from tests.interop.conftest import make_hf_model

    make_hf_model(tmp_path / "hf", shard_size="60KB")
    shard = sorted((tmp_path / "hf").glob("model-*.safetensors"))[-1]
    shard.unlink()
    code, err = run_cli(capsys, "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, shard.name, "missing")
    assert_nothing_written(tmp_path / "out")


@needs_transformers
def test_shapes_that_contradict_the_config(tmp_path, capsys):
    from tests.interop.conftest import make_hf_model

    make_hf_model(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["intermediate_size"] = 128  # the saved MLP is 96 wide
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    code, err = run_cli(capsys, "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "mlp.", "contradict")
    assert_nothing_written(tmp_path / "out")


def test_out_that_exists(tmp_path, capsys):
    write_meta_folder(tmp_path / "meta")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "convert", str(tmp_path / "meta"), "--out", str(tmp_path / "out"), "--tokenizer",
                        "bytes")
    assert_one_line_error(code, err, "already exists")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    code, err = run_cli(capsys, "export", "--ckpt", str(tmp_path / "meta"), "--format", "hf", "--out",
                        str(tmp_path / "out"))
    assert_one_line_error(code, err, "already exists")


class _RunsCode:
    """Unpickling this would run a shell command (what a hostile checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_refused_unrun(tmp_path, capsys):
    folder = tmp_path / "meta"
    write_meta_folder(folder)
    marker = tmp_path / "pwned"
    state = torch.load(folder / "consolidated.00.pth", weights_only=True)
    state["norm.weight"] = _RunsCode(marker)
    torch.save(state, folder / "consolidated.00.pth")
    code, err = run_cli(capsys, "convert", str(folder), "--out", str(tmp_path / "out"), "--tokenizer", "bytes")
    assert_one_line_error(code, err, "consolidated.00.pth", "not run")
    assert not marker.exists()
    assert_nothing_written(tmp_path / "out")


def test_missing_meta_shard_and_no_tokenizer(tmp_path, capsys):
    write_meta_folder(tmp_path / "meta", shards=2)
    code, err = run_cli(capsys, "convert", str(tmp_path / "meta"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "no tokenizer.json or tokenizer.model", "--tokenizer")
    (tmp_path / "meta" / "consolidated.00.pth").unlink()
    code, err = run_cli(capsys, "convert", str(tmp_path / "meta"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "consolidated.00.pth", "missing")
    assert_nothing_written(tmp_path / "out")


def test_pytorch_bin_only_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
                                                    "hidden_size": 8, "intermediate_size": 8,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2}))
    (folder / "pytorch_model.bin").write_bytes(b"\0")
    code, err = run_cli(capsys, "convert", str(folder), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "pytorch_model", "safetensors")


@needs_transformers
def test_convert_checks_disk_and_memory_before_writing(tmp_path, capsys, monkeypatch):
    """A conversion the disk or the memory cannot hold is refused with the sizes, before anything is written."""
    import shutil
    from collections import namedtuple

    from tests.interop.conftest import make_hf_model

    make_hf_model(tmp_path / "hf")
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 6, 10 ** 6 - 100, 100))
    code, err = run_cli(capsys, "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "the converted weights take", "GB free", "--dtype")
    assert_nothing_written(tmp_path / "out")
    monkeypatch.setattr(shutil, "disk_usage", real)
    monkeypatch.setattr("multitoken.training.memory.available_bytes", lambda device: 1000)
    code, err = run_cli(capsys, "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "converting needs about", "of memory for its largest tensor")
    assert_nothing_written(tmp_path / "out")


@needs_transformers
def test_a_stop_string_the_tokenizer_cannot_write_is_refused(tmp_path, capsys):
    from tests.interop.conftest import make_hf_model

    make_hf_model(tmp_path / "hf")  # a word-level tokenizer: words outside its vocabulary cannot be written
    code, err = run_cli(capsys, "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "mt"))
    assert code == 0, err
    code, err = run_cli(capsys, "generate", "--ckpt", str(tmp_path / "mt"), "--prompt", "w1", "--stop",
                        '["zebra"]')
    assert_one_line_error(code, err, "--stop 'zebra' cannot occur in this model's output")
    code, err = run_cli(capsys, "generate", "--ckpt", str(tmp_path / "mt"), "--prompt", "w1", "--stop", '["w5"]',
                        "--max-new-tokens", "4")
    assert code == 0
