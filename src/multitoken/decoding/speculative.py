"""Self-speculative decoding with the model's own heads (paper section 3.2; blockwise parallel decoding, Stern et al.
2018). Verification rule and proof sketch: docs/speculative.md.

Each step feeds one block per row, [d_0, d_1 .. d_k]: d_0 is the next token, already certain (head 1 chose it), and
d_1..d_k are the guesses of heads 2..k+1 made at the same position. One forward over the block, all heads:

- head 1 at block index j gives the true next-token distribution p_j after d_0..d_j, which verifies d_{j+1};
- the longest verified prefix d_0..d_a is kept (a + 1 tokens, at least 1), plus a correction token from p_a;
- the extra heads at index a draft the next block. One forward per step; rejected positions in the KV caches are
  simply overwritten by the next block.

Greedy: d_{j+1} is accepted iff it equals argmax p_j, so the output is token for token plain greedy decoding.
Sampling (Leviathan et al. 2023, Chen et al. 2023): draft d_{j+1} ~ q_j (head j+2's distribution), accepted with
probability min(1, p_j(d) / q_j(d)); the first rejection resamples from normalize(max(0, p_j - q_j)); if all k are
accepted a bonus token comes from p_k. Output follows exactly the plain sampling distribution.

Rows of a batch accept different lengths and so sit at different positions: positions are a (B,) tensor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from multitoken.decoding.fused_heads import FusedHeads
from multitoken.decoding.generate import generate
from multitoken.decoding.steps import OnTokens, check_fits, keep_block, last_positions, pad_after_stop
from multitoken.decoding.sampling import draw, probs_from_logits
from multitoken.decoding.sources import DrafterSource
from multitoken.decoding.static import cache_slots, decoder_for
from multitoken.decoding.tree import DraftTree, draft_tokens
from multitoken.errors import ConfigError
from multitoken.model import DecodeCaches, MTPModel, Positions, prompt_next_tokens


@dataclass
class DecodeStats:
    """What one decoding call did. tau = tokens accepted per verification forward (plain decoding: 1)."""

    forwards: int = 0  # model forwards after the prefill
    row_steps: int = 0  # (row, forward) pairs of rows still generating: tau's denominator
    accepted_tokens: int = 0  # tokens kept over those row-steps (drafts accepted + the certain token)
    new_tokens: int = 0
    seconds: float = 0.0  # decoding time, compilation excluded
    compile_seconds: float = 0.0  # time spent compiling steps during the call (0 once compiled)
    tree_nodes: int = 0  # tokens verified per row and step (a chain of k drafts: k + 1)
    copied_steps: int = 0  # row-steps whose first-choice path held tokens copied from the context (`lookup.py`)
    accepted_per_position: list[int] = field(default_factory=list)  # draft position 1..k: drafts accepted
    attempted_per_position: list[int] = field(default_factory=list)  # draft position 1..k: drafts offered

    @property
    def tau(self) -> float:
        return self.accepted_tokens / max(self.row_steps, 1)

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / t if t else 0.0 for a, t in zip(self.accepted_per_position, self.attempted_per_position)]

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: "DecodeStats") -> None:
        """Accumulate another call's statistics into this one (for benchmarks over many batches)."""
        for name in ("forwards", "row_steps", "accepted_tokens", "new_tokens", "seconds", "compile_seconds",
                     "copied_steps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if not self.accepted_per_position:
            self.accepted_per_position = [0] * len(other.accepted_per_position)
            self.attempted_per_position = [0] * len(other.attempted_per_position)
        self.tree_nodes = max(self.tree_nodes, other.tree_nodes)
        self.accepted_per_position = [a + b for a, b in zip(self.accepted_per_position, other.accepted_per_position)]
        self.attempted_per_position = [a + b for a, b in zip(self.attempted_per_position, other.attempted_per_position)]

    def as_dict(self) -> dict:
        return {"forwards": self.forwards, "new_tokens": self.new_tokens, "seconds": self.seconds,
                "tau": self.tau, "acceptance_per_position": self.acceptance_per_position,
                "tokens_per_s": self.tokens_per_s, "compile_seconds": self.compile_seconds,
                "tree_nodes": self.tree_nodes}


DEFAULT_DRAFTER_DEPTH = 3  # EAGLE-3's and the engines' usual chain
MAX_DRAFTER_DEPTH = 16  # a drafter chains as deep as asked; past this a step's guesses cost more than they win


def check_drafter_depth(model: MTPModel, depth: int) -> int:
    """A drafter tree's depth, checked against the model. ConfigError when it has no drafter or the depth is absurd."""
    if not hasattr(model, "drafter"):
        raise ConfigError("this model has no drafter: train one (multitoken train --init-from CKPT --freeze base "
                          "--model.drafter eagle3), or draft with its heads")
    if not 1 <= depth <= MAX_DRAFTER_DEPTH:
        raise ConfigError(f"the drafter's tree is {depth} guesses deep: use 1..{MAX_DRAFTER_DEPTH}")
    return depth


def check_draft_len(model: MTPModel, draft_len: int | None) -> int:
    """The draft length to use (default n_future - 1). ConfigError (a ValueError) when the model cannot draft it."""
    n = model.n_future
    if n < 2:
        raise ConfigError("this is a next-token-only model (n_future=1): it has no extra heads to draft with; "
                          "decode without speculation")
    k = n - 1 if draft_len is None else draft_len
    if not 1 <= k <= n - 1:
        raise ConfigError(f"draft length {k} is out of range for a model with {n} heads: use 1..{n - 1}")
    return k


def _draft(head_logits: torch.Tensor, greedy: bool, sampling: tuple, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tokens (B, k) from the extra heads' logits (B, k, V), and their draft distributions q (B, k, V) when sampling."""
    if greedy:
        return head_logits.argmax(-1), None
    q = probs_from_logits(head_logits, *sampling)
    return draw(q, generator), q


def verify_chain(block: torch.Tensor, logits: torch.Tensor, q: torch.Tensor | None = None,
                 sampling: tuple | None = None, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One verification of a chain of drafts: (drafts accepted (B,), correction token (B,)).

    block (B, W): [d_0, d_1 .. d_{W-1}], d_0 certain. logits (B, W, V): head 1 after each block token. Greedy when
    q is None: d_{j+1} is kept iff it is head 1's argmax after d_0..d_j, and the correction is the argmax after the
    last kept token. Sampling: q (B, >= W - 1, V) are the drafts' distributions, sampling = (temperature, top_k,
    top_p); d_{j+1} is kept with probability min(1, p/q), and the correction is drawn from the residual (or from p
    itself after a fully accepted block: the bonus token). Pure: no model, no state.
    """
    B, W = block.shape
    rows = torch.arange(B, device=block.device)
    drafts = block[:, 1:]  # (B, W - 1)
    if q is None:
        target = logits.argmax(-1)  # (B, W)
        n_acc = (drafts == target[:, :-1]).long().cumprod(dim=1).sum(dim=1)  # the longest verified prefix
        return n_acc, target[rows, n_acc]
    p = probs_from_logits(logits, *sampling)  # (B, W, V)
    p_draft = p[:, :-1].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = q[:, :W - 1].gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand(p_draft.shape, generator=generator, device=block.device)
    n_acc = (u * q_draft < p_draft).long().cumprod(dim=1).sum(dim=1)  # accept with probability min(1, p / q)
    p_at = p[rows, n_acc]  # (B, V)
    q_pad = torch.cat([q[:, :W - 1], torch.zeros_like(q[:, :1])], dim=1)  # no draft after the last
    residual = (p_at - q_pad[rows, n_acc]).clamp_min(0)
    # Where every draft was accepted q_pad is 0 and this is p itself: the bonus token.
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_at)
    return n_acc, draw(residual / residual.sum(-1, keepdim=True), generator)


def _chain_source(model: MTPModel, k: int, batch_size: int, cache_len: int, fused: bool, drafter: bool,
                  greedy: bool, sampling: tuple, generator):
    """The caches, the verifying forward and the draft proposer of a chain decode.

    forward(block, where, next_tokens=None) -> logits (B, T, >= 1, V), head 1 first (the heads' own after it).
    propose(logits, following, where, at, last) -> (drafts (B, k), their distributions q (B, k, V) or None when
    greedy): the drafts after position `at` (B,) of the block just verified (at `last` (B,) in the text);
    following (B, T): the token after each block position, the chosen next token at `at`."""
    pick = lambda logits: _draft(logits, greedy, sampling, generator)  # noqa: E731
    if not drafter:
        caches, forward = _all_heads_forward(model, k + 1, batch_size, cache_len, fused)

        def propose_from_heads(logits, following, where, at, last):
            return pick(logits[torch.arange(logits.shape[0], device=at.device), at, 1:k + 1])

        return caches, forward, propose_from_heads
    source = DrafterSource(model, k, 1, cache_len, model.output.weight.dtype)
    caches = DecodeCaches(model, batch_size, source.slots, heads="next", **source.cache_options())
    seen = {}  # the verifying forward's features, which the proposer reads

    def forward(block: torch.Tensor, where: Positions, next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        z, seen["features"] = model.trunk_features(block, where)
        return model.unembed(model.head(0, z, where))[:, :, None]

    def propose_from_drafter(logits, following, where, at, last):
        y = source.pass_over(seen.pop("features"), following, where)
        y = y[torch.arange(y.shape[0], device=at.device), at]
        drafts, q = source.walk(y, last, lambda draft: _pick_one(pick, source.full_vocabulary(draft)))
        return drafts[:, :, 0], q

    return caches, forward, propose_from_drafter


def _pick_one(pick, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    tokens, q = pick(logits[:, None])
    return tokens, None if q is None else q[:, 0]


def _all_heads_forward(model: MTPModel, num_heads: int, batch_size: int, cache_len: int, fused: bool):
    """The caches for a chain decode, and forward(block, where, next_tokens=None) -> logits (B, T, >= num_heads, V)
    of heads 1..num_heads. next_tokens (B, T): the token after each position for heads that read it, -1 where head
    1's choice goes (see `MTPModel.forward`); None: head 1's choice after every token (a block of drafts). Other
    heads ignore it.

    fused: heads 1..num_heads as one batched layer (`FusedHeads`); otherwise the model's own per-head forward (the
    reference path). Heads that read the next token wait for head 1's choice: head 1 then runs on its own, the
    extra heads fused.
    """
    if not fused:
        caches = DecodeCaches(model, batch_size, cache_len, heads="all")
        def reference(block: torch.Tensor, where: Positions, next_tokens: torch.Tensor | None = None) -> torch.Tensor:
            if next_tokens is None:
                next_tokens = torch.full_like(block, -1)
            return model(block, return_all_heads=True, where=where, next_tokens=next_tokens)

        return caches, reference
    if model.config.heads_read_next_token and num_heads > 1:
        heads = FusedHeads(model, num_heads - 1, first=1)
        caches = DecodeCaches(model, batch_size, cache_len, heads="next", fused=num_heads - 1)

        def forward(block: torch.Tensor, where: Positions, next_tokens: torch.Tensor | None = None) -> torch.Tensor:
            z = model.trunk(block, where)
            first = model.unembed(model.head(0, z, where))
            chosen = first.argmax(-1) if next_tokens is None else model.follow_tokens(next_tokens, first)
            following = model.embed(chosen)
            cos, sin = model.rope(block.shape[1], where, heads.window)
            extra = model.unembed_drafts(heads(z, cos, sin, where, caches.fused, following))
            return torch.cat([first[:, :, None], extra], dim=2)

        return caches, forward
    heads = FusedHeads(model, num_heads)
    caches = DecodeCaches(model, batch_size, cache_len, heads="none", fused=num_heads)

    def forward(block: torch.Tensor, where: Positions, next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        cos, sin = model.rope(block.shape[1], where, heads.window)
        return model.unembed_heads(heads(model.trunk(block, where), cos, sin, where, caches.fused))

    return caches, forward


def _statistics(stats: DecodeStats, log: torch.Tensor, widths: list[int], k: int) -> None:
    """Fill stats from the per-step log (steps, B) of drafts accepted (-1: row already finished) and each step's
    block width (drafts offered + 1)."""
    live = log >= 0
    draft_positions = torch.arange(1, k + 1, device=log.device)
    offered = torch.tensor(widths, device=log.device)[:, None] - 1 >= draft_positions  # (steps, k): position offered
    stats.forwards = len(widths)
    stats.row_steps = int(live.sum())
    stats.accepted_tokens = int((log + 1).clamp_min(0).sum())
    stats.accepted_per_position = (log[:, :, None] >= draft_positions).sum((0, 1)).tolist()
    stats.attempted_per_position = (offered * live.sum(1, keepdim=True)).sum(0).tolist()


@torch.no_grad()
def speculative_generate(model: MTPModel, prompt: torch.Tensor, max_new_tokens: int, draft_len: int | None = None,
                         temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                         generator: torch.Generator | None = None, lengths: torch.Tensor | None = None,
                         fused: bool = True, tree: DraftTree | None = None,
                         compile: bool = False, stop_ids: torch.Tensor | None = None,
                         on_tokens: OnTokens | None = None) -> tuple[torch.Tensor, DecodeStats]:
    """New tokens (B, max_new_tokens) and statistics; the same contract as `generate`, faster when heads agree.

    Greedy decoding verifies a draft tree per step (`tree`; default: the chain of draft_len drafts) in static-shape
    steps, compiled with `compile`. Sampling verifies a chain (speculative sampling; a tree falls back to its depth
    as a chain). fused=False runs the heads one by one through the model, as a chain (the reference path; same
    output). stop_ids, on_tokens: as for `generate` (a row ends at its first stop token,
    kept; on_tokens sees each step's accepted tokens).
    """
    start_time = time.perf_counter()
    if tree is None and model.n_future == 1 and hasattr(model, "drafter"):  # no heads: the drafter's chain
        tree = DraftTree.chain(DEFAULT_DRAFTER_DEPTH if draft_len is None else draft_len, drafter=True)
    if tree is not None and tree.drafts and temperature > 0:
        if not tree.paths:
            raise ConfigError("drafts copied from the context are verified greedily: use temperature 0, or give the "
                              "tree head paths (sampling verifies a chain of the heads' drafts)")
        # sampling verifies chains (exact speculative sampling)
        tree = DraftTree.chain(tree.head_depth, drafter=tree.drafter)
    if tree is not None and not tree.paths:
        k = tree.lookup  # copied drafts alone, or plain decoding (the empty tree): no heads needed
    elif tree is not None and tree.drafter:
        k = max(check_drafter_depth(model, tree.head_depth), tree.lookup)
    else:
        k = check_draft_len(model, draft_len if tree is None or not tree.paths else tree.head_depth)
        k = k if tree is None else max(k, tree.lookup)
    B, T0 = prompt.shape
    check_fits(model, T0, max_new_tokens)
    device = prompt.device
    lengths = torch.full((B,), T0, device=device) if lengths is None else lengths.to(device)
    stats = DecodeStats(accepted_per_position=[0] * k, attempted_per_position=[0] * k)
    if max_new_tokens == 0:
        return torch.empty(B, 0, dtype=torch.long, device=device), stats
    if tree is not None and not tree.drafts:  # the empty tree: plain decoding (what `auto` picks when nothing pays)
        out = generate(model, prompt, max_new_tokens, lengths=lengths, compile=compile, temperature=temperature,
                       top_k=top_k, top_p=top_p, generator=generator, stop_ids=stop_ids, on_tokens=on_tokens)
        stats.forwards, stats.row_steps = max_new_tokens, B * max_new_tokens
        stats.accepted_tokens, stats.tree_nodes = B * max_new_tokens, 1
        stats.seconds, stats.new_tokens = time.perf_counter() - start_time, B * max_new_tokens
        return out, stats
    use_static = compile or (tree is not None and not tree.is_chain())  # eager chains: the cheaper dynamic path
    if temperature == 0 and fused and use_static:
        out, log, widths = _greedy_tree(model, prompt, lengths, max_new_tokens, tree or DraftTree.chain(k), compile,
                                        stats, stop_ids, on_tokens)
    else:
        out, log, widths = _chain(model, prompt, lengths, max_new_tokens, k, (temperature, top_k, top_p), generator,
                                  fused, stop_ids, on_tokens, drafter=tree is not None and tree.drafter)
        stats.tree_nodes = k + 1
    _statistics(stats, log, widths, k)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - start_time - stats.compile_seconds
    stats.new_tokens = B * max_new_tokens
    return pad_after_stop(out[:, :max_new_tokens], stop_ids), stats


def _greedy_tree(model: MTPModel, prompt: torch.Tensor, lengths: torch.Tensor, N: int, tree: DraftTree,
                 compile: bool, stats: DecodeStats, stop_ids: torch.Tensor | None = None,
                 on_tokens: OnTokens | None = None):
    """Greedy decoding with a draft tree per step, through the static decoder: per step its tree step, then its keep
    step (the accepted path kept, the next tree's copies filled), and one host sync, for the loop's exit."""
    B, T0 = prompt.shape
    decoder = decoder_for(model, B, cache_slots(model, T0 + N), tree, compile)
    compiled_before = decoder.compile_seconds
    out, context = decoder.output_buffers(prompt)
    n_done = torch.zeros(B, dtype=torch.long, device=prompt.device)  # tokens finalized per row
    limit = torch.tensor(N, device=prompt.device)  # a tensor, so that calls for other lengths share a compiled step
    log: list[torch.Tensor] = []  # per step: drafts accepted per row, -1 for a finished row (statistics at the end)
    copying: list[torch.Tensor] = []  # per step: rows whose next tree copies (summed once, at the end)
    with decoder.caches:
        first, guesses = decoder.prefill(prompt, lengths)  # (B, V), (B, D, R) or None
        tokens, strong = decoder.with_lookup(draft_tokens(first.argmax(-1), guesses, decoder.layout), guesses,
                                             context, lengths)
        copying.append(strong.sum())
        while True:
            active = n_done < N
            if not bool(active.any()):  # the loop's exit depends on data: one host sync per step, the only one
                break
            start = torch.where(active, lengths + n_done, 0)  # finished rows idle at position 0
            accepted, n_accepted, tokens, guesses = decoder.run_step(tokens, start)
            n_done, tokens, copied, accepted_drafts = decoder.run_keep(
                n_done, limit, lengths, accepted, n_accepted, tokens, guesses, out, context, stop_ids)
            copying.append(copied)
            log.append(accepted_drafts)
            if on_tokens is not None:
                on_tokens(out, n_done.clamp(max=N))
    stats.compile_seconds = decoder.compile_seconds - compiled_before
    stats.tree_nodes = tree.num_nodes
    stats.copied_steps = int(torch.stack(copying).sum()) if context is not None and tree.paths else 0
    return out, torch.stack(log), [tree.depth + 1] * len(log)


def _chain(model: MTPModel, prompt: torch.Tensor, lengths: torch.Tensor, N: int, k: int, sampling: tuple,
           generator: torch.Generator | None, fused: bool, stop_ids: torch.Tensor | None = None,
           on_tokens: OnTokens | None = None, drafter: bool = False):
    """Chain drafts verified by `verify_chain` (greedy or speculative sampling), eager: the heads' drafts, or the
    drafter's (each drawn from its distribution q given the drafts before it, which is all speculative sampling
    asks of a draft)."""
    B, T0 = prompt.shape
    device = prompt.device
    greedy = sampling[0] == 0
    # A block may reach k positions past the last token we keep; the cache stops at the context, and blocks are cut
    # short there instead (see `width` below).
    cache_len = min(model.config.max_seq_len, T0 + N + k)
    out = torch.zeros(B, N + k + 1, dtype=torch.long, device=device)  # room for a last (or parked) block
    n_done = torch.zeros(B, dtype=torch.long, device=device)  # tokens finalized per row
    # Per step and row: drafts accepted, or -1 for a row already finished. Statistics come from this log at the end,
    # keeping the hot loop to the few ops decoding itself needs. A step finalizes >= 1 token per row: <= N steps.
    accept_log = torch.full((N, B), -1, dtype=torch.long, device=device)
    widths: list[int] = []

    caches, forward, propose = _chain_source(model, k, B, cache_len, fused, drafter, greedy, sampling, generator)
    with caches:
        where = caches.at(0, T0)
        logits = forward(prompt, where, prompt_next_tokens(prompt, lengths))
        last = last_positions(logits, lengths)
        first = last[:, 0].argmax(-1) if greedy else draw(probs_from_logits(last[:, 0], *sampling), generator)
        following = prompt_next_tokens(prompt, lengths).scatter(1, (lengths - 1)[:, None], first[:, None]).clamp_min(0)
        drafts, q = propose(logits, following, where, lengths - 1, lengths - 1)
        block = torch.cat([first[:, None], drafts], dim=1)  # (B, k + 1)
        while True:
            active = n_done < N
            pos = lengths + n_done
            # The loop's exit and the block width depend on data: one host sync per step, the only one.
            any_active, furthest = torch.stack([active.any().long(), torch.where(active, pos, 0).max()]).tolist()
            if not any_active:
                break
            width = min(k + 1, cache_len - furthest)  # near the end of the context, verify fewer drafts
            start = furthest if B == 1 else torch.where(active, pos, 0)  # finished rows idle at position 0
            # (B, width, heads, V); heads that read the next token read head 1's choice after each draft
            where = caches.at(start, width)
            logits = forward(block[:, :width], where)
            n_acc, correction = verify_chain(block[:, :width], logits[:, :, 0], q, sampling, generator) if not greedy \
                else verify_chain(block[:, :width], logits[:, :, 0])
            n_done, _ = keep_block(out, n_done, active, N, block[:, :width], n_acc, stop_ids)  # d_0..d_a kept
            following = F.pad(block[:, 1:width], (0, 1)).scatter(1, n_acc[:, None], correction[:, None])
            drafts, q = propose(logits, following, where, n_acc, start + n_acc)
            block = torch.cat([correction[:, None], drafts], dim=1)
            if on_tokens is not None:
                on_tokens(out, n_done.clamp(max=N))
            accept_log[len(widths)] = torch.where(active, n_acc, -1)
            widths.append(width)
    return out, accept_log[:len(widths)], widths
