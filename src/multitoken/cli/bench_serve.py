"""`multitoken bench serve`'s run: the settings checked before the model loads, the request bodies, every case
against a fresh local server, and the report, JSON and plot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from multitoken.cli.bench_decode import check_outputs, decode_prompts
from multitoken.cli.common import require_positive, write_json
from multitoken.errors import ConfigError


def check_serve_settings(a: SimpleNamespace) -> tuple[list[str], int | None]:
    """The cases and the count of requests (None with --duration), after refusing settings that cannot run."""
    from multitoken.bench.serve import CASES

    names = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        raise ConfigError(f"--cases {a.cases!r}: choose among {', '.join(CASES)} (comma-separated)")
    if a.requests is not None and a.duration is not None:
        raise ConfigError("--requests and --duration: give one (a count of requests, or seconds of load)")
    if a.duration is not None and not a.duration > 0:
        raise ConfigError(f"--duration must be a positive number of seconds (got {a.duration})")
    requests = 256 if a.requests is None and a.duration is None else a.requests
    require_positive(SimpleNamespace(clients=a.clients, requests=requests, max_new_tokens=a.max_new_tokens,
                                     max_batch_size=a.max_batch_size), "clients", "max_new_tokens", "max_batch_size",
                     *(["requests"] if requests is not None else []))
    check_outputs(a.json, a.plot, "serve.png")
    return names, requests


def request_bodies(a: SimpleNamespace, names: list[str], requests: int | None) -> tuple[list[dict], str]:
    """The requests' bodies (prompts as token ids, so every case sees the same) and where the prompts came from."""
    from multitoken.checkpoint import load_checkpoint, read_train_config, resolve_checkpoint

    model, _, tokenizer = load_checkpoint(a.ckpt, "cpu")
    if {"speculative", "auto"} & set(names) and model.n_future == 1 and not hasattr(model, "drafter"):
        raise ConfigError(f"{a.ckpt} has no extra heads and no drafter: keep to --cases plain,'one at a time', or "
                          "train it heads or a drafter first")
    ids, source = decode_prompts(a, model, read_train_config(resolve_checkpoint(a.ckpt)), tokenizer)
    # A count of requests: that many bodies, each sent once; a duration: one per prompt, sent over and over
    bodies = [{"prompt": ids[i % len(ids)], "max_tokens": a.max_new_tokens, "temperature": 0}
              for i in range(requests if a.duration is None else len(ids))]
    return bodies, source


def run_serve(a: SimpleNamespace) -> int:
    from multitoken.bench.serve import bench_serve_cases, plot as plot_serve, report

    names, requests = check_serve_settings(a)
    bodies, source = request_bodies(a, names, requests)
    load = f"{requests} requests from {a.clients} clients" if a.duration is None else \
        f"{a.clients} clients sending requests for {a.duration:g} s"
    print(f"benchmarking the server on {a.ckpt}: {load} ({source}), up to {a.max_new_tokens} new tokens each, batch "
          f"{a.max_batch_size}")
    results = bench_serve_cases(a.ckpt, bodies, "/v1/completions", a.clients, a.max_batch_size, names, a.context,
                                a.device, a.compile, a.duration)
    print(report(results))
    if a.json:
        write_json(a.json, {"ckpt": str(a.ckpt), "prompts": source, "clients": a.clients, "requests": requests,
                            "duration_s": a.duration, "max_new_tokens": a.max_new_tokens,
                            "max_batch_size": a.max_batch_size, "compile": a.compile, "cases": results})
    if a.plot:
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_serve(results, a.plot)
        print(f"wrote {a.plot}")
    return 0
