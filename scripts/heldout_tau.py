"""Tokens per forward (tau) and acceptance by draft position of a checkpoint's heads on held-out chat prompts: greedy
self-speculative decoding of each prompt alone, up to --max-new-tokens or EOS (docs/real-model.md). It measures
only what the heads guess right, not time, so it runs eagerly and needs no quiet machine.

    python scripts/heldout_tau.py --ckpt runs/smol-heads --prompts data/chat/heldout.jsonl --json tau.json
    python scripts/heldout_tau.py --ckpt runs/smol-heads --prompts data/chat/heldout.jsonl --tree "(0,), (1,), (0, 0)"
"""

from __future__ import annotations

import argparse
import json

import torch

from multitoken.data.prompts import encode_prompt, read_prompts
from multitoken.decoding.speculative import DecodeStats, speculative_generate
from multitoken.decoding.tree import DraftTree
from multitoken.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--draft-len", type=int, default=None)
    parser.add_argument("--tree", default=None, help="A draft tree to verify, as `generate --tree` takes it.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model, _, tokenizer = load_checkpoint(args.ckpt)
    stop = torch.tensor([tokenizer.eot_id])
    tree = None if args.tree is None else DraftTree.parse(args.tree)
    total = DecodeStats()
    for prompt in read_prompts(args.prompts):
        ids = torch.tensor([encode_prompt(tokenizer, prompt, chat=True)])
        _, stats = speculative_generate(model, ids, args.max_new_tokens, draft_len=args.draft_len, stop_ids=stop,
                                        tree=tree)
        total.add(stats)
    result = {"checkpoint": args.ckpt, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
              "tree": None if tree is None else str(tree),
              "tau": total.tau, "acceptance_per_position": total.acceptance_per_position}
    print(f"{args.ckpt}: tau {total.tau:.2f}, acceptance by draft position "
          + " ".join(f"{a:.0%}" for a in total.acceptance_per_position))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
