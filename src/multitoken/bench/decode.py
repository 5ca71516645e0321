"""Plain vs self-speculative decoding on the same prompts, in one run, alternating, with outputs compared.

Both decoders run on every batch in turns (plain first on even rounds, speculative first on odd ones) so that
warm-up, caches and machine load fall on both alike; a first untimed round warms both up.
"""

from __future__ import annotations

import time

import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.speculative import DecodeStats, speculative_generate
from multitoken.model import MTPModel


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def bench_decode(model: MTPModel, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
                 draft_len: int | None = None, temperature: float = 0.0, repeats: int = 3, seed: int = 0,
                 device: torch.device | str = "cpu") -> dict:
    batches = [pad_prompts(prompts[i:i + batch_size], device) for i in range(0, len(prompts), batch_size)]
    sampling = dict(temperature=temperature)

    def plain(batch):
        return generate(model, batch[0], max_new_tokens, lengths=batch[1],
                        generator=torch.Generator(device=device).manual_seed(seed), **sampling)

    def speculative(batch):
        return speculative_generate(model, batch[0], max_new_tokens, draft_len=draft_len, lengths=batch[1],
                                    generator=torch.Generator(device=device).manual_seed(seed), **sampling)

    plain(batches[0]), speculative(batches[0])  # warm-up, untimed
    plain_seconds = spec_seconds = 0.0
    stats = DecodeStats()
    identical = True
    for round_ in range(repeats):
        for batch in batches:
            order = ("plain", "spec") if round_ % 2 == 0 else ("spec", "plain")
            for which in order:
                if which == "plain":
                    plain_out, seconds = _timed(lambda: plain(batch))
                    plain_seconds += seconds
                else:
                    (spec_out, call_stats), seconds = _timed(lambda: speculative(batch))
                    spec_seconds += seconds
                    stats.add(call_stats)
            identical &= bool(torch.equal(plain_out, spec_out))
    tokens = repeats * len(prompts) * max_new_tokens
    plain_rate, spec_rate = tokens / plain_seconds, tokens / spec_seconds
    k, trunk = len(stats.acceptance_per_position), model.config.n_trunk_layers
    return {
        "tokens_per_s_plain": plain_rate,
        "tokens_per_s_speculative": spec_rate,
        "speedup": spec_rate / plain_rate,
        "tau": stats.tau,
        "acceptance_per_position": stats.acceptance_per_position,
        # Under sampling the two decoders draw differently (same law, different random streams): not comparable.
        "identical": identical if temperature == 0 else None,
        "batch_size": batch_size,
        "device": str(torch.device(device)),
        "draft_len": k,
        # speedup / tau is a plain step's time over a speculative step's. Where only reading weights costs (large
        # models on a GPU), a plain step reads trunk + head 1 and a speculative one trunk + k + 1 heads: this limit.
        "memory_bound_limit": (trunk + 1) / (trunk + k + 1),
        "max_new_tokens": max_new_tokens,
        "num_prompts": len(prompts),
        "repeats": repeats,
        "temperature": temperature,
        "forwards_plain": repeats * len(batches) * max_new_tokens,  # one per token (the prefill's gives the first)
        "forwards_speculative": stats.forwards + repeats * len(batches),  # verification forwards + prefills
        "cpu_threads": torch.get_num_threads(),
    }


def format_decode_table(result: dict) -> str:
    lines = [f"{'decoding':<12} {'tokens/s':>10} {'forwards':>9} {'tokens/forward':>15}",
             f"{'plain':<12} {result['tokens_per_s_plain']:>10.1f} {result['forwards_plain']:>9} {1.0:>15.2f}",
             f"{'speculative':<12} {result['tokens_per_s_speculative']:>10.1f} {result['forwards_speculative']:>9} "
             f"{result['tau']:>15.2f}",
             "",
             f"speedup            {result['speedup']:.2f}x   (tau {result['tau']:.2f}; speedup / tau = "
             f"{result['speedup'] / result['tau']:.2f}; memory-bound limit for this shape "
             f"{result['memory_bound_limit']:.2f})",
             "acceptance by draft position  " + "  ".join(
                 f"{i + 1}: {a:.1%}" for i, a in enumerate(result["acceptance_per_position"])),
             f"identical outputs  {'n/a (sampling)' if result['identical'] is None else ('yes' if result['identical'] else 'NO')}"
             f"   ({result['num_prompts']} prompts x {result['repeats']} rounds, batch size {result['batch_size']}, "
             f"{result['max_new_tokens']} new tokens each, {result['device']})"]
    return "\n".join(lines)
