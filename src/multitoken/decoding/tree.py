"""Draft trees: many candidate continuations from the heads' top-k, verified in one forward (Medusa's "choices").

A tree is a list of paths of candidate ranks. The path (r_1, .., r_j) is the node whose token is rank r_j among head
j+1's guesses, under the node (r_1, .., r_{j-1}); the root (the empty path) is the next token, already certain. All
guesses come from the heads at the last accepted position, so a node's token does not depend on its parent's: what
the tree adds over a chain is alternatives, tried side by side. Every prefix of a path must be in the tree too.

    chain of 3 drafts:  (0,), (0, 0), (0, 0, 0)
    a wider start:      (0,), (1,), (2,), (0, 0), (1, 0), (0, 0, 0)

A tree may also copy from the context (`lookup.py`): with "lookup L" after the paths, the first-choice path (0,),
(0, 0), .. down to depth L holds the tokens that followed the last place the context's final tokens occurred, in rows
where that match is at least `lookup.STRONG_MATCH` tokens long, and the heads' guesses elsewhere; where the copy
takes a node, its siblings hold the heads' guesses without the copied token (so the heads' first choice is still
tried). First-choice nodes deeper than the heads' paths are added, and always hold the copy: "lookup 3" alone is a
chain of three copied tokens, which needs no heads. Copies are filled in between steps. Nodes are numbered root
first, then the paths in their order, then the added ones; each node sits at position start + depth and takes
cache slot start + its number. Verification needs, per node: its depth, its parent, its ancestors (the attention mask
and the acceptance rule) and the path of nodes from the root (to gather an accepted path's tokens and cache entries).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cached_property

import torch

from multitoken.errors import ConfigError

Path = tuple[int, ...]
MAX_LOOKUP = 64  # tokens a step may copy from the context: a step verifies each, and copies past this rarely hold
_LOOKUP = re.compile(r"(?:^|,)\s*lookup\s+(\S+)\s*$")


@dataclass(frozen=True)
class DraftTree:
    paths: tuple[Path, ...]  # the heads' nodes (every node but the root and the added copy nodes), parents first
    lookup: int = 0  # how deep the first-choice path takes tokens copied from the context
    drafter: bool = False  # the paths' guesses come from the model's drafter (`sources.py`), not its extra heads

    def __post_init__(self) -> None:
        if not isinstance(self.lookup, int) or self.lookup < 0:
            raise ConfigError(f"a tree's lookup depth is a number of tokens >= 0, got {self.lookup!r}")
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
    def chain(cls, draft_len: int, drafter: bool = False) -> DraftTree:
        """Today's blockwise drafts: each head's top guess (or the drafter's first choice), one after the other."""
        return cls(tuple((0,) * d for d in range(1, draft_len + 1)), drafter=drafter)

    @classmethod
    def parse(cls, text: str) -> DraftTree:
        """A tree from text such as "(0,), (1,), (0, 0)" or "[[0], [1], [0, 0]]", with ", lookup N" after the
        paths for copies from the context down the first-choice path to depth N ("lookup N" alone: no heads).
        A leading "drafter" takes the paths' guesses from the model's drafter: "drafter (0,), (0, 0), (1,)";
        "drafter chain N" is its chain of N guesses."""
        stripped = text.strip()
        if stripped == "drafter" or stripped.startswith("drafter "):
            tree = cls.parse(stripped[len("drafter"):].strip() or "chain 3")
            if not tree.paths:
                raise ConfigError(f"the tree {text!r} gives the drafter no paths: e.g. \"drafter chain 3\" or "
                                  "\"drafter (0,), (1,), (0, 0)\"")
            return DraftTree(tree.paths, tree.lookup, drafter=True)
        if not stripped:
            raise ConfigError("the tree is empty: give paths of candidate ranks, e.g. \"(0,), (1,), (0, 0)\", or "
                              "chain / auto / \"lookup 4\"")
        lookup = 0
        found = _LOOKUP.search(text)
        if found:
            if not found.group(1).isdigit() or not 1 <= int(found.group(1)) <= MAX_LOOKUP:
                raise ConfigError(f"cannot read the tree {text!r}: 'lookup' takes a number of tokens 1..{MAX_LOOKUP} "
                                  "to copy from the context, e.g. \"(0,), (1,), (0, 0), lookup 4\"")
            lookup, text = int(found.group(1)), text[:found.start()]
            if not text.strip():
                return cls((), lookup)
        chained = re.fullmatch(r"\s*chain\s+(\d+)\s*", text)
        if chained:  # "chain N": the first choices to depth N
            if int(chained.group(1)) < 1:
                raise ConfigError(f"the tree {text.strip()!r} drafts nothing: use chain 1 or deeper")
            return cls.chain(int(chained.group(1))).with_lookup(lookup)
        try:
            value = ast.literal_eval(f"[{text}]")
            if len(value) == 1 and isinstance(value[0], list | tuple) and value[0] and \
                    all(isinstance(p, list | tuple) for p in value[0]):
                value = value[0]  # the whole list was given in brackets
            paths = tuple(tuple(p) for p in value)
        except (ValueError, SyntaxError, TypeError):
            raise ConfigError(f"cannot read the tree {text!r}: give paths of candidate ranks, e.g. "
                              "\"(0,), (1,), (0, 0)\", or chain / auto") from None
        if not paths and not lookup:
            raise ConfigError(f"the tree {text.strip()!r} has no paths: give candidate ranks, e.g. \"(0,), (1,)\"")
        return cls(paths, lookup)

    def with_lookup(self, lookup: int) -> DraftTree:
        return DraftTree(self.paths, lookup, self.drafter)

    @property
    def copy_paths(self) -> tuple[Path, ...]:
        """The first-choice nodes deeper than the heads' paths, which only copies fill."""
        return tuple((0,) * d for d in range(1, self.lookup + 1) if (0,) * d not in self.paths)

    @property
    def num_nodes(self) -> int:
        return len(self.paths) + len(self.copy_paths) + 1

    @property
    def head_depth(self) -> int:
        """The most head guesses one path holds: heads 2..head_depth+1 are needed."""
        return max((len(p) for p in self.paths), default=0)

    @property
    def depth(self) -> int:
        """The most drafts one path holds, copies included."""
        return max(self.head_depth, self.lookup)

    @property
    def drafts(self) -> bool:
        """Whether there is anything to verify (the empty tree is plain decoding)."""
        return bool(self.paths) or self.lookup > 0

    @property
    def max_rank(self) -> int:
        """How many of a head's guesses the tree uses (top-k)."""
        return max((r for p in self.paths for r in p), default=-1) + 1

    def is_chain(self) -> bool:
        """A chain of the heads' first guesses (the eager chain loop's case; the drafter's chains decode as trees)."""
        return self.paths == DraftTree.chain(self.depth).paths and not self.lookup and not self.drafter

    def describe(self) -> str:
        if not self.drafts:
            return "plain decoding"
        if not self.paths:
            return f"lookup of {self.lookup} tokens"
        if self.drafter:
            return "drafter: " + DraftTree(self.paths, self.lookup).describe()
        if self.lookup:  # the heads' tree, then its copies
            n = len(self.copy_paths)
            added = f" ({n} node{'s' if n > 1 else ''} added)" if n else ""
            return f"{DraftTree(self.paths).describe()}, lookup to depth {self.lookup}{added}"
        return f"chain of {self.depth}" if self.is_chain() else f"tree of {self.num_nodes} nodes, depth {self.depth}"

    def __str__(self) -> str:
        parts = ["(" + ", ".join(map(str, p)) + ("," if len(p) == 1 else "") + ")" for p in self.paths]
        text = ", ".join(parts + ([f"lookup {self.lookup}"] if self.lookup else []))
        return f"drafter {text}" if self.drafter else text

    @cached_property
    def _layout(self) -> dict[str, list]:
        nodes = [(), *self.paths, *self.copy_paths]
        index = {p: i for i, p in enumerate(nodes)}
        D = self.depth
        copy = [bool(p) and not any(p) and len(p) <= self.lookup for p in nodes]
        return {
            "depth": [len(p) for p in nodes],
            "parent": [index[p[:-1]] if p else 0 for p in nodes],
            "rank": [p[-1] if p else 0 for p in nodes],
            # ancestors[i][j]: node j is node i or one of its ancestors (what node i may attend to in the block)
            "ancestors": [[q == p[:len(q)] for q in nodes] for p in nodes],
            # the nodes from the root down to node i, padded with node i itself to depth + 1 entries
            "path": [[index[p[:d]] for d in range(len(p) + 1)] + [index[p]] * (D - len(p)) for p in nodes],
            # copy: the copied token goes here in rows with a strong match; copy_only: always (no head guesses here);
            # beside_copy: a sibling of a copy node, which then takes the heads' guesses without the copied token
            "copy": copy,
            "copy_only": [p in self.copy_paths for p in nodes],
            "beside_copy": [bool(p) and p[-1] > 0 and (p[:-1] == () or copy[index[p[:-1]]]) and len(p) <= self.lookup
                            for p in nodes],
        }

    def tensors(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The layout as tensors on device: depth (T,), parent (T,), rank (T,), ancestors (T, T) bool, path (T, D+1),
        copy, copy_only, beside_copy (T,) bool."""
        flags = ("ancestors", "copy", "copy_only", "beside_copy")
        return {name: torch.tensor(value, dtype=torch.bool if name in flags else torch.long, device=device)
                for name, value in self._layout.items()}


def accept_greedy(tokens: torch.Tensor, target: torch.Tensor, layout: dict[str, torch.Tensor]) -> torch.Tensor:
    """The deepest node of each row whose path greedy decoding would produce: (B,) node indices.

    tokens (B, T): the tree's tokens (node 0 is the certain root). target (B, T): head 1's greedy token after each
    node. A node is right when its token is its parent's target; it is accepted when it and all its ancestors are
    right. Siblings hold distinct tokens (a copy's siblings leave the copied token out), so at most one node per depth
    is accepted: the accepted nodes form one path.
    """
    right = tokens == target.gather(1, layout["parent"].expand_as(tokens))
    right[:, 0] = True  # the root is certain
    wrong_ancestor = (~right[:, None, :] & layout["ancestors"][None]).any(-1)  # (B, T)
    depth = torch.where(wrong_ancestor, -1, layout["depth"][None])
    return depth.argmax(-1)


def draft_tokens(root: torch.Tensor, guesses: torch.Tensor | None, layout: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next tree's tokens (B, T): root (B,) at node 0, and each head node's token: rank r among the guesses of
    head depth + 1. guesses (B, D, R): heads 2..D+1's top-R tokens at the accepted position (R = `guess_count`; None:
    no heads). Nodes that only copies fill hold the root until `with_copies` fills them."""
    if guesses is None:
        return root[:, None].expand(-1, layout["depth"].shape[0]).clone()
    depth, rank = layout["depth"][1:], layout["rank"][1:]
    nodes = guesses[:, (depth - 1).clamp(max=guesses.shape[1] - 1), rank]
    return torch.cat([root[:, None], torch.where(layout["copy_only"][1:], root[:, None], nodes)], dim=1)


def guess_count(tree: DraftTree) -> int:
    """How many of each head's guesses a tree's nodes read: one more than its ranks when a copy may displace one."""
    return tree.max_rank + (1 if tree.lookup else 0)


def with_copies(tokens: torch.Tensor, guesses: torch.Tensor | None, copied: torch.Tensor, strong: torch.Tensor,
                layout: dict[str, torch.Tensor]) -> torch.Tensor:
    """A tree's tokens (B, T) with the copied tokens (B, L) in place: on the first-choice path to depth L in rows
    with a strong match (B,), and where only copies go in every row; the siblings of a copied node take the heads'
    guesses at that depth without the copied token (rank r: the r-th of the others, so the heads' first choice
    stays in the tree when the copy differs from it)."""
    B, T = tokens.shape
    at = (layout["depth"] - 1).clamp(0, copied.shape[1] - 1)
    copy = copied[:, at]  # (B, T): the copied token at each node's depth
    tokens = torch.where(layout["copy_only"] | (strong[:, None] & layout["copy"]), copy, tokens)
    if guesses is None:
        return tokens
    others = guesses[:, (layout["depth"] - 1).clamp(0, guesses.shape[1] - 1)]  # (B, T, R)
    displaced = others == copy[..., None]
    others = others.gather(2, displaced.to(torch.uint8).argsort(dim=2, stable=True))  # the copy, if there, last
    shifted = others.gather(2, (layout["rank"] - 1).clamp_min(0)[None, :, None].expand(B, T, 1))[..., 0]
    return torch.where(strong[:, None] & layout["beside_copy"], shifted, tokens)


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
