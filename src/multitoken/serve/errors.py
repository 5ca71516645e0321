"""Every refusal in OpenAI's error body ({"error": {"message", "type", "param", "code"}}), logged: bad bodies (the
field named as the client wrote it), wrong methods and paths, bodies that are not JSON, and the API's own refusals."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from multitoken.serve.requests import ChatRequest, CompletionRequest, Message

log = logging.getLogger("multitoken.serve")
ROUTES = "/v1/completions, /v1/chat/completions, /v1/models and /health"


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


def not_json(request: Request) -> str | None:
    """Why a body is not JSON by its Content-Type header, or None when it says JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return None
    return f"the request body must be JSON: send Content-Type: application/json (got {kind or 'none'})"


def http_refusal(request: Request, exc: HTTPException) -> tuple[str, str | None]:
    """(message, param) for what Starlette refuses before a route runs: a wrong method or path, a body it cannot
    read."""
    if exc.status_code == 405:
        allowed = (getattr(exc, "headers", None) or {}).get("Allow")
        return f"{request.method} is not allowed on {request.url.path}: use {allowed or 'another method'}", None
    if exc.status_code == 404:
        return f"no such endpoint: {request.url.path} (this server has {ROUTES})", None
    if exc.status_code == 400:  # a body that does not decode (invalid UTF-8 among others)
        return "the request body is not valid JSON (UTF-8 text)", None
    return str(exc.detail), None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, param = invalid_body(list(exc.errors()))
        if param is None and (why := not_json(request)):
            message = why
        return refusal(request, 400, message, "invalid_request_error", param)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return refusal(request, exc.status, exc.message, exc.kind, exc.param, exc.code, exc.headers)

    @app.exception_handler(HTTPException)
    async def starlette_refused(request: Request, exc: HTTPException):
        message, param = http_refusal(request, exc)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return refusal(request, exc.status_code, message, kind, param, headers=getattr(exc, "headers", None))
