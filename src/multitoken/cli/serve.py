"""`multitoken serve`: an OpenAI-compatible HTTP server over one model, batching requests, with self-speculative
decoding where the model has extra heads."""

from __future__ import annotations

import sys
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser
from multitoken.errors import ConfigError
from multitoken.serve.server import build_server


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("serve", command_parser(serve), help="Serve a model over an OpenAI-compatible API.")


def run(args: Namespace) -> int:
    return call(serve, args)


def check_serve_settings(max_batch_size: int, max_queue: int, port: int, context: int | None) -> None:
    if max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be at least 1 (got {max_batch_size})")
    if max_queue < 1:
        raise ConfigError(f"--max-queue must be at least 1 (got {max_queue})")
    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be in 0..65535 (got {port})")
    if context is not None and context < 2:
        raise ConfigError(f"--context must be at least 2 tokens (got {context})")


def serve(ckpt: str, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 8,
          speculative: Literal["auto", "on", "off"] = "auto", context: int | None = None, max_queue: int = 64,
          api_key: str | None = None, compile: bool = False, device: str = "auto") -> int:
    """Serve a checkpoint over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions (the model's
    chat template), streamed (server-sent events) or not, /v1/models and /health. One engine decodes every live
    request in one batch; waiting requests join it between steps. Greedy answers are token for token what
    `multitoken generate` gives each request alone. Stop with Ctrl-C.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        host: Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: Port to listen on.
        max_batch_size: Requests decoded together, at most; more wait in the queue.
        speculative: Self-speculative decoding with the model's extra heads: auto (per step, whichever of a
            speculative or a plain step gives more tokens/s at the live batch size, as measured while serving), on
            (whenever the batch is greedy), off (plain decoding only).
        context: Tokens per request (prompt and answer), at most; null for the model's context. Each of the
            max_batch_size rows keeps a cache this long.
        max_queue: Requests waiting for a row, at most; beyond it the server answers 503 with Retry-After.
        api_key: Require `Authorization: Bearer API_KEY` on /v1/ requests; null for none.
        compile: Run the decoding steps with fixed shapes over every row, compiled by torch.compile (each kind of
            step compiles on its first use, before its first answer; prefills stay eager).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    import logging

    check_serve_settings(max_batch_size, max_queue, port, context)
    app, engine = build_server(ckpt, max_batch_size, speculative, context, max_queue, api_key, device, compile)
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    drafting = f"{engine.mode}, draft length {engine.k}" if engine.k else "off (no extra heads)" \
        if engine.mode != "off" else "off"
    print(f"serving {ckpt} on http://{host}:{port}/v1 (batch {max_batch_size}, speculative {drafting}, context "
          f"{engine.context}{', compiled steps' if compile else ''})", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.stop()
    return 0
