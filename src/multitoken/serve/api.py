"""The OpenAI-compatible HTTP API over the engine: /v1/completions, /v1/chat/completions (the model's chat template),
streamed as server-sent events or not, /v1/models and /health. FastAPI on uvicorn.

Bad requests get a 400 with OpenAI's error body naming the field as the client wrote it (`errors.py`); a full queue a
503 with Retry-After; a missing or wrong API key a 401. What one request's answer does: `answer.py`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from multitoken.serve.answer import Answer, check_request
from multitoken.serve.engine import Engine
from multitoken.serve.errors import RequestError, install_error_handlers, refusal
from multitoken.serve.requests import ChatRequest, CompletionRequest, Options


def completion_ids(body: CompletionRequest, tokenizer) -> tuple[list[int], list[int]]:
    """A completion's prompt as token ids, and the tokens its answer's text continues (the prompt's own)."""
    if body.prompt and isinstance(body.prompt, list) and isinstance(body.prompt[0], int):
        ids = list(body.prompt)
        if not all(0 <= i < tokenizer.vocab_size for i in ids):
            raise RequestError(400, f"prompt: token ids must lie in 0..{tokenizer.vocab_size - 1}", "prompt")
        return ids, ids
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise RequestError(400, "prompt: give one prompt per request (n = 1)", "prompt")
    text = body.prompt[0] if isinstance(body.prompt, list) else body.prompt
    ids = tokenizer.encode_prompt(text)
    return ids, (ids[1:] if tokenizer.bos_id is not None else ids)


def chat_ids(body: ChatRequest, tokenizer) -> list[int]:
    """A conversation through the model's chat template."""
    from multitoken.data.chat import encode_chat
    from multitoken.errors import ConfigError

    if not tokenizer.chat_template:
        raise RequestError(400, "this model has no chat template: use /v1/completions", "messages")
    try:
        return encode_chat(tokenizer, [m.model_dump() for m in body.messages])
    except ConfigError as e:
        raise RequestError(400, str(e), "messages") from None


def add_key_check(app: FastAPI, api_key: str | None) -> None:
    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/") and \
                request.headers.get("authorization") != f"Bearer {api_key}":
            return refusal(request, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                           "authentication_error")
        return await call_next(request)


def create_app(engine: Engine, tokenizer, model_name: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="multitoken", description="OpenAI-compatible serving with self-speculative decoding")
    install_error_handlers(app)
    add_key_check(app, api_key)

    @app.get("/health")
    async def health():
        return {"status": "ok" if engine.error is None else "degraded", "live": engine.live,
                "waiting": engine.waiting.qsize(), "max_batch_size": engine.max_batch_size, "steps": engine.steps,
                "drafts_accepted": engine.drafts_accepted, "cancelled": engine.cancelled}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "multitoken"}]}

    async def answer(request: Request, body: Options, ids: list[int], prefix: list[int], max_tokens: int,
                     kind: str, prompt_field: str):
        stops = check_request(engine.context, body, ids, max_tokens, prompt_field)
        reply = Answer(engine, tokenizer, model_name, body, ids, prefix, max_tokens, kind, stops)
        return reply.stream() if body.stream else await reply.whole(request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids, prefix = completion_ids(body, tokenizer)
        return await answer(request, body, ids, prefix, body.max_tokens, "text_completion", "prompt")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        ids = chat_ids(body, tokenizer)
        max_tokens = body.max_completion_tokens or body.max_tokens or engine.context - len(ids)
        return await answer(request, body, ids, [], max_tokens, "chat.completion", "messages")

    return app
