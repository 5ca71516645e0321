"""The OpenAI-compatible HTTP API over the engine: /v1/completions, /v1/chat/completions (the model's chat template),
streamed as server-sent events or not, /v1/models and /health. FastAPI on uvicorn.

Bad requests get a 400 with OpenAI's error body naming the field (unknown fields included, so a misspelt option is
never silently ignored); a full queue a 503 with Retry-After; a missing or wrong API key a 401. A client that goes
away mid-stream cancels its row, which the next request takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
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


def create_app(engine: Engine, tokenizer, model_name: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="multitoken", description="OpenAI-compatible serving with self-speculative decoding")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        message = "the request body is not valid JSON" if first.get("type") == "json_invalid" else \
            f"{where}: {first.get('msg', 'invalid')}" + (" (not a field of this request)"
                                                          if first.get("type") == "extra_forbidden" else "")
        return JSONResponse(error_body(message, "invalid_request_error", where), status_code=400)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status,
                            headers=exc.headers)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/") and \
                request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse(error_body("missing or wrong API key: send Authorization: Bearer <key>",
                                           "authentication_error"), status_code=401)
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
    async def completions(body: CompletionRequest):
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
        return await answer(body, ids, prefix, body.max_tokens, "text_completion", "prompt")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        from multitoken.data.chat import encode_chat
        from multitoken.errors import ConfigError

        if not tokenizer.chat_template:
            raise RequestError(400, "this model has no chat template: use /v1/completions", "messages")
        try:
            ids = encode_chat(tokenizer, [m.model_dump() for m in body.messages])
        except ConfigError as e:
            raise RequestError(400, str(e), "messages") from None
        max_tokens = body.max_completion_tokens or body.max_tokens or engine.context - len(ids)
        return await answer(body, ids, [], max_tokens, "chat.completion", "messages")

    async def answer(body: Options, ids: list[int], prefix: list[int], max_tokens: int, kind: str,
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

        def finished(reason: str) -> None:
            seconds = time.perf_counter() - job.submitted
            log.info("%s %s prompt %d tokens, %d new, tau %.2f, %.1f tokens/s, finish %s", rid, kind, len(ids),
                     job.generated, job.generated / max(job.forwards, 1), job.generated / max(seconds, 1e-9), reason)

        def choice(content: str, reason: str | None, first: bool = False) -> dict:
            if kind == "text_completion":
                return {"index": 0, "text": content, "finish_reason": reason, "logprobs": None}
            if body.stream:
                delta = ({"role": "assistant"} if first else {}) | ({"content": content} if content or first else {})
                return {"index": 0, "delta": delta, "finish_reason": reason}
            return {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}

        if not body.stream:
            try:
                parts, reason = [], None
                async for delta, reason in deltas():
                    parts.append(delta)
            finally:
                job.cancel()
            finished(reason)
            if reason == "error":
                raise RequestError(500, "decoding failed on the server (its log has the traceback): retry",
                                   kind="server_error")
            return {"id": rid, "object": kind, "created": created, "model": model_name,
                    "choices": [choice("".join(parts), reason)], "usage": usage()}

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
