"""Experiment: does multi-token training build induction heads earlier in small models? (paper section 4.1, Fig. 7)

Models of several sizes train with n = 1 and n = 2 (parameter-matched) on procedural stories (`stories.py`) where a
character gets a fresh two-token name with probability p. The metric, on test stories whose names are all held-out
pairs: head 1's argmax accuracy at the second token of every repeat mention of a name ("induction success"),
teacher-forced. Controls: the same at first mentions (chance: 1/48), and copying a repeated random word sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multitoken.experiments import stories
from multitoken.config import DataConfig
from multitoken.data.tokenizer import BPETokenizer
from multitoken.experiments.common import Budget, RunSpec, Shape, prepare_documents, word_tokenizer
from multitoken.model import MTPModel

# Protocol sizes (d_model / layers / attention heads); layers >= 3 keeps the two layers induction needs on the
# next-token path of an n = 2 model.
SIZES = {"0.15M": Shape(64, 3, 4), "0.45M": Shape(96, 4, 4), "1M": Shape(128, 5, 4), "3M": Shape(256, 4, 8)}
QUICK_SIZES = {"tiny": Shape(32, 3, 2)}
DATA_SEED, TEST_SEED, COPY_SEED = 1000, 2000, 3000
CHANCE = 1 / len(stories.S2)
FORMED = 0.10  # success at repeat mentions that counts as induction formed: about 5x chance


@dataclass(frozen=True)
class Setup:
    p_fresh: float = 0.05
    test_stories: int = 500
    copy_sequences: int = 100


def tokenizer():
    return word_tokenizer(stories.vocabulary())


def training_texts(budget: Budget, setup: Setup) -> list[str]:
    """Enough stories for the token budget (about 82 words each), the same for every run of a grid."""
    count = int(budget.tokens / 80 * 1.1) + 50
    return [s.text for s in stories.training_stories(DATA_SEED, count, setup.p_fresh)]


def _accuracy_at(model: MTPModel, sequences: list[list[int]], positions: list[list[int]], device) -> tuple[int, int]:
    """Head 1's argmax hits at the given token positions (each predicted from the position before), teacher-forced;
    sequences are right-padded into batches (causal attention: padding after a position cannot change it). Returns
    (hits, scored positions)."""
    context = getattr(getattr(model, "config", None), "max_seq_len", None)
    if context is not None:  # a story longer than the model's context is scored as far as the context reaches
        positions = [[i for i in pos if i < context] for pos in positions]
        sequences = [seq[:context] for seq in sequences]
    hits = total = 0
    for start in range(0, len(sequences), 64):
        batch, where = sequences[start:start + 64], positions[start:start + 64]
        width = max(len(s) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long, device=device)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq, device=device)
        predicted = model(ids).argmax(-1)  # (B, T): the token after each position
        for row, (seq, pos) in enumerate(zip(batch, where)):
            for i in pos:
                hits += int(predicted[row, i - 1].item() == seq[i])
                total += 1
    return hits, total


def make_metric(setup: Setup, device: torch.device, tokenizer_, seq_len: int):
    """The metric function for checkpoints: induction success, first-mention accuracy and the copy control."""
    tests = stories.test_stories(TEST_SEED, setup.test_stories)
    eot = [tokenizer_.eot_id]  # each story is a document: it follows an end-of-text token, as in training
    seqs = [eot + tokenizer_.encode(s.text) for s in tests]
    repeats = [[i + 1 for i in s.repeat_s2] for s in tests]
    firsts = [[i + 1 for i in s.first_s2] for s in tests]
    copies = [eot + tokenizer_.encode(" ".join(words)) for words in stories.copy_sequences(COPY_SEED,
                                                                                           setup.copy_sequences)]
    half = (len(copies[0]) - 1) // 2
    copy_positions = [list(range(1 + half, len(c))) for c in copies]

    def metric(model: MTPModel) -> dict:
        model.eval()
        hits, total = _accuracy_at(model, seqs, repeats, device)
        first_hits, first_total = _accuracy_at(model, seqs, firsts, device)
        copy_hits, copy_total = _accuracy_at(model, copies, copy_positions, device)
        return {"induction": hits / total, "first_mention": first_hits / first_total, "copy": copy_hits / copy_total,
                "scored": total}

    return metric


def grid(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(size, shape, n, seed) for size, shape in sizes.items() for seed in seeds for n in n_futures]


def data(budget: Budget, setup: Setup, out: Path) -> tuple[DataConfig, BPETokenizer]:
    """The generated training documents, prepared once under OUT/data, and their tokenizer."""
    return prepare_documents(lambda: training_texts(budget, setup), tokenizer(), out / "data")
