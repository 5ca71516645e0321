"""The serving engine: one thread owns the model and decodes every live request in one batch.

Requests wait in a bounded queue. Between decoding steps the engine admits waiting requests into free rows of its
caches and prefills them together, on their rows alone (`Positions.rows`: the rows mid-answer are not touched); then
every live row takes one step. With extra heads and `speculative`, a step is a self-speculative chain: each row
feeds its certain token and its heads' drafts, head 1 verifies them, and the row keeps the longest agreeing prefix,
so a greedy request gets exactly the tokens plain decoding would give it alone, whatever else is in the batch. A
batch holding a sampled request steps one token per row (heads still fed, so their caches stay complete). Finished,
cancelled and failed rows leave the batch at once and their row takes the next request.

Tokens reach a request through its `emit` callback, called on the engine thread as they become certain.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from multitoken.decoding.fused_heads import FusedHeads
from multitoken.decoding.sampling import sample
from multitoken.decoding.speculative import verify_chain
from multitoken.model import DecodeCaches, MTPModel

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
    pos: int  # tokens of this row in the cache
    block: list[int]  # what the next step feeds: the certain token, then the heads' drafts


class Engine:
    """Continuous batching over max_batch_size cache rows of `context` positions each."""

    def __init__(self, model: MTPModel, max_batch_size: int = 8, speculative: bool = True, context: int | None = None,
                 max_queue: int = 64, draft_len: int | None = None) -> None:
        self.model = model.eval()
        self.max_batch_size = max_batch_size
        self.context = min(context or model.config.max_seq_len, model.config.max_seq_len)
        self.k = (draft_len or model.n_future - 1) if speculative and model.n_future > 1 else 0
        self.device = model.output.weight.device
        if self.k:  # head 1 and the drafting heads as one batched layer, as speculative decoding runs them
            self.heads = FusedHeads(model, self.k + 1)
            self.caches = DecodeCaches(model, max_batch_size, self.context, heads="none", fused=self.k + 1)
        else:
            self.heads = None
            self.caches = DecodeCaches(model, max_batch_size, self.context, heads="next")
        self.waiting: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.rows: list[Row | None] = [None] * max_batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run, and what they did (for /health, logs and tests)
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

    def _hidden(self, block: torch.Tensor, rows: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Every head's hidden state (R, W, heads, d) for a block (R, W) on cache rows `rows` from positions `start`
        (R,), before the shared norm and unembedding (which the caller applies only where it needs logits)."""
        model = self.model
        where = self.caches.at(start, block.shape[1], rows=rows)
        z = model.trunk(block, where)
        if self.heads is not None:
            cos, sin = model.rope(block.shape[1], where, self.heads.window)
            return self.heads(z, cos, sin, where, self.caches.fused)  # (R, W, k + 1, d)
        return model.head(0, z, where)[:, :, None]

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
        hidden = self._hidden(block, rows, torch.zeros_like(rows))
        logits = self.model.unembed(hidden[torch.arange(len(new), device=self.device), lengths - 1])  # (n, heads, V)
        for j, (i, job) in enumerate(new):
            first = self._choose(job, logits[j:j + 1, 0])
            self.rows[i] = Row(job, len(job.prompt), [first, *self._drafts(logits[j])])
            self._deliver(i, [first])

    def _choose(self, job: Job, logits: torch.Tensor) -> int:
        return int(sample(logits, job.temperature, None, job.top_p, job.generator)[0])

    def _drafts(self, logits: torch.Tensor) -> list[int]:
        """The extra heads' greedy guesses (heads, V) -> k tokens."""
        return logits[1:self.k + 1].argmax(-1).tolist() if self.k else []

    def _step(self) -> None:
        live = [i for i, row in enumerate(self.rows) if row is not None]
        rows = [self.rows[i] for i in live]
        self.peak_live = max(self.peak_live, len(live))
        chain = self.k > 0 and all(row.job.greedy for row in rows)
        # Near the end of the context a chain verifies fewer drafts (its last slots must exist).
        width = min(self.k + 1, min(self.context - row.pos for row in rows)) if chain else 1
        block = torch.tensor([row.block[:width] for row in rows], device=self.device)
        start = torch.tensor([row.pos for row in rows], device=self.device)
        hidden = self._hidden(block, torch.tensor(live, device=self.device), start)  # (R, W, heads, d)
        self.steps += 1
        # Head 1 is unembedded at every position (it verifies); the drafting heads only where the row goes on from
        # (after the accepted prefix): R * (W + k) rows of the vocabulary matrix, not R * W * (k + 1).
        target = self.model.unembed(hidden[:, :, 0])  # (R, W, V)
        if chain:
            n_acc, correction = verify_chain(block, target)
            at = n_acc
            n_acc, correction = n_acc.tolist(), correction.tolist()
            self.drafts_accepted += sum(n_acc)
        else:
            at = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        drafts = self.model.unembed(hidden[torch.arange(len(rows), device=self.device), at, 1:]).argmax(-1).tolist() \
            if self.k else [[] for _ in rows]
        for j, (i, row) in enumerate(zip(live, rows)):
            row.job.forwards += 1
            if chain:
                a = n_acc[j]
                kept = row.block[1:a + 1] + [correction[j]]  # the verified drafts, then head 1's own next token
                row.pos += a + 1
                row.block = [correction[j], *drafts[j]]
            else:
                nxt = self._choose(row.job, target[j:j + 1, 0])
                kept = [nxt]
                row.pos += 1
                row.block = [nxt, *drafts[j]]
            self._deliver(i, kept)

    def _deliver(self, i: int, tokens: list[int]) -> None:
        """Hand a row's newly certain tokens to its job, and retire the row when its answer is over."""
        row = self.rows[i]
        job = row.job
        if job.cancelled.is_set():
            self.cancelled += 1
            return self._finish(i, None)
        room = job.max_tokens - job.generated
        tokens = tokens[:room]
        reason = None
        for n, token in enumerate(tokens):
            if token in job.stop_ids:
                tokens, reason = tokens[:n + 1], "stop"
                break
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


def _emit(job: Job, tokens: list[int], reason: str | None) -> None:
    try:
        job.emit(tokens, reason)
    except RuntimeError:  # its receiver is gone (the server's event loop closed): nobody is waiting for it
        job.cancel()
