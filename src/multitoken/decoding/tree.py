"""Draft trees: many candidate continuations from the heads' top-k, verified in one forward (Medusa's "choices").

A tree is a list of paths of candidate ranks. The path (r_1, .., r_j) is the node whose token is rank r_j among head
j+1's guesses, under the node (r_1, .., r_{j-1}); the root (the empty path) is the next token, already certain. All
guesses come from the heads at the last accepted position, so a node's token does not depend on its parent's: what
the tree adds over a chain is alternatives, tried side by side. Every prefix of a path must be in the tree too.

    chain of 3 drafts:  (0,), (0, 0), (0, 0, 0)
    a wider start:      (0,), (1,), (2,), (0, 0), (1, 0), (0, 0, 0)

Nodes are numbered root first, then the paths in their order; each node sits at position start + depth and takes
cache slot start + its number. Verification needs, per node: its depth, its parent, its ancestors (the attention mask
and the acceptance rule) and the path of nodes from the root (to gather an accepted path's tokens and cache entries).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property

import torch

from multitoken.errors import ConfigError

Path = tuple[int, ...]


@dataclass(frozen=True)
class DraftTree:
    paths: tuple[Path, ...]  # every node but the root, parents before children

    def __post_init__(self) -> None:
        seen: set[Path] = {()}
        for path in self.paths:
            if not path or any(not isinstance(r, int) or r < 0 for r in path):
                raise ConfigError(f"tree path {path} is not a tuple of candidate ranks >= 0, e.g. (0, 1)")
            if path in seen:
                raise ConfigError(f"tree path {path} appears twice")
            if path[:-1] not in seen:
                raise ConfigError(f"tree path {path} comes before (or without) its parent {path[:-1]}: list every "
                                  "prefix of a path, parents first")
            seen.add(path)

    @classmethod
    def chain(cls, draft_len: int) -> DraftTree:
        """Today's blockwise drafts: each head's top guess, one after the other."""
        return cls(tuple((0,) * d for d in range(1, draft_len + 1)))

    @classmethod
    def parse(cls, text: str) -> DraftTree:
        """A tree from text such as "(0,), (1,), (0, 0)" or "[[0], [1], [0, 0]]"."""
        try:
            value = ast.literal_eval(f"[{text}]")
            if len(value) == 1 and isinstance(value[0], list | tuple) and value[0] and \
                    all(isinstance(p, list | tuple) for p in value[0]):
                value = value[0]  # the whole list was given in brackets
            paths = tuple(tuple(p) for p in value)
        except (ValueError, SyntaxError, TypeError):
            raise ConfigError(f"cannot read the tree {text!r}: give paths of candidate ranks, e.g. "
                              "\"(0,), (1,), (0, 0)\", or chain / auto") from None
        return cls(paths)

    @property
    def num_nodes(self) -> int:
        return len(self.paths) + 1

    @property
    def depth(self) -> int:
        """The most drafts one path holds (heads 2..depth+1 are needed)."""
        return max((len(p) for p in self.paths), default=0)

    @property
    def max_rank(self) -> int:
        """How many of a head's guesses the tree uses (top-k)."""
        return max((r for p in self.paths for r in p), default=-1) + 1

    def is_chain(self) -> bool:
        return self.paths == DraftTree.chain(self.depth).paths

    def describe(self) -> str:
        if not self.paths:
            return "plain decoding"
        return f"chain of {self.depth}" if self.is_chain() else f"tree of {self.num_nodes} nodes, depth {self.depth}"

    def __str__(self) -> str:
        return ", ".join("(" + ", ".join(map(str, p)) + ("," if len(p) == 1 else "") + ")" for p in self.paths)

    @cached_property
    def _layout(self) -> dict[str, list]:
        index = {(): 0} | {p: i + 1 for i, p in enumerate(self.paths)}
        nodes = [(), *self.paths]
        D = self.depth
        return {
            "depth": [len(p) for p in nodes],
            "parent": [index[p[:-1]] if p else 0 for p in nodes],
            "rank": [p[-1] if p else 0 for p in nodes],
            # ancestors[i][j]: node j is node i or one of its ancestors (what node i may attend to in the block)
            "ancestors": [[q == p[:len(q)] for q in nodes] for p in nodes],
            # the nodes from the root down to node i, padded with node i itself to depth + 1 entries
            "path": [[index[p[:d]] for d in range(len(p) + 1)] + [index[p]] * (D - len(p)) for p in nodes],
        }

    def tensors(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The layout as tensors on device: depth (T,), parent (T,), rank (T,), ancestors (T, T) bool, path (T, D+1)."""
        layout = self._layout
        return {name: torch.tensor(value, dtype=torch.bool if name == "ancestors" else torch.long, device=device)
                for name, value in layout.items()}


def accept_greedy(tokens: torch.Tensor, target: torch.Tensor, layout: dict[str, torch.Tensor]) -> torch.Tensor:
    """The deepest node of each row whose path greedy decoding would produce: (B,) node indices.

    tokens (B, T): the tree's tokens (node 0 is the certain root). target (B, T): head 1's greedy token after each
    node. A node is right when its token is its parent's target; it is accepted when it and all its ancestors are
    right. Siblings hold distinct tokens, so at most one node per depth is accepted: the accepted nodes form one path.
    """
    right = tokens == target.gather(1, layout["parent"].expand_as(tokens))
    right[:, 0] = True  # the root is certain
    wrong_ancestor = (~right[:, None, :] & layout["ancestors"][None]).any(-1)  # (B, T)
    depth = torch.where(wrong_ancestor, -1, layout["depth"][None])
    return depth.argmax(-1)


def draft_tokens(root: torch.Tensor, head_logits: torch.Tensor, layout: dict[str, torch.Tensor],
                 max_rank: int) -> torch.Tensor:
    """The next tree's tokens (B, T): root (B,) at node 0, and each other node's token: rank r among the guesses of
    head depth + 1. head_logits (B, D, V) are heads 2..D+1 at the accepted position."""
    guesses = head_logits.topk(max_rank, dim=-1).indices  # (B, D, R)
    depth, rank = layout["depth"][1:], layout["rank"][1:]
    return torch.cat([root[:, None], guesses[:, depth - 1, rank]], dim=1)


def best_trees(ranks: torch.Tensor, max_nodes: int) -> list[tuple[DraftTree, float]]:
    """Trees of 1..max_nodes nodes that accept the most on these samples, each with its expected tokens per step.

    ranks (S, D): per sample (a position of greedy decoding), the rank of the true token d + 1 ahead among head
    d + 1's guesses (or -1 when it is not among the guesses counted). A tree accepts, on a sample, its deepest node
    whose path is a prefix of the sample's ranks; so a tree's expected accepted drafts are the sum over its nodes of
    the share of samples starting with that node's path. A child's share never exceeds its parent's, so the nodes
    with the largest shares always form a tree, and taking them best first gives the best tree of every size.
    """
    counts: dict[Path, int] = {}
    for row in ranks.tolist():
        for d in range(1, len(row) + 1):
            if row[d - 1] < 0:
                break
            prefix = tuple(row[:d])
            counts[prefix] = counts.get(prefix, 0) + 1
    S = max(len(ranks), 1)
    # Largest share first; ties go to shorter paths and then smaller ranks so that parents precede children.
    order = sorted(counts, key=lambda p: (-counts[p], len(p), p))[:max_nodes - 1]
    trees, chosen, tau = [(DraftTree(()), 1.0)], [], 1.0
    for path in order:
        chosen.append(path)
        tau += counts[path] / S
        trees.append((DraftTree(tuple(sorted(chosen, key=lambda p: (len(p), p)))), tau))
    return trees
