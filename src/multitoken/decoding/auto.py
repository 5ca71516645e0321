"""`--tree auto`: the draft tree for this checkpoint, batch size and step cost, measured, down to plain decoding.

Two measurements decide it:

1. What the heads get right. Plain greedy decoding continues some validation prompts; one causal forward with all
   heads over each result gives, at every decoded position, the rank of the token greedy decoding really chose d + 1
   ahead among head d + 1's guesses. A tree accepts, per sample, its deepest node whose path is a prefix of those
   ranks, so the expected tokens per step of *every* tree follow from the same samples (`tree.best_trees`).
2. What a step costs. The static steps are timed at this batch size (compiled when decoding will be): plain decoding
   and trees of a few sizes, the sizes between interpolated.

The step times leave out what a decoding loop adds around a step (reading the accepted length back, moving the
accepted path's cache entries), so the few trees with the most expected tokens per second are then decoded end to end
on the same validation prompts, alternating with plain decoding, and the pick is the one measured fastest. Where no
tree beats plain decoding by a margin (large batches on a CPU, where extra tokens cost real arithmetic), the answer is
plain decoding: speculation never makes decoding slower than it would be without it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from multitoken.decoding.generate import generate
from multitoken.decoding.static import cache_slots, decoder_for
from multitoken.decoding.tree import DraftTree, best_trees
from multitoken.model import MTPModel

MAX_RANK = 8  # guesses per head considered (top-8)
MARGIN = 1.05  # a tree must promise, and then measure, at least this much over plain decoding to be chosen
CANDIDATES = 3  # trees decoded end to end before the pick


@torch.no_grad()
def head_ranks(model: MTPModel, prompts: torch.Tensor, max_new_tokens: int, depth: int,
               max_rank: int = MAX_RANK) -> torch.Tensor:
    """Ranks (S, depth) of greedy decoding's own tokens among the extra heads' guesses (-1: not in the top
    max_rank), one sample per decoded position. prompts (B, T0) of equal length."""
    B, T0 = prompts.shape
    continuation = generate(model, prompts, max_new_tokens)
    sequence = torch.cat([prompts, continuation], dim=1)  # (B, T0 + N)
    logits = model(sequence, return_all_heads=True)  # (B, T, heads, V), causal over the whole sequence
    ranks = []
    # At position p (the last accepted token), head d + 1 guesses the token at p + d + 1.
    for p in range(T0 - 1, T0 + max_new_tokens - 1 - depth):
        per_depth = []
        for d in range(1, depth + 1):
            head = logits[:, p, d]  # (B, V)
            truth = sequence[:, p + d + 1]
            rank = (head > head.gather(1, truth[:, None])).sum(-1)
            per_depth.append(torch.where(rank < max_rank, rank, -1))
        ranks.append(torch.stack(per_depth, dim=1))
    return torch.cat(ranks)


@dataclass
class TreeChoice:
    tree: DraftTree  # no paths: plain decoding
    tau: float  # expected tokens per step, from the samples
    step_us: float  # measured or interpolated step time
    plain_step_us: float
    table: list[dict]  # every size considered: nodes, tau, step_us, expected speedup (measured: end to end)

    @property
    def expected_speedup(self) -> float:
        return self.tau / self.step_us * self.plain_step_us


def _step_time(model: MTPModel, batch_size: int, cache_len: int, tree: DraftTree | None, compile: bool,
               rounds: int = 5, steps: int = 20) -> float:
    """Median microseconds of one static step at a position half way into the cache."""
    decoder = decoder_for(model, batch_size, cache_len, tree, compile)
    device = model.output.weight.device
    pos = torch.full((batch_size,), cache_len // 2, device=device)
    if tree is None:
        args = (torch.zeros(batch_size, dtype=torch.long, device=device), pos)
    else:
        args = (torch.zeros(batch_size, tree.num_nodes, dtype=torch.long, device=device), pos)
    times = []
    with decoder.caches, torch.no_grad():
        decoder.run_step(*args)  # compiles, the first time
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(steps):
                decoder.run_step(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(times)


def end_to_end_speedup(model: MTPModel, tree: DraftTree, prompts: torch.Tensor, max_new_tokens: int, compile: bool,
                       rounds: int = 3) -> float:
    """Median over alternating rounds of plain decoding's time over speculative decoding's with this tree."""
    from multitoken.decoding.speculative import speculative_generate

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        if prompts.device.type == "cuda":
            torch.cuda.synchronize(prompts.device)
        return time.perf_counter() - start

    def plain():
        generate(model, prompts, max_new_tokens, compile=compile)

    def speculative():
        speculative_generate(model, prompts, max_new_tokens, tree=tree, compile=compile)

    plain(), speculative()  # compiles, untimed
    ratios = []
    for round_ in range(rounds):
        if round_ % 2:
            s_time, p_time = timed(speculative), timed(plain)
        else:
            p_time, s_time = timed(plain), timed(speculative)
        ratios.append(p_time / s_time)
    return statistics.median(ratios)


def _time_sizes(model: MTPModel, trees: list[tuple[DraftTree, float]], sizes: list[int], plain_us: float,
                batch_size: int, cache_len: int, compile: bool) -> dict[int, float]:
    """Step times of the best trees of these sizes, smallest first, stopping at the first size whose step already
    costs more than the most any tree could accept makes up for: a tree's tokens per step never exceed the largest
    tree's tau, and a larger tree's step never costs less, so no larger size can reach MARGIN (on a CPU at batch 8
    that is often the first size, and every size not timed is a compilation saved)."""
    most_tau = trees[-1][1]
    measured = {}
    for size in sizes:
        measured[size] = _step_time(model, batch_size, cache_len, trees[size - 1][0], compile)
        if measured[size] * MARGIN > plain_us * most_tau:
            break
    return measured


def choose_tree(model: MTPModel, ranks: torch.Tensor, batch_size: int, needed_positions: int, compile: bool,
                max_nodes: int = 32, timed_sizes: tuple[int, ...] = (2, 4, 8, 16, 32),
                prompts: torch.Tensor | None = None, max_new_tokens: int = 0) -> TreeChoice:
    """The tree (or plain decoding) with the most tokens per second at this batch size: by expected tokens per step
    and step times, then, given prompts (batch_size rows of equal length), by decoding the best candidates."""
    trees = best_trees(ranks, max_nodes)  # index i: the best tree of i + 1 nodes
    cache_len = cache_slots(model, needed_positions)
    plain_us = _step_time(model, batch_size, cache_len, None, compile)
    sizes = sorted({min(s, len(trees)) for s in timed_sizes if s >= 2})
    measured = _time_sizes(model, trees, sizes, plain_us, batch_size, cache_len, compile)
    sizes = sorted(measured)

    def step_us(nodes: int) -> float:  # linear between the timed sizes (cost grows with the tokens per step)
        if nodes in measured:
            return measured[nodes]
        lower = max((s for s in sizes if s < nodes), default=sizes[0])
        upper = min((s for s in sizes if s > nodes), default=sizes[-1])
        if lower == upper:
            return measured[lower]
        w = (nodes - lower) / (upper - lower)
        return (1 - w) * measured[lower] + w * measured[upper]

    table = [{"nodes": 1, "tree": "plain", "tau": 1.0, "step_us": plain_us, "expected_speedup": 1.0}]
    for nodes in range(2, len(trees) + 1):
        tree, tau = trees[nodes - 1]
        us = step_us(nodes)
        table.append({"nodes": nodes, "tree": str(tree), "tau": tau, "step_us": us,
                      "expected_speedup": tau / us * plain_us})
    ranked = sorted(table[1:], key=lambda row: -row["expected_speedup"])
    candidates = [row for row in ranked[:CANDIDATES] if row["expected_speedup"] >= MARGIN]
    for row in candidates:
        if row["nodes"] not in measured:  # interpolated: time the very tree before trusting it
            row["step_us"] = _step_time(model, batch_size, cache_len, trees[row["nodes"] - 1][0], compile)
            row["expected_speedup"] = row["tau"] / row["step_us"] * plain_us
        if prompts is not None:
            row["measured_speedup"] = end_to_end_speedup(model, trees[row["nodes"] - 1][0], prompts, max_new_tokens,
                                                         compile)
    key = "measured_speedup" if prompts is not None else "expected_speedup"
    best = max(candidates, key=lambda row: row[key], default=None)
    if best is None or best[key] < MARGIN:
        return TreeChoice(DraftTree(()), 1.0, plain_us, plain_us, table)
    tree = trees[best["nodes"] - 1][0]
    return TreeChoice(tree, best["tau"], best["step_us"], plain_us, table)
