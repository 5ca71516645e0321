"""The OpenAI-compatible HTTP API over the engine: /v1/completions, /v1/chat/completions (the model's chat template),
streamed as server-sent events or not, /v1/models and /health. FastAPI on uvicorn.

Bad requests get a 400 with OpenAI's error body naming the field as the client wrote it (unknown fields included, so
a misspelt option is never silently ignored); a full queue a 503 with Retry-After; a missing or wrong API key a 401.
A client that goes away, mid-stream or while waiting for a whole answer, cancels its row, which the next request
takes. Every completion request, answered or refused, writes one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from multitoken.decoding.text import TextStream
from multitoken.serve.engine import Engine, Job, QueueFull

log = logging.getLogger("multitoken.serve")


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2 ** 63)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None


class CompletionRequest(Options):
    prompt: str | list[str] | list[int]  # text, or (as OpenAI's API allows) token ids
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for completions


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Options):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class RequestError(Exception):
    """A request this server will not run: HTTP status, message, the field it is about, OpenAI's error type."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def refusal(request: Request, status: int, message: str, kind: str, param: str | None = None,
            code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error response, logged: a refused request gets its log line as an answered one does."""
    log.info("%s %s %d %s: %s", request.method, request.url.path, status, kind, message)
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


# Every name a request body may hold at any depth: what a validation error's location keeps (see `field_path`)
FIELDS = frozenset({*CompletionRequest.model_fields, *ChatRequest.model_fields, *Message.model_fields})


def field_path(loc: tuple, kind: str) -> str | None:
    """A validation error's location as the client wrote the field ("messages.0.role"), None for the body as a whole.
    FastAPI puts "body" first; pydantic names the union member it tried ("prompt.str", "prompt.list[int].0"): both
    go. An unknown field (the error kind "extra_forbidden") is named as sent."""
    path = loc[1:] if loc[:1] == ("body",) else loc
    kept = [str(p) for i, p in enumerate(path) if isinstance(p, int) or p in FIELDS
            or (kind == "extra_forbidden" and i == len(path) - 1)]
    return ".".join(kept) or None


def invalid_body(errors: list[dict]) -> tuple[str, str | None]:
    """(message, param) for a body that failed validation: its first error, with every complaint about the same
    field (a union field's value fails each of its members: "prompt: Input should be a valid string or Input should
    be a valid list")."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return "the request body is not valid JSON", None
    param = field_path(first["loc"], first["type"])
    if param is None:  # valid JSON, but not an object
        return f"the request body: {first['msg']}", None
    complaints = dict.fromkeys(e["msg"] for e in errors if field_path(e["loc"], e["type"]) == param)
    unknown = " (not a field of this request)" if first["type"] == "extra_forbidden" else ""
    return f"{param}: {' or '.join(complaints)}{unknown}", param


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


def create_app(engine: Engine, tokenizer, model_name: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="multitoken", description="OpenAI-compatible serving with self-speculative decoding")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, param = invalid_body(list(exc.errors()))
        return refusal(request, 400, message, "invalid_request_error", param)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return refusal(request, exc.status, exc.message, exc.kind, exc.param, exc.code, exc.headers)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/") and \
                request.headers.get("authorization") != f"Bearer {api_key}":
            return refusal(request, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                           "authentication_error")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok" if engine.error is None else "degraded", "live": engine.live,
                "waiting": engine.waiting.qsize(), "max_batch_size": engine.max_batch_size, "steps": engine.steps,
                "drafts_accepted": engine.drafts_accepted, "cancelled": engine.cancelled}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "multitoken"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if body.prompt and isinstance(body.prompt, list) and isinstance(body.prompt[0], int):
            ids = list(body.prompt)
            if not all(0 <= i < tokenizer.vocab_size for i in ids):
                raise RequestError(400, f"prompt: token ids must lie in 0..{tokenizer.vocab_size - 1}", "prompt")
            prefix = ids
        else:
            if isinstance(body.prompt, list) and len(body.prompt) != 1:
                raise RequestError(400, "prompt: give one prompt per request (n = 1)", "prompt")
            text = body.prompt[0] if isinstance(body.prompt, list) else body.prompt
            ids = tokenizer.encode_prompt(text)
            prefix = ids[1:] if tokenizer.bos_id is not None else ids  # the prompt's text: the answer decodes in place
        return await answer(request, body, ids, prefix, body.max_tokens, "text_completion", "prompt")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        from multitoken.data.chat import encode_chat
        from multitoken.errors import ConfigError

        if not tokenizer.chat_template:
            raise RequestError(400, "this model has no chat template: use /v1/completions", "messages")
        try:
            ids = encode_chat(tokenizer, [m.model_dump() for m in body.messages])
        except ConfigError as e:
            raise RequestError(400, str(e), "messages") from None
        max_tokens = body.max_completion_tokens or body.max_tokens or engine.context - len(ids)
        return await answer(request, body, ids, [], max_tokens, "chat.completion", "messages")

    async def answer(request: Request, body: Options, ids: list[int], prefix: list[int], max_tokens: int, kind: str,
                     prompt_field: str):
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if any(s == "" for s in stops):
            raise RequestError(400, "stop: an empty string would end the answer before it starts", "stop")
        if not ids:
            raise RequestError(400, f"{prompt_field}: empty", prompt_field)
        if len(ids) >= engine.context:
            raise RequestError(400, f"{prompt_field}: {len(ids)} tokens, but the context is {engine.context}",
                               prompt_field, code="context_length_exceeded")
        if len(ids) + max_tokens > engine.context:
            raise RequestError(400, f"max_tokens: {len(ids)} prompt tokens + {max_tokens} exceed the context of "
                               f"{engine.context}; ask for at most {engine.context - len(ids)}", "max_tokens",
                               code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(ids, max_tokens, lambda tokens, reason: loop.call_soon_threadsafe(events.put_nowait,
                                                                                   (tokens, reason)),
                  temperature=body.temperature, top_p=None if body.top_p >= 1 else body.top_p, seed=body.seed,
                  stop_ids=tuple(tokenizer.stop_ids))
        try:
            engine.submit(job)
        except QueueFull:
            raise RequestError(503, "the server is at capacity: retry shortly", kind="server_error",
                               headers={"Retry-After": "1"}) from None
        rid = ("cmpl-" if kind == "text_completion" else "chatcmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        pieces: list[str] = []
        text = TextStream(tokenizer, prefix, list(tokenizer.stop_ids), stops, write=pieces.append)

        async def deltas():
            """(text delta, finish reason or None) as the engine's tokens arrive."""
            new: list[int] = []
            while True:
                tokens, reason = await events.get()
                new += tokens
                text.update(new, final=reason is not None)
                if text.done and reason is None:  # a stop string: this answer is over, free its row now
                    job.cancel()
                    reason = "stop"
                delta = "".join(pieces)
                pieces.clear()
                yield delta, reason
                if reason is not None:
                    return

        def usage() -> dict:
            return {"prompt_tokens": len(ids), "completion_tokens": job.generated,
                    "total_tokens": len(ids) + job.generated}

        def finished(reason: str, status: int = 200) -> None:
            seconds = time.perf_counter() - job.submitted
            log.info("%s %d %s prompt %d tokens, %d new, tau %.2f, %.1f tokens/s, finish %s", rid, status, kind,
                     len(ids), job.generated, job.generated / max(job.forwards, 1), job.generated / max(seconds, 1e-9),
                     reason)

        def choice(content: str, reason: str | None, first: bool = False) -> dict:
            if kind == "text_completion":
                return {"index": 0, "text": content, "finish_reason": reason, "logprobs": None}
            if body.stream:
                delta = ({"role": "assistant"} if first else {}) | ({"content": content} if content or first else {})
                return {"index": 0, "delta": delta, "finish_reason": reason}
            return {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}

        async def whole() -> tuple[str, str | None]:
            """The answer's text and finish reason, once it is over."""
            parts, reason = [], None
            async for delta, reason in deltas():
                parts.append(delta)
            return "".join(parts), reason

        if not body.stream:
            try:
                answered = await unless_disconnected(request, whole())
            finally:  # answered, failed or abandoned: the row is free
                job.cancel()
            if answered is None:
                finished("cancelled", 499)
                return Response(status_code=499)  # nginx's "client closed request": nobody is there to read it
            content, reason = answered
            if reason == "error":  # the refusal's log line is this request's line
                raise RequestError(500, "decoding failed on the server (its log has the traceback): retry",
                                   kind="server_error")
            finished(reason)
            return {"id": rid, "object": kind, "created": created, "model": model_name,
                    "choices": [choice(content, reason)], "usage": usage()}

        chunk_kind = "text_completion" if kind == "text_completion" else "chat.completion.chunk"

        async def events_stream():
            reason = None
            try:
                first = True
                async for delta, reason in deltas():
                    if delta or reason is not None or first:
                        chunk = {"id": rid, "object": chunk_kind, "created": created, "model": model_name,
                                 "choices": [choice(delta, reason, first)]}
                        if reason is not None:
                            chunk["usage"] = usage()
                        yield f"data: {json.dumps(chunk)}\n\n"
                        first = False
                yield "data: [DONE]\n\n"
            finally:  # the client went away, or the answer ended: either way the row is free
                job.cancel()
                finished(reason or "cancelled")

        return StreamingResponse(events_stream(), media_type="text/event-stream")

    return app
