"""Decoders side by side on the same prompts, in one run, alternating, with outputs compared.

The cases: plain (multitoken's KV-cached greedy/sampled decoding with the next-token head), speculative (the model's
own heads draft, head 1 verifies; when the model has extra heads) and, on request, transformers' `generate` on the
very same weights (exported as a LlamaForCausalLM). Every case runs on every batch in turns, the order rotating from
round to round, so that warm-up, caches and machine load fall on all alike; a first untimed round warms all up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from multitoken.decoding.generate import generate, pad_after_stop, pad_prompts, stop_hits
from multitoken.decoding.speculative import DecodeStats, speculative_generate
from multitoken.model import MTPModel


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def transformers_decoder(hf_model, max_new_tokens: int, pad_id: int) -> Callable:
    """Greedy `generate` of a transformers model on a (padded prompts, lengths) batch -> new tokens (B, N).
    Rows are re-padded on the left with an attention mask, as transformers expects for batched prompts."""
    def decode(batch):
        prompts, lengths = batch
        B, T0 = prompts.shape
        ids = torch.full_like(prompts, pad_id)
        mask = torch.zeros_like(prompts)
        for row in range(B):
            n = int(lengths[row])
            ids[row, T0 - n:], mask[row, T0 - n:] = prompts[row, :n], 1
        with torch.no_grad():
            out = hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    min_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                                    pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
        return out[:, T0:]
    return decode


def generated_tokens(out: torch.Tensor, stop_ids: torch.Tensor | None) -> torch.Tensor:
    """Tokens each row produced (B,): up to and including its first stop token, or all of it."""
    hit = stop_hits(out, stop_ids)
    return torch.where(hit.any(1), hit.long().argmax(1) + 1, out.shape[1])


def bench_decode(model: MTPModel, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
                 draft_len: int | None = None, temperature: float = 0.0, repeats: int = 3, seed: int = 0,
                 device: torch.device | str = "cpu", reference: Callable | None = None, compile: bool = False,
                 tree=None, stop_ids: torch.Tensor | None = None) -> dict:
    """reference: a decoder to compare plain decoding against (e.g. `transformers_decoder`), greedy only.
    compile applies to both plain and speculative decoding, so that the speedup is over the best plain decoding.
    stop_ids: rows end at their first stop token (the model's end-of-sequence), and tokens/s counts the tokens each
    decoder produced up to it (the reference decodes all max_new_tokens: it is compared on plain decoding's tokens)."""
    from multitoken.decoding.static import total_compile_seconds
    batches = [pad_prompts(prompts[i:i + batch_size], device) for i in range(0, len(prompts), batch_size)]
    sampling = dict(temperature=temperature, stop_ids=stop_ids)
    speculative_on = model.n_future > 1

    def plain(batch):
        return generate(model, batch[0], max_new_tokens, lengths=batch[1], compile=compile,
                        generator=torch.Generator(device=device).manual_seed(seed), **sampling), None

    def speculative(batch):
        return speculative_generate(model, batch[0], max_new_tokens, draft_len=draft_len, lengths=batch[1],
                                    generator=torch.Generator(device=device).manual_seed(seed), tree=tree,
                                    compile=compile, **sampling)

    cases = {"plain": plain}
    if speculative_on:
        cases["speculative"] = speculative
    if reference is not None:
        cases["transformers"] = lambda batch: (reference(batch), None)
    compile_seconds = {}
    shapes = {tuple(b[0].shape): b for b in batches}.values()  # every shape compiles once, before timing
    for name, fn in cases.items():  # warm-up, untimed
        before = total_compile_seconds(model)
        for batch in shapes:
            fn(batch)
        compile_seconds[name] = total_compile_seconds(model) - before
    # Seconds per round and case: a shared machine drifts, so every round's rate is kept and the medians compared.
    seconds = [dict.fromkeys(cases, 0.0) for _ in range(repeats)]
    tokens = [dict.fromkeys(cases, 0) for _ in range(repeats)]
    plain_forwards = 0  # one per token of the batch's longest row (the prefill's gives the first)
    stats = DecodeStats()
    identical = dict.fromkeys(cases, True)
    names = list(cases)
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for batch in batches:
            outputs = {}
            for name in order:
                (out, call_stats), elapsed = _timed(lambda: cases[name](batch))
                seconds[round_][name] += elapsed
                # transformers is asked for all max_new_tokens (the comparison is per token decoded)
                counts = generated_tokens(out, None if name == "transformers" else stop_ids)
                tokens[round_][name] += int(counts.sum())
                if name == "plain":
                    plain_forwards += int(counts.max())
                outputs[name] = out
                if call_stats is not None:
                    stats.add(call_stats)
            for name in names[1:]:
                other = pad_after_stop(outputs[name].to(outputs["plain"].device), stop_ids)
                identical[name] &= bool(torch.equal(outputs["plain"], other))
    rounds = {name: [n[name] / r[name] for n, r in zip(tokens, seconds)] for name in cases}
    rates = {name: statistics.median(values) for name, values in rounds.items()}
    trunk = model.config.n_trunk_layers
    greedy = temperature == 0
    result = {
        "tokens_per_s_plain": rates["plain"],
        "tokens_per_s_rounds": rounds,  # every round's rate; the tokens_per_s_* fields are their medians
        "batch_size": batch_size,
        "device": str(torch.device(device)),
        "max_new_tokens": max_new_tokens,
        "num_prompts": len(prompts),
        "repeats": repeats,
        "temperature": temperature,
        "new_tokens": tokens[0]["plain"],  # per round, up to each row's stop token
        "stop_at_eos": stop_ids is not None,
        "forwards_plain": plain_forwards,
        "cpu_threads": torch.get_num_threads(),
        "compile": compile,
        "compile_seconds": compile_seconds,
        "tree_nodes": 1,
    }
    if speculative_on:
        drafting = tree is None or bool(tree.paths)  # an empty tree: --tree auto chose plain decoding
        acceptance = stats.acceptance_per_position if drafting else []
        k = len(acceptance)
        result.update({
            "tokens_per_s_speculative": rates["speculative"],
            "speedup": rates["speculative"] / rates["plain"],
            "tau": stats.tau,
            "acceptance_per_position": acceptance,
            # Under sampling the two decoders draw differently (same law, different random streams): not comparable.
            "identical": identical["speculative"] if greedy else None,
            "draft_len": k,
            # speedup / tau is a plain step's time over a speculative step's. Where only reading weights costs
            # (large models on a GPU), a plain step reads trunk + head 1 and a speculative one trunk + k + 1 heads.
            "memory_bound_limit": (trunk + 1) / (trunk + k + 1),
            "forwards_speculative": stats.forwards + repeats * len(batches),  # verification forwards + prefills
            "tree_nodes": stats.tree_nodes,
            "tree": "chain" if tree is None else (str(tree) or "plain"),
        })
    if reference is not None:
        result.update({
            "tokens_per_s_transformers": rates["transformers"],
            "plain_vs_transformers": rates["plain"] / rates["transformers"],
            "identical_to_transformers": identical["transformers"],
        })
    return result


def format_decode_table(result: dict) -> str:
    speculative, reference = "tokens_per_s_speculative" in result, "tokens_per_s_transformers" in result
    rows = [("plain", result["tokens_per_s_plain"], result["forwards_plain"], 1.0)]
    if speculative:
        rows.append(("speculative", result["tokens_per_s_speculative"], result["forwards_speculative"], result["tau"]))
    if reference:
        rows.append(("transformers", result["tokens_per_s_transformers"], result["forwards_plain"], 1.0))
    lines = [f"{'decoding':<14} {'tokens/s':>10} {'forwards':>9} {'tokens/forward':>15}"]
    lines += [f"{name:<14} {rate:>10.1f} {forwards:>9} {tau:>15.2f}" for name, rate, forwards, tau in rows]
    lines.append("")
    compiled = ""
    if result.get("compile"):
        compiled = ", compiled (" + ", ".join(f"{n} {s:.1f} s" for n, s in result["compile_seconds"].items()) + \
            " compiling, not counted)"
    length = (f"up to {result['max_new_tokens']} new tokens each (or EOS: {result['new_tokens']} in all)"
              if result.get("stop_at_eos") else f"{result['max_new_tokens']} new tokens each")
    footer = (f"({result['num_prompts']} prompts, median of {result['repeats']} rounds, batch size {result['batch_size']}, "
              f"{length}, {result['device']}{compiled})")
    if speculative:
        identical = result["identical"]
        lines += [f"speedup            {result['speedup']:.2f}x   (tau {result['tau']:.2f}; speedup / tau = "
                  f"{result['speedup'] / result['tau']:.2f}; memory-bound limit for this shape "
                  f"{result['memory_bound_limit']:.2f})",
                  f"draft tree         {result['tree']} ({result['tree_nodes']} token"
                  f"{'s' if result['tree_nodes'] != 1 else ''} verified per step)",
                  "acceptance by draft position  " + ("  ".join(
                      f"{i + 1}: {a:.1%}" for i, a in enumerate(result["acceptance_per_position"]))
                      or "none (plain decoding: no tree was worth its step here)"),
                  f"identical outputs  {'n/a (sampling)' if identical is None else ('yes' if identical else 'NO')}"
                  f"   {footer}"]
    if reference:
        lines.append(f"plain vs transformers  {result['plain_vs_transformers']:.2f}x   (same weights, greedy; "
                     f"identical tokens: {'yes' if result['identical_to_transformers'] else 'NO'})")
    if not speculative:
        lines.append(footer)
    return "\n".join(lines)


def plot_decode(results: list[dict], path: str) -> None:
    """Speedup of speculative over plain decoding against batch size (left) and both decoders' tokens/s (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["batch_size"])
    sizes = [r["batch_size"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    speedups = [r["speedup"] for r in results]
    left.plot(sizes, speedups, "o-", color="#1f77b4", label="speculative / plain")
    left.axhline(1.0, color="#888888", lw=1, ls="--", label="plain decoding")
    for size, speedup, r in zip(sizes, speedups, results):
        label = "plain chosen" if r.get("tree") == "plain" else f"tau {r['tau']:.2f}\n{r['tree_nodes']} nodes"
        left.annotate(label, (size, speedup), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    left.set_xscale("log", base=2)
    left.set_xticks(sizes, [str(s) for s in sizes])
    left.set_ylim(0, max(speedups + [1.0]) * 1.3)
    left.set_xlabel("batch size")
    left.set_ylabel("speedup (median tokens/s ratio)")
    left.legend(fontsize=8, loc="lower left")
    right.plot(sizes, [r["tokens_per_s_plain"] for r in results], "o-", color="#888888", label="plain")
    right.plot(sizes, [r["tokens_per_s_speculative"] for r in results], "o-", color="#1f77b4",
               label="self-speculative")
    right.set_xscale("log", base=2)
    right.set_xticks(sizes, [str(s) for s in sizes])
    right.set_xlabel("batch size")
    right.set_ylabel("tokens/s (all rows)")
    right.legend(fontsize=8)
    first = results[0]
    mode = "compiled" if first.get("compile") else "eager"
    fig.suptitle(f"multitoken bench decode: {Path(first.get('checkpoint', '')).name or 'model'}, {mode}, "
                 f"tree {first.get('tree_requested', first.get('tree', 'chain'))}, {first['device']}, "
                 f"{first['max_new_tokens']} new tokens, "
                 f"{'greedy' if first['temperature'] == 0 else 'T=' + str(first['temperature'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
