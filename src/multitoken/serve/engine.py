"""The serving engine: one thread owns the model and decodes every live request in one batch.

Requests wait in a bounded queue. Between decoding steps the engine admits waiting requests into free rows of its
caches and prefills them together, on their rows alone (`Positions.rows`: the rows mid-answer are not touched); then
every live row takes one step, of one of two kinds:

- plain: each row feeds its certain token through the trunk and head 1 (the model's own next-token path);
- chain (greedy batches, a model with extra heads or a drafter): each row feeds its certain token and its drafts,
  head 1 verifies them, the row keeps the longest agreeing prefix, and the draft source (the extra heads as one
  batched layer, or the drafter; `decoding/sources.py`) drafts again where it ends, on its own caches. The output
  is exactly plain greedy decoding's, whatever else is in the batch.

Head 1 always runs with the trunk on its own cache, so either kind of step leaves the model's own state complete;
only the source skips plain steps. What the source reads (the trunk's output z, or the drafter's features) is kept per
row and position, so before a row's next chain step the source catches up on the positions it missed. `speculative="auto"` chooses per step: it
times both kinds at each batch size, tracks tau (tokens per row per chain step), and runs a chain step only while
tau x (plain step time) exceeds the chain step's time, so that serving is not slower than plain decoding at any
load (each kind is timed once per batch size first, then re-timed now and then as tau moves). A batch with a
sampled request steps plainly.

Finished, cancelled and failed rows leave the batch at once and their row takes the next request. Tokens reach a
request through its `emit` callback, called on the engine thread as they become certain.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from multitoken.decoding.sampling import sample
from multitoken.decoding.sources import DrafterSource, HeadSource
from multitoken.decoding.speculative import DEFAULT_DRAFTER_DEPTH, verify_chain
from multitoken.decoding.static import CompiledStep
from multitoken.decoding.text import until_eos
from multitoken.errors import ConfigError
from multitoken.model import DecodeCaches, MTPModel, Positions
from multitoken.serve.step_times import StepTimes

log = logging.getLogger("multitoken.serve")

# emit(new certain token ids, finish reason or None while the answer goes on)
Emit = Callable[[list[int], "str | None"], None]


class QueueFull(Exception):
    """The waiting queue is at its bound: the caller should retry later."""


@dataclass(eq=False)
class Job:
    """One request as the engine sees it: token ids in, token ids out through emit."""

    prompt: list[int]
    max_tokens: int
    emit: Emit
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Filled in by the engine
    generated: int = 0
    forwards: int = 0  # decoding steps this request took part in (tau = generated / forwards)
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(eq=False)
class Row:
    job: Job
    pos: int  # positions of this row in the trunk's and head 1's caches (and in the stored z)
    block: list[int]  # what the next step feeds: the certain token, then the heads' drafts (if they are current)
    heads_pos: int = 0  # positions the extra heads' caches hold for this row
    fed: list[int] = field(default_factory=list)  # tokens at positions 0..pos-1 (heads that read the next token
    # catch up on positions they missed with the token after each)


class Engine:
    """Continuous batching over max_batch_size cache rows of `context` positions each."""

    def __init__(self, model: MTPModel, max_batch_size: int = 8, speculative: bool | str = "auto",
                 context: int | None = None, max_queue: int = 64, draft_len: int | None = None,
                 compile: bool = False, drafter: bool | None = None) -> None:
        """speculative: "auto" (choose per step, see the module), True / "on" (a chain step whenever the batch is
        greedy) or False / "off" (plain steps only: the extra heads are never run). compile: run each kind of step
        over every cache row with fixed shapes, compiled by torch.compile on its first use (prefills and the
        drafting heads' catching up stay eager: their shapes vary). drafter: draft with the model's drafter rather
        than its heads (None: when it has one)."""
        self.model = model.eval()
        self.max_batch_size = max_batch_size
        self.context = min(context or model.config.max_seq_len, model.config.max_seq_len)
        self.mode = {True: "on", False: "off"}.get(speculative, speculative)
        drafter = hasattr(model, "drafter") if drafter is None else drafter
        if drafter and not hasattr(model, "drafter"):
            raise ConfigError("this model has no drafter to draft with: serve it with its heads, or train one")
        default_k = DEFAULT_DRAFTER_DEPTH if drafter else model.n_future - 1
        self.k = (draft_len or default_k) if self.mode != "off" and (drafter or model.n_future > 1) else 0
        self.device = model.output.weight.device
        self.compile = compile
        self._compiled: dict[str, CompiledStep] = {}  # by kind of step, each compiled at its first use
        # A compiled chain always verifies k drafts, also near the end of the context: room for them past it.
        self.slots = self.context + (self.k if compile else 0)
        dtype = model.output.weight.dtype
        # The drafts' source (`decoding/sources.py`): the extra heads as one batched layer, or the drafter.
        self.source = None if not self.k else DrafterSource(model, self.k, 1, self.slots, dtype) if drafter \
            else HeadSource(model, self.k, 1)
        # The trunk and head 1 on their own caches; the source on its own.
        self.caches = DecodeCaches(model, max_batch_size, self.slots, heads="next",
                                   **(self.source.cache_options() if self.source else {}))
        # Every row's trunk output z (the drafter: its features) per position, what the source reads when it
        # catches up.
        width = 3 * model.config.d_model if drafter else model.config.d_model
        self.z = torch.zeros(max_batch_size, self.slots, width, device=self.device, dtype=dtype) if self.k else None
        self.times = StepTimes()
        self.waiting: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.rows: list[Row | None] = [None] * max_batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run, and what they did (for /health, logs and tests)
        self.chain_steps = 0
        self.peak_live = 0
        self.drafts_accepted = 0
        self.cancelled = 0
        self.error: BaseException | None = None

    # -- the caller's side --------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job (QueueFull when the queue is at its bound)."""
        if job.temperature > 0:
            job.generator = torch.Generator(device=self.device)
            job.generator.manual_seed(job.seed if job.seed is not None else torch.seed())
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        self._wake.set()

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._run, name="multitoken-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def live(self) -> int:
        return sum(row is not None for row in self.rows)

    # -- the engine thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode(), self.caches:
            while not self._stop.is_set():
                try:
                    self._admit()
                    if not self.live:
                        self._wake.wait(timeout=0.1)
                        self._wake.clear()
                        continue
                    self._step()
                except Exception as e:  # never leave requests hanging: fail every live one, keep serving
                    log.exception("decoding step failed")
                    self.error = e
                    for i, row in enumerate(self.rows):
                        if row is not None:
                            self._finish(i, "error")

    def _store_z(self, z: torch.Tensor, start: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Keep z (R, W, ·) (the trunk's output, or the drafter's features) of cache rows `rows` (None: all of them)
        from positions start (R,) for the source (positions past the cache are scratch, dropped); returns z."""
        if self.z is not None:
            slots = (start[:, None] + torch.arange(z.shape[1], device=z.device)).clamp_max(self.slots - 1)
            rows = torch.arange(z.shape[0], device=z.device) if rows is None else rows
            self.z[rows[:, None], slots] = z
        return z

    def _trunk(self, block: torch.Tensor, where: Positions, start: torch.Tensor,
               rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk over a block, keeping what the source reads: (z, what the source reads)."""
        if self.source is None or not self.source.reads_features:
            z = self._store_z(self.model.trunk(block, where), start, rows)
            return z, z
        z, features = self.model.trunk_features(block, where)
        return z, self._store_z(features, start, rows)

    def _drafts(self, stored: torch.Tensor, following: torch.Tensor, where: Positions, at: torch.Tensor):
        """The source's first choices (R, k) after position `at` (R,) of a block where it went: stored (R, W, ·) what
        it reads there, following (R, W) the token after each position."""
        return self.source.propose(stored, stored, following, at, where, self.caches)[:, :, 0]

    def _forward_step(self, block: torch.Tensor, start: torch.Tensor, rows: torch.Tensor | None = None,
                      chain: bool = False):
        """One step's tensors: the block (R, W) through the trunk and head 1 from positions start (R,) on cache rows
        `rows` (None: every row, in order: the compiled form) -> head 1's logits (R, W, V); for a chain also the drafts
        accepted (R,), the corrections (R,) and the next drafts (R, k)."""
        model = self.model
        where = self.caches.at(start, block.shape[1], rows=rows)
        z, stored = self._trunk(block, where, start, rows)
        target = model.unembed(model.head(0, z, where))  # head 1 after each block token
        if not chain:
            return target
        n_acc, correction = verify_chain(block, target)
        # The source over the block (what it writes past the kept prefix is overwritten later), drafting where each
        # row goes on from. Head 1's choice after each block token is the token that follows it wherever the block
        # was kept, and the correction after the last kept one: what heads that read the next token, and the
        # drafter, read.
        return target, n_acc, correction, self._drafts(stored, target.argmax(-1), where, n_acc)

    def _catch_up(self, live: list[int]) -> None:
        """Run the source over the positions it missed (plain steps, or the prefill) of these rows, and give each its
        drafts from the last one."""
        live = [i for i in live if self.rows[i].heads_pos < self.rows[i].pos]
        rows = [self.rows[i] for i in live]
        lag = max(row.pos - row.heads_pos for row in rows)
        start = torch.tensor([row.heads_pos for row in rows], device=self.device)
        slots = (start[:, None] + torch.arange(lag, device=self.device)).clamp_max(self.slots - 1)
        rows_t = torch.tensor(live, device=self.device)
        where = self.caches.at(start, lag, rows=rows_t)
        # The token after each missed position: what the row fed next, then its certain one.
        after = [(row.fed + row.block[:1])[row.heads_pos + 1:row.pos + 1] for row in rows]
        following = torch.tensor([tokens + [0] * (lag - len(tokens)) for tokens in after], device=self.device)
        last = torch.tensor([row.pos - row.heads_pos - 1 for row in rows], device=self.device)
        drafts = self._drafts(self.z[rows_t[:, None], slots], following, where, last).tolist()
        for row, guess in zip(rows, drafts):
            row.heads_pos = row.pos
            row.block = row.block[:1] + guess

    def _admit(self) -> None:
        free = [i for i, row in enumerate(self.rows) if row is None]
        new: list[tuple[int, Job]] = []
        while free and not self.waiting.empty():
            job = self.waiting.get_nowait()
            if job.cancelled.is_set():
                continue
            new.append((free.pop(0), job))
        if not new:
            return
        width = max(len(job.prompt) for _, job in new)
        block = torch.zeros(len(new), width, dtype=torch.long, device=self.device)
        for j, (_, job) in enumerate(new):  # right-padded: pads write beyond a row's prompt, overwritten later
            block[j, :len(job.prompt)] = torch.tensor(job.prompt, device=self.device)
        rows = torch.tensor([i for i, _ in new], device=self.device)
        lengths = torch.tensor([len(job.prompt) for _, job in new], device=self.device)
        start = torch.zeros_like(rows)
        where = self.caches.at(start, width, rows=rows)
        h1 = self.model.head(0, self._trunk(block, where, start, rows)[0], where)
        logits = self.model.unembed(h1[torch.arange(len(new), device=self.device), lengths - 1])  # (n, V)
        for j, (i, job) in enumerate(new):
            first = self._choose(job, logits[j:j + 1])
            # The drafting heads catch up before a chain step.
            self.rows[i] = Row(job, len(job.prompt), [first], fed=list(job.prompt))
            self._deliver(i, [first])

    def _choose(self, job: Job, logits: torch.Tensor) -> int:
        return int(sample(logits, job.temperature, None, job.top_p, job.generator)[0])

    def _kind(self, rows: list[Row]) -> str:
        if not self.k or not all(row.job.greedy for row in rows):
            return "plain"
        if self.mode == "on":
            return "chain"
        return self.times.choose(len(rows))

    def _step(self) -> None:
        live = [i for i, row in enumerate(self.rows) if row is not None]
        rows = [self.rows[i] for i in live]
        self.peak_live = max(self.peak_live, len(live))
        kind = self._kind(rows)
        if kind == "chain" and any(row.heads_pos < row.pos for row in rows):
            self._catch_up(live)  # paid once per switch to chains: not part of a chain step's timing
        began = time.perf_counter()
        step = self._static_step if self.compile else self._eager_step
        target, n_acc, correction, drafts = step(kind, live)
        self.steps += 1
        if kind == "chain":
            self.chain_steps += 1
            self.drafts_accepted += sum(n_acc)
        for j, (i, row) in enumerate(zip(live, rows)):
            row.job.forwards += 1
            if kind == "chain":
                a = n_acc[j]
                kept = row.block[1:a + 1] + [correction[j]]  # the verified drafts, then head 1's own next token
                row.fed += row.block[:a + 1]
                row.pos += a + 1
                row.heads_pos = row.pos
                row.block = [correction[j], *drafts[j]]
            else:
                kept = [self._choose(row.job, target[j:j + 1, 0])]
                row.fed.append(row.block[0])
                row.pos += 1
                row.block = kept[:]
            self._deliver(i, kept)
        if self.mode == "auto" and self.k and all(row.job.greedy for row in rows):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times.record(kind, len(rows), time.perf_counter() - began)
            if kind == "chain":
                self.times.record_tau(sum(n_acc) / len(rows) + 1)

    def _eager_step(self, kind: str, live: list[int]):
        """One step of the live rows alone: (head 1's logits (R, W, V), and for a chain the drafts accepted,
        corrections and next drafts per row)."""
        rows = [self.rows[i] for i in live]
        # Near the end of the context a chain verifies fewer drafts (its last slots must exist).
        width = min(self.k + 1, min(self.context - row.pos for row in rows)) if kind == "chain" else 1
        block = torch.tensor([row.block[:width] for row in rows], device=self.device)
        start = torch.tensor([row.pos for row in rows], device=self.device)
        return _per_row(self._forward_step(block, start, torch.tensor(live, device=self.device), kind == "chain"))

    def _static_step(self, kind: str, live: list[int]):
        """The same step over every cache row with shapes that never change (idle rows feed token 0 at position 0
        of their own row, which a newcomer's prefill overwrites), so that torch.compile captures it once per kind."""
        width = self.k + 1 if kind == "chain" else 1
        block = torch.zeros(self.max_batch_size, width, dtype=torch.long, device=self.device)
        start = torch.zeros(self.max_batch_size, dtype=torch.long, device=self.device)
        for i in live:
            row = self.rows[i]
            block[i] = torch.tensor(row.block[:width], device=self.device)
            start[i] = row.pos
        return _per_row(self._run_compiled(kind, block, start), torch.tensor(live, device=self.device))

    def _run_compiled(self, kind: str, block: torch.Tensor, start: torch.Tensor):
        if kind not in self._compiled:
            self._compiled[kind] = CompiledStep(functools.partial(self._forward_step, chain=kind == "chain"),
                                                self.device)
        return self._compiled[kind](block, start)

    @property
    def compile_seconds(self) -> float:
        """Time spent compiling steps (each kind's first call)."""
        return sum(step.seconds for step in self._compiled.values())

    def _deliver(self, i: int, tokens: list[int]) -> None:
        """Hand a row's newly certain tokens to its job, and retire the row when its answer is over."""
        row = self.rows[i]
        job = row.job
        if job.cancelled.is_set():
            self.cancelled += 1
            return self._finish(i, None)
        room = job.max_tokens - job.generated
        text, n = until_eos(tokens[:room], job.stop_ids)  # n counts the stop token too, where there is one
        tokens, reason = tokens[:n], "stop" if len(text) < n else None
        if reason is None and (job.generated + len(tokens) >= job.max_tokens or row.pos >= self.context):
            reason = "length"
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        job.generated += len(tokens)
        if reason is not None:
            self.rows[i] = None
        _emit(job, tokens, reason)

    def _finish(self, i: int, reason: str | None) -> None:
        job = self.rows[i].job
        self.rows[i] = None
        if reason is not None:
            _emit(job, [], reason)


def _per_row(outputs, index: torch.Tensor | None = None):
    """`_forward_step`'s outputs (of the rows at index, when given) as (head 1's logits, and for a chain the drafts
    accepted, corrections and next drafts as lists per row; None for a plain step)."""
    if isinstance(outputs, torch.Tensor):
        return (outputs if index is None else outputs[index]), None, None, None
    target, n_acc, correction, drafts = (t if index is None else t[index] for t in outputs)
    return target, n_acc.tolist(), correction.tolist(), drafts.tolist()


def _emit(job: Job, tokens: list[int], reason: str | None) -> None:
    try:
        job.emit(tokens, reason)
    except RuntimeError:  # its receiver is gone (the server's event loop closed): nobody is waiting for it
        job.cancel()
