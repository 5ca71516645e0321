"""A server's settings, checked before anything starts: the numbers, the context against the model's, the memory the
batch's caches will take against what the machine has (before the model loads, as `train` checks its step), and the
address, bound before the server says it is serving there."""

from __future__ import annotations

import errno
import socket

from multitoken.config import ModelConfig
from multitoken.errors import ConfigError

BYTES_PER_VALUE = 4  # fp32, the largest a checkpoint loads in: the estimate errs high, never low


def check_numbers(max_batch_size: int, max_queue: int, port: int, context: int | None,
                  api_key: str | None = None) -> None:
    if max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be at least 1 (got {max_batch_size})")
    if max_queue < 1:
        raise ConfigError(f"--max-queue must be at least 1 (got {max_queue})")
    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be in 0..65535 (got {port}; 0 takes a free one)")
    if context is not None and context < 2:
        raise ConfigError(f"--context must be at least 2 tokens (got {context})")
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key is empty, so no request could ever match it: give a key, or leave the option "
                          "out to serve without one")


def serving_bytes(config: ModelConfig, max_batch_size: int, context: int) -> dict[str, int]:
    """What serving takes, by part: the weights, and every batch row's caches (the trunk's and head 1's keys and
    values, the drafts' source's, and the trunk output the source reads), fp32."""
    from multitoken.training.memory import parameter_count

    slots = context + config.n_future + 16  # the drafts' scratch room past the context (a compiled chain's)
    per_layer = 2 * config.kv_heads * config.head_size  # keys and values per position
    layers = config.n_trunk_layers + 1 + (config.n_future - 1) + (config.drafter != "none")
    width = 3 * config.d_model if config.drafter != "none" else config.d_model
    caches = max_batch_size * slots * (layers * per_layer + width)
    return {"weights": BYTES_PER_VALUE * parameter_count(config), "caches": BYTES_PER_VALUE * caches}


def check_model_fits(config: ModelConfig, max_batch_size: int, context: int | None, device) -> int:
    """The context each request gets, after refusing a --context beyond the model's and a batch whose caches cannot
    fit in the memory available."""
    from multitoken.training.memory import available_bytes

    if context is not None and context > config.max_seq_len:
        raise ConfigError(f"--context {context} exceeds the model's context of {config.max_seq_len} tokens: use at "
                          f"most {config.max_seq_len}, or leave it out for the model's")
    context = context or config.max_seq_len
    need, have = serving_bytes(config, max_batch_size, context), available_bytes(device)
    if have is not None and sum(need.values()) > have:
        gb = lambda n: f"{n / 1e9:,.1f} GB"  # noqa: E731
        raise ConfigError(f"serving {max_batch_size} rows of {context} tokens needs about {gb(sum(need.values()))} "
                          f"(caches {gb(need['caches'])}, weights {gb(need['weights'])}) but {device} has "
                          f"{gb(have)} available: use a smaller --max-batch-size or --context")
    return context


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line error naming the address and the fix."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host} is not an address of this machine ({e}): use 127.0.0.1 (this machine "
                          "only) or 0.0.0.0 (every interface)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host} is not an address of this machine: use 127.0.0.1 (this machine "
                              "only) or 0.0.0.0 (every interface)") from None
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        raise ConfigError(f"{host}:{port} {why}: give another --port (0 takes a free one), or stop what holds "
                          "it") from None
    sock.setblocking(False)
    return sock
