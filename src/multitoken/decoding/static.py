"""Static-shape decoding steps that `torch.compile` captures whole (gpt-fast's recipe, extended to draft trees).

Every step of a call has the same shapes: the KV caches are allocated once with room for the whole call, a block
always has the same number of tokens, and attention always spans every cache slot under a mask built from the rows'
positions (`Positions`). So a compiled step is traced once and then only replayed: no per-step allocation, no
shape change, no graph break, no host sync inside the step. What depends on data (when to stop) is decided outside,
once per step.

Three steps, all pure functions of tensors (the caches and the output buffers they write aside):

- `plain_step(token, pos)`: one token per row at its own position -> head 1's logits. Plain decoding.
- `tree_step(tokens, start)`: a draft tree per row (see `tree.py`) through the trunk; head 1 verifies every node;
  the accepted path's tokens and cache entries are gathered into place, and the draft source (`sources.py`: the
  fused heads, or the drafter) guesses the next tree from that path. Greedy: the output is token for token plain
  greedy decoding.
- `keep_step(...)`: what a tree step's caller does with its result: the accepted tokens written into the output
  (and the rows' contexts), the rows advanced (finished at a stop token), copies from the context (`lookup.py`) put
  into the next tree. About a hundred small tensor operations: run one by one they cost 0.48 ms a step on SmolLM2
  (2 cores, an 18 ms step), compiled 0.12 ms (docs/real-model.md, section 6g).

Compiled steps are kept per model and shape (`decoders`), so that repeated calls (a benchmark, a server) pay for
compilation once; `compile_seconds` says how long that took.
"""

from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass

import torch

from multitoken.decoding.lookup import STRONG_MATCH, lookup_drafts
from multitoken.decoding.steps import keep_block, prefill
from multitoken.decoding.sources import DrafterSource, HeadSource
from multitoken.decoding.tree import DraftTree, accept_greedy, draft_tokens, guess_count, with_copies
from multitoken.model import DecodeCaches, MTPModel, Positions

SLOT_ROUNDING = 128  # cache lengths are rounded up to this, so that calls of similar lengths share a compiled step


def block_positions(start: torch.Tensor, layout: dict[str, torch.Tensor], cache_len: int,
                    dtype: torch.dtype) -> Positions:
    """Where a tree block goes for rows starting at start (B,): node j in slot start + j at position start + depth_j,
    attending to every slot before start and to its own ancestors in the block."""
    depth, ancestors = layout["depth"], layout["ancestors"]
    T = depth.shape[0]
    offsets = torch.arange(T, device=start.device)
    relative = torch.arange(cache_len, device=start.device)[None, :] - start[:, None]  # (B, L): slot - start
    in_block = ancestors[:, relative.clamp(0, T - 1)].transpose(0, 1)  # (B, T, L): that slot's node is an ancestor
    allowed = (relative < 0)[:, None, :] | ((relative < T)[:, None, :] & in_block)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=start.device).masked_fill(~allowed, float("-inf"))
    return Positions(T, slots=start[:, None] + offsets, positions=start[:, None] + depth, mask=mask[:, None])


def cache_slots(model: MTPModel, needed: int) -> int:
    """Cache length for a call that needs `needed` positions: rounded up (to share compiled steps), within the
    context."""
    rounded = -(-needed // SLOT_ROUNDING) * SLOT_ROUNDING
    return max(needed, min(rounded, model.config.max_seq_len))


def compile_options(device: torch.device) -> dict:
    """torch.compile settings for decoding steps.

    CUDA: CUDA graphs (a step's launches replayed as one). CPU: weights frozen into the graph as constants (so that
    matrix products use prepacked weights), matrix-product kernels picked by benchmarking (`max_autotune`: for a few
    rows, inductor's own micro-kernels beat the library call), and a C++ wrapper instead of a Python one around the
    kernels (a step is dozens of small kernels, each paying a Python call otherwise). Measured in
    docs/speculative.md.
    """
    if device.type == "cuda":
        return {"triton.cudagraphs": True}
    # The autotuner's per-kernel tables and statistics stay off the user's terminal.
    return {"freezing": True, "max_autotune": True, "cpp_wrapper": True, "autotune_num_choices_displayed": 0,
            "max_autotune_report_choices_stats": False}


class CompiledStep:
    """A fixed-shape decoding step, compiled whole by torch.compile at its first call with `compile_options`;
    `seconds` is how long that first call took. (On CUDA every call starts a new CUDA-graph step.)"""

    def __init__(self, fn, device: torch.device) -> None:
        self.fn = torch.compile(fn, dynamic=False, fullgraph=True)
        self.device, self.compiled, self.seconds = device, False, 0.0

    def __call__(self, *args: torch.Tensor):
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        if self.compiled:
            return self.fn(*args)
        start = time.perf_counter()
        # Inductor reads its settings when it compiles, which is at this first call. (Passed as torch.compile's
        # options instead, `freezing` did not take: the weights stayed graph inputs, multiplied by library calls.)
        # Inductor's autotuner still reads a storage through an API torch itself deprecates: its warning says nothing
        # to a user of this step.
        with torch._inductor.config.patch(compile_options(self.device)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            result = self.fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds, self.compiled = time.perf_counter() - start, True
        return result


@dataclass(eq=False)
class StaticDecoder:
    """The caches and steps for one model, batch size and cache length; `tree` None means plain decoding."""

    model: MTPModel
    batch_size: int
    cache_len: int
    tree: DraftTree | None
    compile: bool

    def __post_init__(self) -> None:
        model = self.model
        weight = model.output.weight
        self.device, self.dtype = weight.device, weight.dtype
        B = self.batch_size
        tree = self.tree or DraftTree(())
        self.layout = tree.tensors(self.device)
        self.guess_count = guess_count(tree)  # plain ints: the compiled step must not trace the tree's Python
        self.depth = tree.depth
        self.chain_layout = DraftTree.chain(tree.depth).tensors(self.device)
        # A last tree may reach past the final kept position: room for it, so that shapes never change.
        self.slots = self.cache_len + tree.num_nodes - 1
        # Trunk and head 1 decode in the model's layers; the guesses come from a draft source (`sources.py`): the
        # extra heads, fused with one cache, or the drafter, with its own. The caches live as long as the decoder (a
        # compiled step is specialised to these very tensors); a call decodes `with decoder.caches:`, which
        # attaches them into the model's layers for its duration. A tree of lookup nodes alone needs no source.
        self.source = draft_source(model, tree, self.guess_count, self.slots, self.dtype)
        self.caches = DecodeCaches(model, B, self.slots, heads="next", dtype=self.dtype,
                                   **(self.source.cache_options() if self.source else {}))
        step = self._plain_step if self.tree is None else self._tree_step
        self.step = CompiledStep(step, self.device) if self.compile else step
        self.keep = CompiledStep(self._keep_step, self.device) if self.compile else self._keep_step
        self.lookup = tree.lookup

    @property
    def compile_seconds(self) -> float:
        """Time spent compiling (the first call of each step)."""
        return self.step.seconds + self.keep.seconds if self.compile else 0.0

    def output_buffers(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What a tree decoding call writes into, sized by the decoder (not the call) so that `keep_step` keeps one
        shape: the output tokens (B, cache_len + depth + 1: room for a last path's overshoot), and, for copies, each
        row's context (B, cache_len + depth + 2): the right-padded prompt, then the tokens kept, then the next one."""
        B, T0 = prompt.shape
        extra = self.cache_len + self.depth + 1
        out = torch.zeros(B, extra, dtype=torch.long, device=prompt.device)
        if not self.lookup:
            return out, None
        context = torch.zeros(B, extra + 1, dtype=prompt.dtype, device=prompt.device)
        context[:, :T0] = prompt
        return out, context

    def with_lookup(self, tokens: torch.Tensor, guesses: torch.Tensor | None, context: torch.Tensor | None,
                    ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next tree's tokens (B, T) with copies from each row's context in place, and which rows copied
        (B,) bool. ends (B,): where each row's context ends; the tree's root, the certain next token, goes there."""
        if context is None:
            return tokens, torch.zeros_like(ends, dtype=torch.bool)
        context.scatter_(1, ends[:, None], tokens[:, :1])
        copied, matched = lookup_drafts(context, ends + 1, self.lookup)
        strong = matched >= STRONG_MATCH
        return with_copies(tokens, guesses, copied, strong, self.layout), strong

    def _keep_step(self, n_done: torch.Tensor, limit: torch.Tensor, lengths: torch.Tensor, accepted: torch.Tensor,
                   n_accepted: torch.Tensor, tokens: torch.Tensor, guesses: torch.Tensor | None, out: torch.Tensor,
                   context: torch.Tensor | None, stop_ids: torch.Tensor | None):
        """Keep what a tree step accepted and make the next tree (`tree_step`'s result in, the loop's state updated).

        n_done (B,): tokens final per row before the step; limit (0-d): the tokens a row is to produce; a row with
        n_done >= limit is finished and idles. Each active row's path (accepted (B, D + 1), valid up to n_accepted + 1)
        is written into out (and its context) at the row's next place; anything past its end is overwritten next.
        A row that kept a stop token is finished (n_done = limit). Returns (n_done (B,), the next tree's tokens
        (B, T) with copies in place, rows still going whose tree copied (0-d count), drafts accepted per row
        (B,): -1 for a row that was finished)."""
        active = n_done < limit
        after, at = keep_block(out, n_done, active, limit, accepted, n_accepted, stop_ids)
        if context is not None:  # in each row's context the kept tokens follow its prompt, as in out from 0
            context.scatter_(1, lengths[:, None] + at, accepted)
        tokens, strong = self.with_lookup(tokens, guesses, context, lengths + torch.minimum(after, limit))
        return after, tokens, (strong & (after < limit)).sum(), torch.where(active, n_accepted, -1)

    def run_keep(self, *args: torch.Tensor | None):
        """`keep_step`; the first call of a compiled one compiles it, and its time goes to compile_seconds."""
        return self.keep(*args)

    def prefill(self, prompt: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fill the caches with the right-padded prompts (slots = positions 0..T0-1; eager: its shape varies from call
        to call): head 1's logits (B, V) at each row's last prompt position, and the draft source's guesses after it
        (B, D, R; None without a source)."""
        if self.source is None:
            return prefill(self.model, prompt, lengths), None
        return self.source.prefill(prompt, lengths, self.caches)

    def run_step(self, *args: torch.Tensor):
        """One step; the first call of a compiled step compiles it, and its time goes to compile_seconds."""
        return self.step(*args)

    def _plain_step(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """token (B,) at positions pos (B,) -> head 1's logits (B, V) for the token after it."""
        where = block_positions(pos, self.layout, self.slots, self.dtype)
        return self.model(token[:, None], where=where)[:, 0]

    def _tree_step(self, tokens: torch.Tensor, start: torch.Tensor):
        """Verify one tree per row and draft the next.

        tokens (B, T): the tree (node 0 certain) for rows whose next token goes at position start (B,). Returns
        (accepted (B, D + 1): the accepted path's tokens, valid up to n_accepted + 1; n_accepted (B,): drafts
        accepted; next_tokens (B, T): the next tree, copies not yet in place; guesses (B, heads, R): the heads' top
        tokens it was drawn from (None without heads), for `with_copies`).

        Two phases. The trunk and head 1 run on every node: head 1 verifies. The extra heads then run only on the
        accepted path (D + 1 tokens, not T): they must see every kept position (their caches), but no rejected one,
        and drafting needs them only at the path's last node. Their cost stays that of a chain however wide the tree.
        """
        model, layout = self.model, self.layout
        B = tokens.shape[0]
        rows = torch.arange(B, device=tokens.device)
        where = block_positions(start, layout, self.slots, self.dtype)
        features = None  # (B, T, 3d) for the drafter
        if self.source is not None and self.source.reads_features:
            z, features = model.trunk_features(tokens, where)
        else:
            z = model.trunk(tokens, where)  # (B, T, d)
        target = model.unembed(model.head(0, z, where)).argmax(-1)  # (B, T): head 1's greedy token after each node
        best = accept_greedy(tokens, target, layout)  # (B,) deepest accepted node
        n_accepted = layout["depth"][best]
        path = layout["path"][best]  # (B, D + 1) nodes from the root to best, then best repeated
        # Gather the accepted path's cache entries into slots start .. start + D (the tail past the accepted depth is
        # junk that the next block overwrites before anyone may attend to it).
        chain_slots = start[:, None] + torch.arange(path.shape[1], device=start.device)
        self.caches.move(start[:, None] + path, chain_slots)
        if self.source is None:  # copies alone: nothing to draft here
            return tokens.gather(1, path), n_accepted, draft_tokens(target[rows, best], None, layout), None
        chain = block_positions(start, self.chain_layout, self.slots, self.dtype)
        along = lambda h: None if h is None else h.gather(1, path[:, :, None].expand(-1, -1, h.shape[-1]))  # noqa: E731
        # Head 1's choice after each path node: the next node's token where that was accepted, the correction after
        # the last one (what heads that read the next token, and the drafter, read there).
        guesses = self.source.propose(along(z), along(features), target.gather(1, path), n_accepted, chain,
                                      self.caches)  # (B, D, R)
        return tokens.gather(1, path), n_accepted, draft_tokens(target[rows, best], guesses, layout), guesses


def draft_source(model: MTPModel, tree: DraftTree, count: int, slots: int,
                 dtype: torch.dtype) -> HeadSource | DrafterSource | None:
    """The source of a tree's guesses: its heads, the model's drafter, or none (copies alone, or plain decoding)."""
    if not tree.head_depth:
        return None
    if tree.drafter:
        return DrafterSource(model, tree.head_depth, count, slots, dtype)
    return HeadSource(model, tree.head_depth, count)


# Decoders by model, kept as long as the model lives: caches and compiled steps are reused across calls.
_decoders: weakref.WeakKeyDictionary[MTPModel, dict[tuple, StaticDecoder]] = weakref.WeakKeyDictionary()


def decoder_for(model: MTPModel, batch_size: int, cache_len: int, tree: DraftTree | None,
                compile: bool) -> StaticDecoder:
    """The decoder for this shape, made on first use."""
    if compile:
        # Every batch size and tree is its own static graph; the default limit (8) would fall back to eager midway
        # through a benchmark sweep.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    # The weights' version counters: a decoder holds copies of the heads' weights (and, compiled, frozen ones), so
    # a model trained or edited in place since gets new decoders.
    version = sum(p._version for p in model.parameters())
    key = (batch_size, cache_len, tree, compile, model.output.weight.dtype, model.output.weight.device)
    per_model = _decoders.setdefault(model, {})
    if per_model.get("version") != version:
        per_model.clear()
        per_model["version"] = version
    if key not in per_model:
        per_model[key] = StaticDecoder(model, batch_size, cache_len, tree, compile)
    return per_model[key]


def total_compile_seconds(model: MTPModel) -> float:
    """Seconds spent compiling this model's decoding steps so far (benchmarks report it apart from tokens/s)."""
    return sum(d.compile_seconds for key, d in _decoders.get(model, {}).items() if key != "version")
