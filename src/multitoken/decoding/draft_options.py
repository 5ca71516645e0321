"""What a user asks to draft with (--tree, --draft-len), read and checked against the model in one place for
generate, chat and bench decode: a tree the model cannot draft (ranks beyond its draft vocabulary, depths beyond its
heads or drafter, more nodes than a step should verify) is refused in one line that says what it would accept, before
any memory is asked for."""

from __future__ import annotations

from multitoken.decoding.speculative import DEFAULT_DRAFTER_DEPTH, check_drafter_depth
from multitoken.decoding.tree import DraftTree
from multitoken.errors import ConfigError

MAX_TREE_NODES = 128  # tokens verified per row and step; `--tree auto` considers up to 32, far past any gain


def draft_width(model, drafter: bool) -> int:
    """How many guesses a head (or the drafter) ranks per position: its draft vocabulary, or the whole vocabulary."""
    if drafter:
        return model.drafter.output.weight.shape[0]
    return model.config.draft_vocab or model.config.vocab_size


def check_tree(tree: DraftTree, model) -> DraftTree:
    """The tree, or a one-line refusal of what this model cannot draft."""
    if tree.drafter:
        check_drafter_depth(model, tree.head_depth)
    elif tree.head_depth > model.n_future - 1:
        raise ConfigError(f"--tree is {tree.head_depth} drafts deep but the model has {model.n_future - 1} extra "
                          f"heads: use paths of at most {model.n_future - 1} ranks"
                          + ("" if model.n_future > 1 else ", or \"lookup N\" alone (drafts copied from the context)")
                          + (", or \"drafter ...\" (its drafter's guesses)" if hasattr(model, "drafter") else ""))
    width = draft_width(model, tree.drafter)
    if tree.max_rank > width:
        source = "its drafter" if tree.drafter else "each head"
        raise ConfigError(f"--tree asks for rank {tree.max_rank - 1}, but {source} ranks only {width} tokens: use "
                          f"ranks 0..{width - 1} (a tree's useful ranks are the first few)")
    if tree.num_nodes > MAX_TREE_NODES:
        raise ConfigError(f"--tree verifies {tree.num_nodes} tokens per step: use at most {MAX_TREE_NODES} (fewer "
                          "paths, or a shorter lookup); `--tree auto` picks a size that pays")
    return tree


def parse_tree(text: str, model, draft_len: int | None, temperature: float = 0.0) -> DraftTree | None:
    """--tree: None for the heads' chain of draft_len, else a DraftTree checked against the model's heads or
    drafter (and copied drafts alone against sampling). "chain" on a model with a drafter and no heads is the
    drafter's chain."""
    if text == "chain":
        if model.n_future == 1 and hasattr(model, "drafter"):
            depth = DEFAULT_DRAFTER_DEPTH if draft_len is None else draft_len
            return DraftTree.chain(check_drafter_depth(model, depth), drafter=True)
        return None
    tree = DraftTree.parse(text)
    if temperature > 0 and not tree.paths and tree.lookup:
        raise ConfigError("drafts copied from the context are verified greedily: use --temperature 0, or give the "
                          "tree head paths (sampling verifies a chain of the heads' drafts)")
    check_tree(tree, model)
    if draft_len is not None:
        raise ConfigError("give --draft-len or a --tree of paths, not both (a tree sets its own depth)")
    return tree


def check_needs_speculative(speculative: bool, tree: str, draft_len: int | None) -> None:
    """--tree and --draft-len say how to draft: without --speculative nothing drafts, so they would be ignored."""
    given = [flag for flag, value in (("--tree", tree != "chain"), ("--draft-len", draft_len is not None)) if value]
    if given and not speculative:
        verb = "applies" if len(given) == 1 else "apply"
        raise ConfigError(f"{' and '.join(given)} only {verb} with --speculative (plain decoding drafts nothing): "
                          "add --speculative, or leave them out")
