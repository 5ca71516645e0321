"""Decoding speed of two source trees side by side: the same `multitoken bench decode` command run under each, in
alternating rounds, and the medians' ratio (new / old) per decoder.

Each run is a fresh process with PYTHONPATH pointing at a tree's `src` (a `git worktree` of the old commit, say), so
both trees decode the same checkpoint and prompts with their own code. Rounds alternate old, new, new, old, ... so
that drift of a shared machine falls on both alike.

    git worktree add /tmp/old <commit>
    python scripts/compare_commits.py --old /tmp/old --new . --rounds 2 --json compare.json -- \
        --ckpt runs/default --max-new-tokens 128 --batch-size 1 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DECODERS = ("plain", "speculative")


def bench(tree: Path, bench_args: list[str]) -> dict:
    """One `bench decode` run under tree's code; its JSON record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
        subprocess.run([sys.executable, "-m", "multitoken", "bench", "decode", *bench_args, "--json", str(out)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="The reference tree (its src/ is imported).")
    parser.add_argument("--new", type=Path, default=Path("."), help="The tree under test.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs per tree, alternating.")
    parser.add_argument("--new-extra", default="", help="Options only the new tree's bench decode takes, e.g. "
                        "'--max-repeats 3' (so that both time the same number of rounds).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="After --: bench decode's own options.")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    rates: dict[str, dict[str, list[float]]] = {"old": {d: [] for d in DECODERS}, "new": {d: [] for d in DECODERS}}
    identical = True
    for r in range(args.rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            extra = args.new_extra.split() if name == "new" else []
            record = bench(getattr(args, name), bench_args + extra)
            for d in DECODERS:
                rates[name][d].append(record[f"tokens_per_s_{d}"])
            identical &= bool(record.get("identical", True))
            print(f"round {r + 1} {name}: " + ", ".join(f"{d} {rates[name][d][-1]:.1f}" for d in DECODERS),
                  flush=True)
    medians = {name: {d: statistics.median(v) for d, v in per.items()} for name, per in rates.items()}
    ratios = {d: medians["new"][d] / medians["old"][d] for d in DECODERS}
    for d in DECODERS:
        print(f"{d:<12} old {medians['old'][d]:8.1f}  new {medians['new'][d]:8.1f} tokens/s   new/old {ratios[d]:.3f}"
              f"   (old {min(rates['old'][d]):.1f}-{max(rates['old'][d]):.1f}, "
              f"new {min(rates['new'][d]):.1f}-{max(rates['new'][d]):.1f})")
    if args.json:
        args.json.write_text(json.dumps({"bench_args": bench_args, "rounds": rates, "medians": medians,
                                         "new_over_old": ratios, "identical_outputs": identical}, indent=1) + "\n")


if __name__ == "__main__":
    main()
