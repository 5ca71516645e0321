"""Cost of one self-speculative step against one plain decoding step, by trunk depth (docs/speculative.md).

speedup = tau x (plain step time / speculative step time), so the second factor is the most a model can reach of
speedup / tau on this machine. It does not depend on what the model learned, only on its shape: this script builds
randomly initialized models (d_model 128, 4 heads, like the default one) with deeper and deeper trunks and times both
loops at batch size 1, each step's time taken as the difference between a long and a short generation divided by the
forwards in between (so prompt prefill and setup cancel out). The four calls alternate within each repeat, and the
medians over repeats are reported, so that a shared machine's drift touches both loops alike.

    python scripts/decode_step_cost.py --trunk-layers 2,8,26 --json step-cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from multitoken import ModelConfig, MTPModel
from multitoken.decoding.generate import generate
from multitoken.decoding.speculative import speculative_generate


def _timed(fn) -> tuple[float, int]:
    """Wall time of one call, and the forwards it made (fn returns them)."""
    start = time.perf_counter()
    forwards = fn()
    return time.perf_counter() - start, forwards


def step_costs(trunk_layers: int, n_future: int, draft_len: int, short: int, long: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, d_model=128, n_layer=trunk_layers + n_future, n_head=4, n_future=n_future,
                         max_seq_len=64 + long + draft_len + 1)
    model = MTPModel(config).eval()
    prompt = torch.randint(0, 256, (1, 64))

    def plain(n: int):  # n - 1 forwards after the prefill; counting n in both lengths cancels in the difference
        return lambda: (generate(model, prompt, n), n)[1]

    def speculative(n: int):
        return lambda: speculative_generate(model, prompt, n, draft_len=draft_len)[1].forwards

    for fn in (plain(short), speculative(short)):  # warm-up: allocator, thread pool, first-call paths
        fn()
    steps = {"plain": [], "speculative": []}
    for _ in range(repeats):
        for name, make in (("plain", plain), ("speculative", speculative)):
            t_long, f_long = _timed(make(long))
            t_short, f_short = _timed(make(short))
            steps[name].append((t_long - t_short) / (f_long - f_short))
    ratios = [p / s for p, s in zip(steps["plain"], steps["speculative"])]
    return {"trunk_layers": trunk_layers, "n_future": n_future, "draft_len": draft_len,
            "plain_step_us": statistics.median(steps["plain"]) * 1e6,
            "speculative_step_us": statistics.median(steps["speculative"]) * 1e6,
            "max_speedup_over_tau": statistics.median(ratios), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trunk-layers", default="2,4,8,16,26", help="Trunk depths, comma-separated.")
    parser.add_argument("--n-future", type=int, default=4)
    parser.add_argument("--draft-len", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5,
                        help="Timed rounds (each: both loops, long and short; medians kept).")
    parser.add_argument("--json", default=None, help="Write the rows to this JSON file.")
    args = parser.parse_args()
    records = []
    print(f"{'trunk':>5} {'heads':>5} {'plain step':>11} {'spec. step':>11} {'plain/spec = max speedup/tau':>29}")
    for depth in (int(x) for x in args.trunk_layers.split(",")):
        r = step_costs(depth, args.n_future, args.draft_len, short=32, long=160, repeats=args.repeats)
        records.append(r)
        print(f"{depth:>5} {args.n_future:>5} {r['plain_step_us']:>9.0f}us {r['speculative_step_us']:>9.0f}us "
              f"{r['max_speedup_over_tau']:>29.2f}", flush=True)
    print(f"d_model 128, batch 1, draft length {args.draft_len}, cpu, {records[0]['threads']} threads, median of "
          f"{args.repeats} rounds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
