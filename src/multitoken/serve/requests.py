"""The request bodies the API takes (OpenAI's fields; an unknown field is refused, so a misspelt option is never
silently ignored)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from multitoken.data.chat import ROLES


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

    role: Literal[ROLES]
    content: str


class ChatRequest(Options):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
