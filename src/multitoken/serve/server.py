"""A server for a checkpoint: the model loaded, its engine started, the app built over it."""

from __future__ import annotations

from typing import Literal

from multitoken.errors import ConfigError


def build_server(ckpt: str, max_batch_size: int = 8, speculative: Literal["auto", "on", "off"] = "auto",
                 context: int | None = None, max_queue: int = 64, api_key: str | None = None,
                 device: str = "auto", compile: bool = False):
    """(FastAPI app, engine) for a checkpoint; the engine is started, the app not yet served (uvicorn runs it)."""
    import importlib.util

    if not all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn")):
        raise ConfigError("serving needs FastAPI and uvicorn: pip install 'multitoken[serve]'")
    from multitoken.checkpoint import load_checkpoint, read_train_config, resolve_checkpoint
    from multitoken.serve.api import create_app
    from multitoken.serve.engine import Engine
    from multitoken.serve.settings import check_model_fits
    from multitoken.training.runtime import resolve_device

    folder, device = resolve_checkpoint(ckpt), resolve_device(device)
    config = read_train_config(folder).model
    if speculative == "on" and config.n_future == 1 and config.drafter == "none":
        raise ConfigError(f"{ckpt} has no extra heads or drafter to draft with: serve it with --speculative off (or "
                          "auto), or give it heads or a drafter with `train --init-from ... --freeze base`")
    context = check_model_fits(config, max_batch_size, context, device)
    model, _, tokenizer = load_checkpoint(folder, device)
    engine = Engine(model, max_batch_size, speculative=speculative, context=context, max_queue=max_queue,
                    compile=compile).start()
    name = folder.parent.parent.name if folder.parent.name == "checkpoints" else folder.name  # the run's name
    return create_app(engine, tokenizer, name, api_key), engine
