"""Where a compiled decoding call's wall time goes, plain against a draft tree: the prefill, the compiled steps, the
tree's keep step (the accepted path kept, copies put into the next tree) and the rest of the loop (docs/real-model.md).

speedup = tau x (plain step / tree step) only if nothing else takes time; this says what else does. Each prompt is
decoded alone (batch 1, greedy, up to --max-new-tokens or EOS) through `generate(compile=True)` and
`speculative_generate(compile=True)`, the parts timed by wrapping the static decoder's methods (on a CPU every call
returns when its work is done, so wall time is the part's time). The first pass compiles and is not reported; then
--rounds rounds alternate plain and tree, and each part's median over rounds is printed per decoding step.

    python scripts/decode_time_split.py --ckpt runs/smol-heads-next --prompts chat/heldout.jsonl \\
        --tree "(0,), (0, 0), lookup 3" --json split.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from collections import defaultdict

import torch

from multitoken.checkpoint import load_checkpoint
from multitoken.data.prompts import encode_prompt, read_prompts
from multitoken.decoding.generate import generate
from multitoken.decoding.speculative import DecodeStats, speculative_generate
from multitoken.decoding.static import StaticDecoder, cache_slots
from multitoken.decoding.tree import DraftTree

PARTS = {"prefill": "the prompt through the model (eager)", "step": "the compiled decoding steps",
         "keep": "the tree's compiled keep step", "rest": "everything else in the loop"}
seconds: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)
running: set[str] = set()  # parts being timed now: a part called inside itself counts once


def timed(owner, name: str, part: str) -> None:
    """Count the wall time of owner.name's calls as `part`."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if part in running:
            return inner(*args, **kwargs)
        running.add(part)
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[part] += time.perf_counter() - start
            calls[part] += 1
            running.discard(part)
    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--prompts", required=True, help="A chat JSONL (read with the chat template).")
    parser.add_argument("--tree", required=True, help="The draft tree, as `bench decode --tree` takes it.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model, _, tokenizer = load_checkpoint(args.ckpt)
    tree = DraftTree.parse(args.tree)
    prompts = [torch.tensor([encode_prompt(tokenizer, p, chat=True)]) for p in read_prompts(args.prompts)]
    stop = torch.tensor([tokenizer.eot_id])
    cache_len = cache_slots(model, max(p.shape[1] for p in prompts) + args.max_new_tokens)
    generate_module = importlib.import_module("multitoken.decoding.generate")  # the module, not its function
    for owner, name, part in ((generate_module, "prefill", "prefill"), (StaticDecoder, "prefill", "prefill"),
                              (StaticDecoder, "run_step", "step"), (StaticDecoder, "run_keep", "keep")):
        timed(owner, name, part)

    def decode(kind: str) -> dict[str, float]:
        seconds.clear(), calls.clear()
        stats = DecodeStats()
        start = time.perf_counter()
        for prompt in prompts:
            if kind == "plain":
                generate(model, prompt, args.max_new_tokens, compile=True, stop_ids=stop, cache_len=cache_len)
            else:
                stats.add(speculative_generate(model, prompt, args.max_new_tokens, tree=tree, compile=True,
                                               stop_ids=stop)[1])
        total = time.perf_counter() - start
        parts = {p: seconds[p] for p in PARTS if p != "rest"}
        parts["rest"] = total - sum(parts.values())
        return {"total": total, "steps": calls["step"], "tau": stats.tau, **parts}

    for kind in ("plain", "tree"):
        decode(kind)  # compiles
    runs: dict[str, list[dict]] = {"plain": [], "tree": []}
    for r in range(args.rounds):
        for kind in ("plain", "tree") if r % 2 == 0 else ("tree", "plain"):
            runs[kind].append(decode(kind))
            print(f"round {r + 1} {kind}: {runs[kind][-1]['total']:.2f} s", flush=True)
    median = {kind: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for kind, rs in runs.items()}
    print(f"{len(prompts)} prompts, up to {args.max_new_tokens} new tokens each, batch 1, compiled; medians of "
          f"{args.rounds} rounds; ms per decoding step")
    print(f"{'':8s} {'steps':>6s} {'total':>8s} " + " ".join(f"{p:>8s}" for p in PARTS))
    for kind, m in median.items():
        per_step = lambda v: 1e3 * v / m["steps"]  # noqa: E731
        print(f"{kind:8s} {m['steps']:6.0f} {per_step(m['total']):8.2f} "
              + " ".join(f"{per_step(m[p]):8.2f}" for p in PARTS))
    ratio = median["plain"]["total"] / median["tree"]["total"]
    tau = median["tree"]["tau"]
    step_ratio = median["plain"]["step"] / median["plain"]["steps"] / (median["tree"]["step"] / median["tree"]["steps"])
    print(f"tree over plain: {ratio:.2f}x the speed; tau {tau:.2f} x (plain step / tree step) {step_ratio:.2f} = {tau * step_ratio:.2f}, "
          "were the steps all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tree": str(tree), "prompts": args.prompts, "rounds": runs, "median": median,
                       "speedup": ratio, "tau": tau, "step_ratio": step_ratio}, f, indent=1)


if __name__ == "__main__":
    main()
