"""What one compiled decoding step costs on a real checkpoint: plain (one token) against a chain verify step of
draft length k, and against that step's first phase alone (trunk and head 1 over the k + 1 tokens, no drafting), at
batch size 1 (docs/real-model.md).

speedup = tau x plain step / verify step, so the ratio is what a model's heads must make up for. Steps are timed
directly on the static decoder (no Python loop around them beyond the call), the cases alternating in rounds, and
medians reported.

    python scripts/verify_step_cost.py --ckpt runs/smol-heads --draft-len 3 --json verify-step.json
    python scripts/verify_step_cost.py --ckpt runs/smol-heads --draft-vocab 4096 --data data/smol-distilled

--phases adds the verify step's first phase alone; --draft-vocab K (with --data, a prepared folder) adds the verify
step of the same weights drafting over the K tokens most frequent in that data (`model.draft_vocab`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from multitoken.decoding.static import CompiledStep, block_positions, cache_slots, decoder_for
from multitoken.decoding.tree import DraftTree
from multitoken.checkpoint import load_checkpoint


class VerifyOnly:
    """The verify step's first phase alone: the trunk and head 1 over the chain's k + 1 tokens, unembedded at every
    node, the greedy targets out; no extra heads, no cache moves, no second unembedding. It borrows the full verify
    decoder's caches, so the difference of the two steps is what drafting adds."""

    def __init__(self, decoder) -> None:
        self.decoder, self.caches, self.prefill = decoder, decoder.caches, decoder.prefill
        model = decoder.model

        def step(tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
            where = block_positions(start, decoder.chain_layout, decoder.slots, decoder.dtype)
            return model.unembed(model.head(0, model.trunk(tokens, where), where)).argmax(-1)

        self.run_step = CompiledStep(step, decoder.device)


def with_draft_vocab(model, k: int, data: str):
    """The same weights (shared, not copied), the extra heads drafting over data's k most frequent tokens."""
    import dataclasses

    from multitoken.data.shards import open_prepared
    from multitoken.model import MTPModel
    from multitoken.training.draft_vocab import most_frequent_tokens

    ids, coverage, counted = most_frequent_tokens(open_prepared(data)[1].train, k, model.config.vocab_size)
    print(f"draft vocabulary: {k:,} tokens, {coverage:.1%} of the {counted:,} tokens of {data}", flush=True)
    state = {**model.state_dict(), "draft_ids": ids}
    return MTPModel.from_state_dict(dataclasses.replace(model.config, draft_vocab=k), state).eval(), coverage


def make_cases(model, k: int, prompt_len: int, steps: int, phases: bool = True, drafting_model=None,
               draft_vocab: int = 0) -> dict:
    """name -> (decoder, step arguments); every decoder prefilled with the same prompt."""
    cache_len = cache_slots(model, prompt_len + steps * (k + 1) + k + 1)
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([prompt_len])
    cases = {}
    plain = decoder_for(model, 1, cache_len, None, compile=True)
    cases["plain"] = (plain, lambda: (prompt[:, -1], lengths))
    verify = decoder_for(model, 1, cache_len, DraftTree.chain(k), compile=True)
    tokens = prompt[:, -k - 1:].clone()
    cases["verify"] = (verify, lambda: (tokens, lengths))
    if phases:
        cases["verify, no drafting"] = (VerifyOnly(verify), lambda: (tokens, lengths))
    if drafting_model is not None:
        narrowed = decoder_for(drafting_model, 1, cache_len, DraftTree.chain(k), compile=True)
        cases[f"verify, {draft_vocab} drafts"] = (narrowed, lambda: (tokens, lengths))
    return cases, prompt, lengths


def time_steps(decoder, args, steps: int) -> float:
    """Median seconds of one step over `steps` calls (each call starts at the same position: same work)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        decoder.run_step(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--draft-len", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="Timed steps per case and round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--phases", action="store_true", help="Also time the verify step's first phase alone.")
    parser.add_argument("--draft-vocab", type=int, default=0, help="Also time drafting over this many tokens.")
    parser.add_argument("--data", default=None, help="Prepared folder whose most frequent tokens --draft-vocab takes.")
    args = parser.parse_args()
    if args.draft_vocab and not args.data:
        parser.error("--draft-vocab needs --data (the prepared folder to count tokens in)")
    model = load_checkpoint(args.ckpt)[0]
    drafting_model, coverage = (None, None)
    if args.draft_vocab:
        drafting_model, coverage = with_draft_vocab(model, args.draft_vocab, args.data)
    with torch.no_grad():
        cases, prompt, lengths = make_cases(model, args.draft_len, args.prompt_len, args.steps, args.phases,
                                            drafting_model, args.draft_vocab)
        compile_seconds = {}
        for name, (decoder, get_args) in cases.items():
            with decoder.caches:
                decoder.prefill(prompt, lengths)
                start = time.perf_counter()
                decoder.run_step(*get_args())  # compiles
                compile_seconds[name] = time.perf_counter() - start
            print(f"compiled {name} in {compile_seconds[name]:.0f} s", flush=True)
        rounds = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                decoder, get_args = cases[name]
                with decoder.caches:
                    rounds[name].append(time_steps(decoder, get_args(), args.steps))
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {"checkpoint": args.ckpt, "draft_len": args.draft_len, "threads": torch.get_num_threads(),
              "step_ms": {n: m * 1e3 for n, m in medians.items()},
              "step_ms_rounds": {n: [x * 1e3 for x in v] for n, v in rounds.items()},
              "ratio_to_plain": {n: m / medians["plain"] for n, m in medians.items()},
              "compile_seconds": compile_seconds, "draft_vocab": args.draft_vocab or None,
              "draft_vocab_coverage": coverage}
    for name, ms in result["step_ms"].items():
        print(f"{name:<22} {ms:7.2f} ms   {result['ratio_to_plain'][name]:.2f}x plain")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
