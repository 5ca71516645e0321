"""Prompt files, for decoding many prompts at once (`distill`, `bench decode --prompts`).

Two formats, told apart by the file name:
- `.jsonl`: one JSON object per line, either `{"messages": [{"role": "user", "content": "..."}, ...]}` (a
  conversation, rendered with the model's chat template; a final assistant message is dropped, so that the model
  answers in its place) or `{"prompt": "..."}` (one user message with --chat, plain text otherwise).
- anything else: UTF-8 text, one prompt per non-empty line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from multitoken.data.chat import ROLES
from multitoken.errors import ConfigError


@dataclass(frozen=True)
class Prompt:
    """One prompt: plain text, or a conversation (`messages`) for a chat template."""

    text: str | None = None
    messages: tuple[dict, ...] | None = None

    @property
    def key(self) -> str:
        """A stable name for the prompt (its content), e.g. for a train/validation split by hash."""
        return self.text if self.messages is None else json.dumps(self.messages, sort_keys=True, ensure_ascii=False)

    def conversation(self) -> list[dict]:
        return list(self.messages) if self.messages is not None else [{"role": "user", "content": self.text}]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"prompt file {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"prompt file {path} is a folder: give a .jsonl file or a text file with one prompt per "
                          "line") from None
    except OSError as e:
        raise ConfigError(f"cannot read prompt file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompt file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None


def _messages(value, where: str) -> tuple[dict, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        raise ConfigError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": ..., \"content\": ...}} "
                          "objects with string values")
    unknown = [m["role"] for m in value if m["role"] not in ROLES]
    if unknown:
        raise ConfigError(f"{where}: role {unknown[0]!r} is not one of {', '.join(ROLES)} (the roles a chat "
                          "template renders and the server accepts)")
    messages = [{"role": m["role"], "content": m["content"]} for m in value]
    if messages[-1]["role"] == "assistant":  # a recorded answer: the model gives its own instead
        messages.pop()
    if not messages:
        raise ConfigError(f"{where}: the conversation holds only an assistant message: nothing to answer")
    return tuple(messages)


def _from_jsonl(path: Path, lines: list[str]) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"{where} is not JSON ({e.msg}): write one JSON object per line") from None
        if isinstance(record, dict) and "messages" in record:
            prompts.append(Prompt(messages=_messages(record["messages"], where)))
        elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"].strip():
            prompts.append(Prompt(text=record["prompt"]))
        else:
            raise ConfigError(f"{where} has neither \"messages\" (a conversation) nor a non-empty \"prompt\" string")
    return prompts


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of a .jsonl file or of a text file (one per line); refuses a file without any."""
    path = Path(path).expanduser()
    lines = _read_lines(path)
    if path.suffix == ".jsonl":
        prompts = _from_jsonl(path, lines)
        if not prompts:
            raise ConfigError(f"prompt file {path} holds no prompts: write one JSON object per line, "
                              "{\"messages\": [...]} or {\"prompt\": \"...\"}")
        return prompts
    prompts = [Prompt(text=line) for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {path} has no prompts: put one prompt per line")
    return prompts


def encode_prompt(tokenizer, prompt: Prompt, chat: bool) -> list[int]:
    """Token ids for the model: through its chat template (chat), or the text as it is."""
    if chat:
        from multitoken.data.chat import encode_chat

        return encode_chat(tokenizer, prompt.conversation())
    if prompt.messages is not None:
        raise ConfigError("the prompt file holds conversations (\"messages\"), which need the model's chat template: "
                          "add --chat")
    return tokenizer.encode_prompt(prompt.text)
