"""Experiment: which kind of multi-token prediction, trained from scratch? Next-token only, n parallel heads (the
paper's), or one sequential module (DeepSeek-V3's MTP module, in the EAGLE-3 layout the serving engines run), at about
equal parameters on the same bytes.

Byte-level models on the built-in corpus (this Python's standard library), every one trained by the ordinary trainer
on the same windows per seed:
    n1          next-token: the whole depth is trunk + head 1
    nN          N parallel heads (N - 1 trunk layers moved into heads, the paper's parameter matching)
    n1-drafter  head 1 and the sequential module, which takes the place of one trunk layer; it learns beside head 1
                with its chain unrolled 3 steps (weight 0.3, as DeepSeek-V3 weights its module)
Measured for each: head 1's bits per byte on the validation split (the same windows for every model) and tau, the
bytes per forward of greedy self-speculative decoding with 3 guesses per step (the heads' chain, or the drafter's).
Sizes: "default" is the built-in default run's shape (6 layers, d_model 128), "2M" the bytes experiment's (10 layers).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from multitoken.errors import ConfigError
from multitoken.experiments import bytelevel
from multitoken.experiments.common import RunSpec, Shape
from multitoken.experiments.report import mean_sd_plain

SIZES = {"default": Shape(128, 6, 4), "2M": Shape(128, 10, 4)}
QUICK_SIZES = {"tiny": Shape(32, 6, 2)}
QUICK_BUDGET = bytelevel.QUICK_BUDGET
UNIT = "head-1 bits/byte and bytes per forward (3 guesses per step)"
Setup = bytelevel.Setup
setup_from_args = bytelevel.setup_from_args
data = bytelevel.data
make_metric = bytelevel.make_metric
summarize = bytelevel.summarize
KINDS = ("next-token", "parallel heads", "sequential module")


def specs(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int], a) -> list[RunSpec]:
    """Per size and seed: next-token, the parallel heads (the one n given, 4 by default) and the sequential module.
    The heads draft n - 1 guesses a step and the module 3, so n = 4 compares them at the same depth."""
    if len(n_futures) != 1 or not 2 <= n_futures[0] <= bytelevel.MAX_N:
        raise ConfigError(f"--n_future takes the parallel heads' one n, 2..{bytelevel.MAX_N} (got {n_futures}); "
                          "next-token and the sequential module are always in the grid")
    n = n_futures[0]
    return [spec for size, shape in sizes.items() for seed in seeds
            for spec in (RunSpec(size, shape, 1, seed), RunSpec(size, shape, n, seed),
                         RunSpec(size, shape, 1, seed, drafter=True))]


def kind(record: dict) -> str:
    if record.get("drafter"):
        return KINDS[2]
    return KINDS[0] if record["n_future"] == 1 else KINDS[1]


def by_kind(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The records by (size, kind): sizes in the order of SIZES, kinds in the order of KINDS, seeds in order."""
    order = {name: i for i, name in enumerate([*SIZES, *QUICK_SIZES])}
    rows = sorted(records, key=lambda r: (order.get(r["size"], len(order)), KINDS.index(kind(r)), r["seed"]))
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["size"], kind(r)), []).append(r)
    return out


def reference(setup: dict) -> None:
    return None


def table(records: list[dict], reference: dict | None = None) -> str:
    lines = ["| size | kind | n | non-embedding params | seeds | head-1 bits/byte | tau (bytes per forward) | "
             "first guess accepted |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (size, name), rs in by_kind(records).items():
        first = [r["final"].get("acceptance", [None])[0] for r in rs]
        first_text = mean_sd_plain(first) if None not in first else "-"
        bpb, tau = (mean_sd_plain([r["final"][key] for r in rs]) for key in ("bpb", "tau"))
        lines.append(f"| {size} | {name} | {rs[0]['n_future']} | {rs[0]['non_embedding_params']:,} | {len(rs)} | "
                     f"{bpb} | {tau} | {first_text} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path, reference: dict | None = None) -> None:
    """Head-1 bits per byte (left) and tau (right) for each kind, per size; every seed a marker, the mean a bar."""
    from multitoken.experiments.plots import pyplot

    plt = pyplot()
    groups = by_kind(records)
    fig, panels = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {KINDS[0]: "#7f7f7f", KINDS[1]: "#d62728", KINDS[2]: "#1f77b4"}
    labels = [f"{size}\n{name}" for size, name in groups]
    for ax, key, label in zip(panels, ("bpb", "tau"), ("head-1 bits per byte (validation)",
                                                       "tau: bytes per forward (3 guesses)")):
        for x, ((size, name), rs) in enumerate(groups.items()):
            values = [r["final"][key] for r in rs]
            ax.bar(x, statistics.mean(values), color=colors[name], alpha=0.35, width=0.7)
            ax.scatter([x] * len(values), values, color=colors[name], s=18, zorder=3)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(label)
        if key == "bpb":
            low = min(r["final"]["bpb"] for r in records)
            ax.set_ylim(bottom=max(0.0, low - 0.3))
    fig.suptitle("From scratch: next-token vs parallel heads vs a sequential module (about equal parameters)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
