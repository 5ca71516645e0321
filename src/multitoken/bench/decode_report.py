"""`bench decode`'s reporting: the table a run prints (with each side's spread over rounds, and what the spread
allows one to say of the speedup) and the plot of a batch-size sweep."""

from __future__ import annotations

from pathlib import Path


def _rate_cell(result: dict, name: str) -> str:
    spread = result.get("tokens_per_s_spread", {}).get(name)
    from multitoken.bench.decode import REFERENCES

    rate = result[f"tokens_per_s_{REFERENCES.get(name, name)}"]  # a peer's field is keyed without its dot
    if spread is None or result["repeats"] < 2:
        return f"{rate:>10.1f} {'':>15}"
    return f"{rate:>10.1f} {spread['min']:>7.1f}-{spread['max']:<7.1f}"


def noise_verdict(result: dict, name: str, what: str) -> str:
    """What the per-round ratios of case name to plain decoding allow: told apart from 1.00x or not, settled or not."""
    ratios = result.get(f"ratio_rounds_{name}", [])
    if len(ratios) < 2:
        return "one round: no spread to judge it by"
    span = f"rounds {min(ratios):.2f}x-{max(ratios):.2f}x"
    if result[f"ratio_{name}_beyond_noise"]:
        verdict = f"{span}, every round {'faster' if min(ratios) > 1 else 'slower'}"
    else:
        verdict = f"{span}: within this benchmark's own noise, {what} not told apart from 1.00x"
    if not result[f"ratio_{name}_settled"]:
        verdict += (f"; the median had not settled after {result['repeats']} rounds (--max-repeats "
                    f"{result['max_repeats']}): more rounds or a quieter machine")
    return verdict


def format_decode_table(result: dict) -> str:
    from multitoken.bench.decode import REFERENCES

    speculative = "tokens_per_s_speculative" in result
    references = {name: key for name, key in REFERENCES.items() if f"tokens_per_s_{key}" in result}
    rows = [("plain", result["forwards_plain"], 1.0)]
    if speculative:
        rows.append(("speculative", result["forwards_speculative"], result["tau"]))
    rows += [(name, result["forwards_plain"], 1.0) for name in references]
    lines = [f"{'decoding':<14} {'tokens/s':>10} {'min-max/round':>15} {'forwards':>9} {'tokens/forward':>15}"]
    lines += [f"{name:<14} {_rate_cell(result, name)} {forwards:>9} {tau:>15.2f}" for name, forwards, tau in rows]
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
                  f"                   {noise_verdict(result, 'speculative', 'the speedup')}",
                  f"draft tree         {result['tree']} ({result['tree_nodes']} token"
                  f"{'s' if result['tree_nodes'] != 1 else ''} verified per step)",
                  *([f"copied drafts      {result['copied_share']:.1%} of steps (the context had a match of 2+ "
                     "tokens: its copy took the first-choice path)"] if result.get("copied_share") else []),
                  "acceptance by draft position  " + ("  ".join(
                      f"{i + 1}: {a:.1%}" for i, a in enumerate(result["acceptance_per_position"]))
                      or "none (plain decoding: no tree was worth its step here)"),
                  f"identical outputs  {'n/a (sampling)' if identical is None else ('yes' if identical else 'NO')}"
                  f"   {footer}"]
    for name, key in references.items():
        lines.append(f"plain vs {name:<13} {result[f'plain_vs_{key}']:.2f}x   (same weights, greedy; "
                     f"identical tokens: {'yes' if result[f'identical_to_{key}'] else 'NO'}; "
                     f"{name} {noise_verdict(result, name, 'the ratio')})")
        if f"speculative_vs_{key}" in result:
            lines.append(f"speculative vs {name:<7} {result[f'speculative_vs_{key}']:.2f}x")
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
