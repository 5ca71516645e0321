"""One request's answer: checked against the context, its job submitted to the engine, and its text as the client
sees it, whole or streamed as server-sent events. A client that goes away, mid-stream or while waiting for a whole
answer, cancels its row, which the next request takes. Every answer writes one log line."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Coroutine

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from multitoken.decoding.text import TextStream
from multitoken.serve.engine import Engine, Job, QueueFull
from multitoken.serve.errors import RequestError
from multitoken.serve.requests import Options

log = logging.getLogger("multitoken.serve")


def check_request(context: int, body: Options, ids: list[int], max_tokens: int, prompt_field: str) -> list[str]:
    """The request's stop strings, after refusing what cannot be answered within the context."""
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(s == "" for s in stops):
        raise RequestError(400, "stop: an empty string would end the answer before it starts", "stop")
    if not ids:
        raise RequestError(400, f"{prompt_field}: empty", prompt_field)
    if len(ids) >= context:
        raise RequestError(400, f"{prompt_field}: {len(ids)} tokens, but the context is {context}",
                           prompt_field, code="context_length_exceeded")
    if len(ids) + max_tokens > context:
        raise RequestError(400, f"max_tokens: {len(ids)} prompt tokens + {max_tokens} exceed the context of "
                           f"{context}; ask for at most {context - len(ids)}", "max_tokens",
                           code="context_length_exceeded")
    return stops


async def disconnected(request: Request) -> None:
    """Return once the client has closed its connection. The body is already read, so ASGI's next message is the
    disconnect (an event from the server, not a poll)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine):
    """work's result, or None if the client closes its connection first (work is then cancelled): a client that has
    stopped waiting must not hold a batch row until its answer ends."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task.done() else None


class Answer:
    """A request's job in the engine and the text it becomes. kind: "text_completion" or "chat.completion"; prefix:
    the tokens the answer's text continues (a completion's prompt), so that it decodes in place."""

    def __init__(self, engine: Engine, tokenizer, model_name: str, body: Options, ids: list[int], prefix: list[int],
                 max_tokens: int, kind: str, stops: list[str]) -> None:
        self.body, self.ids, self.kind, self.model_name = body, ids, kind, model_name
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.job = Job(ids, max_tokens, lambda tokens, reason: loop.call_soon_threadsafe(self.events.put_nowait,
                                                                                        (tokens, reason)),
                       temperature=body.temperature, top_p=None if body.top_p >= 1 else body.top_p, seed=body.seed,
                       stop_ids=tuple(tokenizer.stop_ids))
        try:
            engine.submit(self.job)
        except QueueFull:
            raise RequestError(503, "the server is at capacity: retry shortly", kind="server_error",
                               headers={"Retry-After": "1"}) from None
        self.rid = ("cmpl-" if kind == "text_completion" else "chatcmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.pieces: list[str] = []
        self.text = TextStream(tokenizer, prefix, list(tokenizer.stop_ids), stops, write=self.pieces.append)

    async def deltas(self):
        """(text delta, finish reason or None) as the engine's tokens arrive."""
        new: list[int] = []
        while True:
            tokens, reason = await self.events.get()
            new += tokens
            self.text.update(new, final=reason is not None)
            if self.text.done and reason is None:  # a stop string: this answer is over, free its row now
                self.job.cancel()
                reason = "stop"
            delta = "".join(self.pieces)
            self.pieces.clear()
            yield delta, reason
            if reason is not None:
                return

    def usage(self) -> dict:
        return {"prompt_tokens": len(self.ids), "completion_tokens": self.job.generated,
                "total_tokens": len(self.ids) + self.job.generated}

    def finished(self, reason: str, status: int = 200) -> None:
        job, seconds = self.job, time.perf_counter() - self.job.submitted
        log.info("%s %d %s prompt %d tokens, %d new, tau %.2f, %.1f tokens/s, finish %s", self.rid, status, self.kind,
                 len(self.ids), job.generated, job.generated / max(job.forwards, 1),
                 job.generated / max(seconds, 1e-9), reason)

    def choice(self, content: str, reason: str | None, first: bool = False) -> dict:
        if self.kind == "text_completion":
            return {"index": 0, "text": content, "finish_reason": reason, "logprobs": None}
        if self.body.stream:
            delta = ({"role": "assistant"} if first else {}) | ({"content": content} if content or first else {})
            return {"index": 0, "delta": delta, "finish_reason": reason}
        return {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}

    async def _whole_text(self) -> tuple[str, str | None]:
        parts, reason = [], None
        async for delta, reason in self.deltas():
            parts.append(delta)
        return "".join(parts), reason

    async def whole(self, request: Request):
        """The answer as one body, once it is over (499, nobody reading, if the client left first)."""
        try:
            answered = await unless_disconnected(request, self._whole_text())
        finally:  # answered, failed or abandoned: the row is free
            self.job.cancel()
        if answered is None:
            self.finished("cancelled", 499)
            return Response(status_code=499)  # nginx's "client closed request": nobody is there to read it
        content, reason = answered
        if reason == "error":  # the refusal's log line is this request's line
            raise RequestError(500, "decoding failed on the server (its log has the traceback): retry",
                               kind="server_error")
        self.finished(reason)
        return {"id": self.rid, "object": self.kind, "created": self.created, "model": self.model_name,
                "choices": [self.choice(content, reason)], "usage": self.usage()}

    def stream(self) -> StreamingResponse:
        """The answer as server-sent events, a chunk per delta, the usage with the last, then [DONE]."""
        chunk_kind = "text_completion" if self.kind == "text_completion" else "chat.completion.chunk"

        async def events():
            reason = None
            try:
                first = True
                async for delta, reason in self.deltas():
                    if delta or reason is not None or first:
                        chunk = {"id": self.rid, "object": chunk_kind, "created": self.created,
                                 "model": self.model_name, "choices": [self.choice(delta, reason, first)]}
                        if reason is not None:
                            chunk["usage"] = self.usage()
                        yield f"data: {json.dumps(chunk)}\n\n"
                        first = False
                yield "data: [DONE]\n\n"
            finally:  # the client went away, or the answer ended: either way the row is free
                self.job.cancel()
                self.finished(reason or "cancelled")

        return StreamingResponse(events(), media_type="text/event-stream")
