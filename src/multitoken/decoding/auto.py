"""`--tree auto`: the draft tree for this checkpoint, batch size and step cost, measured, down to plain decoding.

Two measurements decide it:

1. What the drafts get right. Plain greedy decoding continues some validation prompts; one causal forward with all
   heads over each result gives, at every decoded position, the rank of the token greedy decoding really chose d + 1
   ahead among head d + 1's guesses; and the context there gives the tokens a copy from it would offer (`lookup.py`),
   which of them greedy decoding chose, and whether the match was strong. A tree accepts, per sample, its deepest
   node whose token is greedy decoding's, its nodes filled as decoding fills them (the copy on the first-choice path
   where the match is strong), so the expected tokens per step of *every* tree, with or without copies, follow from
   the same samples (`tree.best_trees`, `best_draft_trees`).
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
from multitoken.decoding.lookup import STRONG_MATCH, lookup_drafts
from multitoken.decoding.static import cache_slots, decoder_for
from multitoken.decoding.tree import DraftTree, best_trees
from multitoken.model import MTPModel

MAX_RANK = 8  # guesses per head considered (top-8)
LOOKUP_LENGTHS = (1, 2, 3, 4, 6)  # depths of the first-choice path that copies may take over
MARGIN = 1.05  # a tree must promise, and then measure, at least this much over plain decoding to be chosen
CANDIDATES = 3  # trees decoded end to end before the pick


@dataclass
class DraftSamples:
    """What drafts would have got right, one sample per decoded position of greedy decoding."""

    ranks: torch.Tensor  # (S, depth): rank of greedy decoding's token d + 1 ahead among head d + 1's guesses, or -1
    # Copies from the context (None: not measured): which of the copied tokens greedy decoding chose (S, L), the rank
    # of each copied token among that depth's head guesses or -1 (S, min(depth, L)), and a strong match (S,).
    copy_right: torch.Tensor | None = None
    copy_ranks: torch.Tensor | None = None
    strong: torch.Tensor | None = None
    drafter: bool = False  # the ranks are among the drafter's guesses (its chain on greedy decoding's own tokens)


def _rank(logits: torch.Tensor, token: torch.Tensor, max_rank: int) -> torch.Tensor:
    rank = (logits > logits.gather(1, token[:, None])).sum(-1)
    return torch.where(rank < max_rank, rank, -1)


def _head_ranker(model: MTPModel, sequence: torch.Tensor, depth: int, max_rank: int):
    """rank(d, p, tokens (B,)): each token's rank among head d + 1's guesses at position p."""
    logits = model(sequence, return_all_heads=True) if depth else None  # (B, T, heads, V), causal
    return lambda d, p, tokens: _rank(logits[:, p, d], tokens, max_rank)


def _drafter_ranker(model: MTPModel, sequence: torch.Tensor, depth: int, max_rank: int):
    """rank(d, p, tokens (B,)): each token's rank among the drafter's guesses d deep from position p, its chain fed
    greedy decoding's own tokens (what decoding feeds it wherever its earlier guesses were right); -1 for a token
    outside its draft vocabulary."""
    T = sequence.shape[1] - 1
    _, features = model.trunk_features(sequence[:, :T])
    reads = [torch.nn.functional.pad(sequence[:, 1 + s:], (0, s)) for s in range(depth)]
    logits = [model.drafter.logits(y) for y in model.drafter_states(features, reads)]  # per depth (B, T, Vd)
    ids = model.drafter_ids()
    column = torch.full((model.config.vocab_size,), -1, dtype=torch.long, device=sequence.device)
    column[ids] = torch.arange(len(ids), device=sequence.device)

    def rank(d: int, p: int, tokens: torch.Tensor) -> torch.Tensor:
        col = column[tokens]
        return torch.where(col >= 0, _rank(logits[d - 1][:, p], col.clamp_min(0), max_rank), -1)

    return rank


@torch.no_grad()
def draft_samples(model: MTPModel, prompts: torch.Tensor, max_new_tokens: int, depth: int,
                  max_rank: int = MAX_RANK, max_lookup: int = max(LOOKUP_LENGTHS),
                  drafter: bool = False) -> DraftSamples:
    """At each decoded position of greedy decoding: the ranks of its own tokens among the extra heads' guesses, or
    the drafter's (-1: not in the top max_rank), and what a copy from the context would have offered (up to
    max_lookup tokens). prompts (B, T0) of equal length; depth 0: copies only (no heads)."""
    B, T0 = prompts.shape
    continuation = generate(model, prompts, max_new_tokens)
    sequence = torch.cat([prompts, continuation], dim=1)  # (B, T0 + N)
    rank = (_drafter_ranker if drafter and depth else _head_ranker)(model, sequence, depth, max_rank)
    ranks, rights, copy_ranks, strong = [], [], [], []
    end = T0 + max_new_tokens
    # At position p (the last accepted token; the next one, at p + 1, is certain), head d + 1 guesses the token at
    # p + d + 1 and the copy starts at p + 2.
    for p in range(T0 - 1, end - 1 - max(depth, 1)):
        copied, matched = lookup_drafts(sequence, torch.full((B,), p + 2, device=sequence.device), max_lookup)
        truth = sequence[:, p + 2:p + 2 + max_lookup]
        right = torch.zeros(B, max_lookup, dtype=torch.bool, device=sequence.device)
        right[:, :truth.shape[1]] = copied[:, :truth.shape[1]] == truth
        rights.append(right)
        strong.append(matched >= STRONG_MATCH)
        ranks.append(torch.stack([rank(d, p, sequence[:, p + d + 1]) for d in range(1, depth + 1)], dim=1)
                     if depth else torch.zeros(B, 0, dtype=torch.long, device=sequence.device))
        copy_ranks.append(torch.stack([rank(d, p, copied[:, d - 1]) for d in range(1, min(depth, max_lookup) + 1)],
                                      dim=1) if depth else torch.zeros(B, 0, dtype=torch.long, device=sequence.device))
    return DraftSamples(torch.cat(ranks).cpu(), torch.cat(rights).cpu(), torch.cat(copy_ranks).cpu(),
                        torch.cat(strong).cpu(), drafter=drafter and depth > 0)


def accepted_drafts(tree: DraftTree, samples: DraftSamples) -> torch.Tensor:
    """Drafts the tree accepts on each sample (S,): its tokens filled as decoding fills them (`tree.with_copies`:
    the copy on the first-choice path where the match is strong, its siblings one rank past the copied token), and
    walked down from the root while a child holds greedy decoding's next token."""
    heads, copies = set(tree.paths), set(tree.copy_paths) | {p for p in tree.paths if not any(p)}
    rows = samples.ranks.tolist()
    use_copies = tree.lookup and samples.copy_right is not None
    rights = samples.copy_right.tolist() if use_copies else None
    copy_ranks = samples.copy_ranks.tolist() if use_copies else None
    strong = samples.strong.tolist() if use_copies else None
    counts = []
    for s, ranks in enumerate(rows):
        path: tuple[int, ...] = ()
        while True:
            d = len(path)  # the child's depth is d + 1
            zero = path + (0,)
            copy_here = use_copies and zero in copies and d < tree.lookup
            if copy_here and (strong[s] or zero in tree.copy_paths):  # this depth's first choice is the copy
                if rights[s][d]:
                    path = zero
                    continue
                if zero in tree.copy_paths or d >= len(ranks) or ranks[d] < 0:
                    break
                # the siblings hold the head's guesses without the copied token: one rank up past it
                r = ranks[d] - (1 if 0 <= copy_ranks[s][d] < ranks[d] else 0) if d < len(copy_ranks[s]) else ranks[d]
                child = path + (r + 1,)
            else:
                if d >= len(ranks) or ranks[d] < 0:
                    break
                child = path + (ranks[d],)
            if child not in heads:
                break
            path = child
        counts.append(len(path))
    return torch.tensor(counts, dtype=torch.float)


def best_draft_trees(samples: DraftSamples, max_nodes: int) -> dict[int, tuple[DraftTree, float]]:
    """Node count -> the tree of that many nodes with the most expected tokens per step on these samples, among the
    heads' best trees (`best_trees`), each as it is and copying from the context down its first-choice path to
    `LOOKUP_LENGTHS` tokens (deeper than the path, with nodes added). Not every count need be there (without heads,
    only 1 + a lookup length)."""
    head_trees = [(DraftTree(tree.paths, drafter=samples.drafter), tau)
                  for tree, tau in best_trees(samples.ranks, max_nodes)]
    best: dict[int, tuple[DraftTree, float]] = {i + 1: entry for i, entry in enumerate(head_trees)}
    if samples.copy_right is None:
        return best
    for tree, _ in head_trees:
        for length in LOOKUP_LENGTHS:
            copying = tree.with_lookup(length)
            if copying.num_nodes > max_nodes:
                break
            tau = 1 + accepted_drafts(copying, samples).mean().item()
            if copying.num_nodes not in best or tau > best[copying.num_nodes][1]:
                best[copying.num_nodes] = (copying, tau)
    return dict(sorted(best.items()))


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

    @property
    def measured_speedup(self) -> float:
        """The pick's end-to-end speedup where it was decoded (plain decoding: 1), else its expected one."""
        rows = [row for row in self.table if row.get("tree") == str(self.tree) and "measured_speedup" in row]
        return rows[0]["measured_speedup"] if rows else (1.0 if not self.tree.drafts else self.expected_speedup)


DRAFTER_DEPTH = 4  # how deep auto lets the drafter chain (each level is one more drafter step)


def choose_source(model: MTPModel, prompts: torch.Tensor, max_new_tokens: int, batch_size: int, compile: bool,
                  rows: torch.Tensor | None = None) -> TreeChoice:
    """`choose_tree` for each draft source the model has (its heads; its drafter; copies from the context with
    either, or alone), and the fastest pick of them, measured end to end on rows (batch_size prompts)."""
    needed = prompts.shape[1] + max_new_tokens
    sources = [] if model.n_future == 1 and hasattr(model, "drafter") else [(model.n_future - 1, False)]
    if hasattr(model, "drafter"):
        sources.append((DRAFTER_DEPTH, True))
    choices = []
    for depth, drafter in sources:
        samples = draft_samples(model, prompts, max_new_tokens, depth, drafter=drafter)
        choices.append(choose_tree(model, samples, batch_size, needed, compile, prompts=rows,
                                   max_new_tokens=max_new_tokens))
    best = max(choices, key=lambda c: c.measured_speedup)
    best.table = [row for choice in choices for row in choice.table]
    return best


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


def _time_sizes(model: MTPModel, trees: dict[int, tuple[DraftTree, float]], sizes: list[int], plain_us: float,
                batch_size: int, cache_len: int, compile: bool) -> dict[int, float]:
    """Step times of the best trees of these sizes, smallest first, stopping at the first size whose step already
    costs more than the most any tree could accept makes up for: a tree's tokens per step never exceed the largest
    tree's tau, and a larger tree's step never costs less, so no larger size can reach MARGIN (on a CPU at batch 8
    that is often the first size, and every size not timed is a compilation saved)."""
    most_tau = max(tau for _, tau in trees.values())
    measured = {}
    for size in sizes:
        measured[size] = _step_time(model, batch_size, cache_len, trees[size][0], compile)
        if measured[size] * MARGIN > plain_us * most_tau:
            break
    return measured


def choose_tree(model: MTPModel, samples: DraftSamples, batch_size: int, needed_positions: int, compile: bool,
                max_nodes: int = 32, timed_sizes: tuple[int, ...] = (2, 4, 8, 16, 32),
                prompts: torch.Tensor | None = None, max_new_tokens: int = 0) -> TreeChoice:
    """The tree (or plain decoding) with the most tokens per second at this batch size: by expected tokens per step
    and step times, then, given prompts (batch_size rows of equal length), by decoding the best candidates."""
    trees = best_draft_trees(samples, max_nodes)  # node count -> the best tree of that size
    del trees[1]  # the root alone: plain decoding, timed as such
    cache_len = cache_slots(model, needed_positions)
    plain_us = _step_time(model, batch_size, cache_len, None, compile)
    if not trees:
        return TreeChoice(DraftTree(()), 1.0, plain_us, plain_us, [])
    # Timed: the available size nearest each of timed_sizes.
    sizes = sorted({min(trees, key=lambda n: (abs(n - s), n)) for s in timed_sizes if s >= 2})
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
    for nodes, (tree, tau) in trees.items():
        us = step_us(nodes)
        table.append({"nodes": nodes, "tree": str(tree), "lookup": tree.lookup, "tau": tau, "step_us": us,
                      "expected_speedup": tau / us * plain_us})
    ranked = sorted(table[1:], key=lambda row: -row["expected_speedup"])
    candidates = [row for row in ranked[:CANDIDATES] if row["expected_speedup"] >= MARGIN]
    for row in candidates:
        if row["nodes"] not in measured:  # interpolated: time the very tree before trusting it
            row["step_us"] = _step_time(model, batch_size, cache_len, trees[row["nodes"]][0], compile)
            row["expected_speedup"] = row["tau"] / row["step_us"] * plain_us
        if prompts is not None:
            row["measured_speedup"] = end_to_end_speedup(model, trees[row["nodes"]][0], prompts, max_new_tokens,
                                                         compile)
    key = "measured_speedup" if prompts is not None else "expected_speedup"
    best = max(candidates, key=lambda row: row[key], default=None)
    if best is None or best[key] < MARGIN:
        return TreeChoice(DraftTree(()), 1.0, plain_us, plain_us, table)
    tree = trees[best["nodes"]][0]
    return TreeChoice(tree, best["tau"], best["step_us"], plain_us, table)
