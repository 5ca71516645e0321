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
from multitoken.errors import ConfigError
from multitoken.experiments.common import Budget, RunSpec, Shape, prepare_documents, word_tokenizer
from multitoken.experiments.report import groups, in_order, mean_sd
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


# --- the experiment's protocol (see `runner.py`) ----------------------------------------------------------------------

UNIT = "percent"
QUICK_BUDGET = Budget(tokens=49_152, seq_len=128, batch_tokens=2048, evaluations=2, lr=3e-3)


def setup_from_args(a) -> Setup:
    if not 0 < a.p_fresh <= 1:
        raise ConfigError(f"--p_fresh must be in (0, 1] (got {a.p_fresh})")
    return Setup(p_fresh=a.p_fresh, test_stories=40 if a.quick else a.test_stories,
                 copy_sequences=10 if a.quick else 100)


def specs(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int], a) -> list[RunSpec]:
    return grid(sizes, n_futures, seeds)


def summarize(evals: list[dict]) -> dict:
    """A run's record fields beyond the common ones: its best checkpoint and its curve."""
    best = max(evals, key=lambda e: e["induction"]) if evals else {}
    return {"best": best, "curve": [[e["tokens"], e["induction"]] for e in evals]}


def reference(setup: dict) -> None:
    return None


def table(records: list[dict], reference: dict | None = None) -> str:
    lines = ["| size | non-embedding params | n | seeds | induction (best) | induction (final) | first mention "
             "(final) | copy (final) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (size, n), rs in groups(records).items():
        lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | "
                     f"{mean_sd([r['best']['induction'] for r in rs])} | "
                     f"{mean_sd([r['final']['induction'] for r in rs])} | "
                     f"{mean_sd([r['final']['first_mention'] for r in rs])} | "
                     f"{mean_sd([r['final']['copy'] for r in rs])} |")
    lines += ["", f"Every run: its best checkpoint, and when it formed induction (first checkpoint at or above "
              f"{100 * FORMED:.0f}%, about {FORMED / CHANCE:.0f}x chance)", "",
              "| run | n | seed | best | best at (tokens) | formed at (tokens) | final |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in in_order(records):
        formed = next((tokens for tokens, value in r.get("curve", []) if value >= FORMED), None)
        lines.append(f"| {r['run']} | {r['n_future']} | {r['seed']} | {100 * r['best']['induction']:.1f} | "
                     f"{r['best']['tokens'] / 1e6:.1f}M | {f'{formed / 1e6:.1f}M' if formed else 'never'} | "
                     f"{100 * r['final']['induction']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path, reference: dict | None = None) -> None:
    from multitoken.experiments.plots import plot_induction

    plot_induction(records, path, CHANCE)
