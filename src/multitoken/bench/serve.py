"""`bench serve`: the server under load on loopback, several ways in one run.

Each case starts a local server (`serve/local.py`) and runs N concurrent clients, each sending its share of the
requests one after another as streamed completions (or chats), the way an application's users would: a count of
requests in all, or (with a duration) requests cycling through the prompts until the time is up, those under way
then run to their end and counted. Per case: requests/s, output tokens/s, time to first token and time per output
token (percentiles over requests), the share of chain steps, and whether every request was answered. The cases:
the server's own choice per step (auto), speculative decoding at every greedy step, plain decoding at the full
batch, and plain decoding one request at a time (max batch 1: a server without batching).
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

CASES = {"auto": dict(speculative="auto"), "speculative": dict(speculative="on"), "plain": dict(speculative="off"),
         "one at a time": dict(speculative="off", max_batch_size=1)}


@dataclass
class Reply:
    ok: bool
    status: int
    tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0

    @property
    def per_token_s(self) -> float | None:
        """Time per output token after the first (None for a reply of one token or none)."""
        if self.first_token_s is None or self.tokens < 2:
            return None
        return (self.seconds - self.first_token_s) / (self.tokens - 1)


def stream_request(port: int, path: str, body: dict, timeout: float = 600.0) -> Reply:
    """One streamed request over plain HTTP: when its first text arrived, when it ended, its usage."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            return Reply(False, response.status, seconds=time.perf_counter() - start)
        first, tokens = None, 0
        for raw in response:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choice = chunk["choices"][0]
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if text and first is None:
                first = time.perf_counter() - start
            if "usage" in chunk:
                tokens = chunk["usage"]["completion_tokens"]
        return Reply(True, 200, tokens, first, time.perf_counter() - start)
    except (OSError, http.client.HTTPException, ValueError):
        return Reply(False, 0, seconds=time.perf_counter() - start)
    finally:
        conn.close()


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50": statistics.median(ordered), "p90": at(0.9), "p99": at(0.99)}


def client_bodies(bodies: list[dict], client: int, clients: int, deadline: float | None) -> Iterator[dict]:
    """What one of `clients` clients sends, in turn: every clients-th body from its own offset; with a deadline
    (time.perf_counter), cycling through the bodies until it has passed (a request begun before it runs to its end)."""
    if deadline is None:
        yield from bodies[client::clients]
        return
    for i in itertools.count(client, clients):
        if time.perf_counter() >= deadline:
            return
        yield bodies[i % len(bodies)]


def run_case(ckpt: str, name: str, bodies: list[dict], path: str, clients: int, settings: dict,
             duration: float | None = None) -> dict:
    """One case: a fresh local server with these settings, `clients` threads sharing the requests (each body once),
    or, given a duration in seconds, sending them over and over until it is over."""
    from multitoken.serve.local import LocalServer

    with LocalServer(ckpt, **settings) as server:
        # Warm up (first calls allocate; with compile, each kind of step compiles at its first use, and auto times
        # chains first): a few greedy requests at once, long enough for both kinds to run.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda body: stream_request(server.port, path, {**body, "max_tokens": 16}), bodies[:4]))
        for _ in range(2):
            stream_request(server.port, path, {**bodies[0], "max_tokens": 16})
        steps_before, chain_before = server.engine.steps, server.engine.chain_steps
        compiled_before = server.engine.compile_seconds
        accepted_before = server.engine.drafts_accepted
        start = time.perf_counter()
        deadline = None if duration is None else start + duration

        def client(c: int) -> list[Reply]:
            return [stream_request(server.port, path, body) for body in client_bodies(bodies, c, clients, deadline)]

        with ThreadPoolExecutor(clients) as pool:
            replies = [r for share in pool.map(client, range(clients)) for r in share]
        seconds = time.perf_counter() - start
        engine = server.engine
        steps = engine.steps - steps_before
        compile_seconds = engine.compile_seconds
        # What auto measured to choose with (warm-up included: it may have settled every batch size before the
        # timed requests, and then run only the faster kind while timed)
        step_seconds = {f"{kind}@{batch}": s for (kind, batch), s in sorted(engine.times.seconds.items())}
        tau = engine.times.tau
    answered = [r for r in replies if r.ok]
    tokens = sum(r.tokens for r in answered)
    return {
        "case": name, "settings": settings, "duration_s": duration, "requests": len(replies),
        "answered": len(answered), "failed_statuses": sorted({r.status for r in replies if not r.ok}),
        "seconds": seconds,
        "requests_per_s": len(answered) / seconds, "output_tokens": tokens, "output_tokens_per_s": tokens / seconds,
        "time_to_first_token_s": percentiles([r.first_token_s for r in answered if r.first_token_s is not None]),
        "time_per_output_token_s": percentiles([r.per_token_s for r in answered if r.per_token_s is not None]),
        "compile_seconds": compile_seconds, "compile_seconds_in_timing": compile_seconds - compiled_before,
        "engine_steps": steps, "chain_steps": engine.chain_steps - chain_before, "peak_batch": engine.peak_live,
        "draft_len": engine.k, "drafts_accepted": engine.drafts_accepted - accepted_before,
        "auto_step_seconds": step_seconds, "auto_tau": tau,
        "replies": [asdict(r) for r in replies],
    }


def bench_serve_cases(ckpt: str, bodies: list[dict], path: str, clients: int, max_batch_size: int,
                      cases: list[str], context: int | None, device: str, compile: bool = False,
                      duration: float | None = None) -> list[dict]:
    results = []
    for name in cases:
        # Room in the queue for every request that can be waiting at once: never a 503 in a benchmark
        settings = {"max_batch_size": max_batch_size, "max_queue": max(len(bodies), clients, 1), "context": context,
                    "device": device, "compile": compile, **CASES[name]}
        results.append(run_case(ckpt, name, bodies, path, clients, settings, duration))
    return results


def report(results: list[dict]) -> str:
    base = next((r for r in results if r["case"] == "one at a time"), None)
    lines = [f"{'case':<15} {'answered':>9} {'req/s':>7} {'tokens/s':>9} {'vs 1-at-a-time':>15} "
             f"{'TTFT p50':>9} {'p90':>7} {'ms/token p50':>13} {'p90':>7} {'batch':>6} {'chain steps':>12}"]
    for r in results:
        ttft, tpot = r["time_to_first_token_s"], r["time_per_output_token_s"]
        ratio = f"{r['output_tokens_per_s'] / base['output_tokens_per_s']:.2f}x" if base else "-"
        ms = lambda v: "-" if v is None else f"{1000 * v:.0f}"  # noqa: E731
        lines.append(f"{r['case']:<15} {r['answered']:>4}/{r['requests']:<4} {r['requests_per_s']:>7.2f} "
                     f"{r['output_tokens_per_s']:>9.1f} {ratio:>15} {ms(ttft['p50']):>7}ms {ms(ttft['p90']):>5}ms "
                     f"{ms(tpot['p50']):>11}ms {ms(tpot['p90']):>5}ms {r['peak_batch']:>6} "
                     f"{r['chain_steps'] / max(r['engine_steps'], 1):>11.0%}")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["case"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar(names, [r["output_tokens_per_s"] for r in results], color="tab:blue")
    axes[0].set_title("output tokens/s (higher is better)")
    for ax, key, title in ((axes[1], "time_to_first_token_s", "time to first token (ms)"),
                           (axes[2], "time_per_output_token_s", "time per output token (ms)")):
        p50 = [1000 * (r[key]["p50"] or 0) for r in results]
        p90 = [1000 * (r[key]["p90"] or 0) for r in results]
        ax.bar(names, p90, color="tab:orange", alpha=0.4, label="p90")
        ax.bar(names, p50, color="tab:orange", label="p50")
        ax.set_title(title)
        ax.legend()
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
