"""The streaming safetensors writer: what it writes is what safetensors itself reads back."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from multitoken.interop.tensors import LazyTensor, safetensors_tensors, write_safetensors


def test_written_file_reads_back_with_safetensors(tmp_path):
    tensors = {"b": torch.randn(3, 5), "a.weight": torch.arange(7, dtype=torch.int64), "c": torch.randn(2, 2, 2),
               "h": torch.randn(4).to(torch.bfloat16), "flag": torch.tensor([True, False])}
    lazy = {n: LazyTensor(tuple(t.shape), t.dtype, lambda t=t: t) for n, t in tensors.items()}
    size = write_safetensors(tmp_path / "x.safetensors", lazy, metadata={"format": "pt", "note": "hi"})
    back = load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys() and all(torch.equal(back[n], tensors[n]) for n in tensors)
    assert size == (tmp_path / "x.safetensors").stat().st_size
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "note": "hi"}
    # Same tensors as safetensors' own writer stores them
    save_file(tensors, tmp_path / "ref.safetensors")
    reread = safetensors_tensors(tmp_path / "ref.safetensors")
    assert all(torch.equal(reread[n].load(), back[n]) for n in tensors)


def test_floating_tensors_are_cast_and_others_kept(tmp_path):
    lazy = {"w": LazyTensor((2, 3), torch.float32, lambda: torch.ones(2, 3) / 3),
            "ids": LazyTensor((2,), torch.int64, lambda: torch.tensor([1, 2]))}
    write_safetensors(tmp_path / "x.safetensors", lazy, dtype=torch.bfloat16)
    back = load_file(tmp_path / "x.safetensors")
    assert back["w"].dtype == torch.bfloat16 and back["ids"].dtype == torch.int64
    assert torch.equal(back["w"], (torch.ones(2, 3) / 3).to(torch.bfloat16))


def test_tensors_are_loaded_one_at_a_time(tmp_path):
    alive = []

    def loader(i):
        def load():
            alive.append(i)
            return torch.full((4,), float(i))
        return load

    lazy = {f"t{i}": LazyTensor((4,), torch.float32, loader(i)) for i in range(5)}
    write_safetensors(tmp_path / "x.safetensors", lazy)
    assert alive == [0, 1, 2, 3, 4]  # each read once, in order, when its bytes are due
