"""Fixtures for the data tests: a tiny trained byte-level BPE and a small mixed-format corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = ["def", "return", "self", "value", "for", "in", "range", "if", "else", "print", "the", "quick", "brown",
         "fox", "über", "naïve", "данные", "数据", "(", ")", ":", "=", "+", "0", "42", "😀"]


def lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" " * rng.choice([0, 0, 4, 8]) + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))
            for _ in range(n)]


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> Path:
    """A byte-level BPE with a 300-token vocabulary, trained on a few KB, saved as a tokenizer folder."""
    pytest.importorskip("tokenizers")
    from multitoken.data.bpe import train_bpe

    directory = tmp_path_factory.mktemp("bpe")
    train_bpe(iter(["\n".join(lines(seed, 80)) for seed in range(8)]), vocab_size=300).save(directory)
    return directory


@pytest.fixture
def mixed_corpus(tmp_path) -> Path:
    """A folder with text files (one large enough to be cut into pieces), a .jsonl and a .parquet file."""
    root = tmp_path / "mixed"
    (root / "docs").mkdir(parents=True)
    for i in range(5):
        (root / "docs" / f"note{i}.txt").write_text("\n".join(lines(i, 20 + 10 * i)) + "\n")
    (root / "docs" / "big.txt").write_text("\n".join(lines(99, 600)) + "\n")
    (root / "docs" / "empty.txt").write_text("")
    with (root / "rows.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"id": i, "text": "\n".join(lines(100 + i, 3))}) + "\n")
            if i % 7 == 0:
                f.write("\n")  # blank lines are skipped
    write_parquet(root / "table.parquet", ["\n".join(lines(200 + i, 4)) for i in range(30)] + ["", None])
    return root


def write_parquet(path: Path, texts: list, column: str = "text", row_group_size: int = 7) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: pa.array(texts, type=pa.string()), "n": list(range(len(texts)))}), path,
                   row_group_size=row_group_size)
