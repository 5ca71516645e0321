"""`multitoken serve`: an OpenAI-compatible HTTP server over one model, batching requests, with self-speculative
decoding where the model has extra heads."""

from __future__ import annotations

import sys
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser
from multitoken.serve.server import build_server
from multitoken.serve.settings import bind, check_numbers


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("serve", command_parser(serve), help="Serve a model over an OpenAI-compatible API.")


def run(args: Namespace) -> int:
    return call(serve, args)


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
        port: Port to listen on (0: a free one; the line "serving ... on" names the port bound).
        max_batch_size: Requests decoded together, at most; more wait in the queue.
        speculative: Self-speculative decoding with the model's extra heads: auto (per step, whichever of a
            speculative or a plain step gives more tokens/s at the live batch size, as measured while serving), on
            (whenever the batch is greedy), off (plain decoding only).
        context: Tokens per request (prompt and answer), at most, up to the model's context; null for the model's.
            Each of the max_batch_size rows keeps a cache this long (checked against the memory available before
            the model loads).
        max_queue: Requests waiting for a row, at most; beyond it the server answers 503 with Retry-After.
        api_key: Require `Authorization: Bearer API_KEY` on /v1/ requests; null for none.
        compile: Run the decoding steps with fixed shapes over every row, compiled by torch.compile (each kind of
            step compiles on its first use, before its first answer; prefills stay eager).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    import logging

    check_numbers(max_batch_size, max_queue, port, context, api_key)
    sock = bind(host, port)  # before anything loads: a busy port or a wrong host fails at once, in one line
    try:
        app, engine = build_server(ckpt, max_batch_size, speculative, context, max_queue, api_key, device, compile)
    except BaseException:
        sock.close()
        raise
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    drafting = f"{engine.mode}, draft length {engine.k}" if engine.k else "off (no extra heads)" \
        if engine.mode != "off" else "off"
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"serving {ckpt} on http://{shown}:{bound_port}/v1 (batch {max_batch_size}, speculative {drafting}, "
          f"context {engine.context}{', compiled steps' if compile else ''})", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        engine.stop()
        sock.close()
    return 0
