"""The experiments' figures: the analogue of the paper's Fig. 7 (induction success against model size), of Figs.
8 / S16 (arithmetic accuracy against the number of operations) and of Tables 1 / S3 (bytes). Each experiment passes
in what its figure marks (chance, the training domain), so this module imports none of them."""

from __future__ import annotations

import statistics
from pathlib import Path

from multitoken.experiments.polynomials import P

COLORS = {1: "#7f7f7f", 2: "#1f77b4", 4: "#d62728", 8: "#2ca02c"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_induction(records: list[dict], path: Path, chance: float) -> None:
    """Left: induction success (the best checkpoint, as the paper's epoch oracle) against non-embedding parameters,
    every seed a marker, the mean a line, chance dashed. Right: every run's success against tokens trained, which shows
    *when* induction forms (the paper's claim is about its formation), not only how far it got."""
    plt = pyplot()
    fig, (ax, curves) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in sorted({r["n_future"] for r in records}):
        rows = [r for r in records if r["n_future"] == n]
        ax.scatter([r["non_embedding_params"] for r in rows], [r["best"]["induction"] for r in rows],
                   color=COLORS.get(n), alpha=0.5, s=18)
        sizes = sorted({r["non_embedding_params"] for r in rows})
        means = [statistics.mean(r["best"]["induction"] for r in rows if r["non_embedding_params"] == s)
                 for s in sizes]
        ax.plot(sizes, means, "o-", color=COLORS.get(n), label=f"n = {n}")
    ax.axhline(chance, color="#999999", ls="--", lw=1, label="chance (1/48)")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("induction success (best checkpoint)")
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
    ax.set_title("Induction on procedural stories (Fig. 7 analogue)", fontsize=10)

    styles = ["-", "--", ":", "-."]
    sizes = sorted({(r["non_embedding_params"], r["size"]) for r in records})
    for r in records:
        style = styles[[s for _, s in sizes].index(r["size"]) % len(styles)]
        tokens, values = zip(*r["curve"]) if r.get("curve") else ((), ())
        curves.plot([t / 1e6 for t in tokens], values, style, color=COLORS.get(r["n_future"]), lw=1.2, alpha=0.8)
    for n in sorted({r["n_future"] for r in records}):
        curves.plot([], [], "-", color=COLORS.get(n), label=f"n = {n}")
    for i, (_, size) in enumerate(sizes):
        curves.plot([], [], styles[i % len(styles)], color="#444444", label=size)
    curves.axhline(chance, color="#999999", ls="--", lw=1)
    curves.set_xlabel("tokens trained (millions)")
    curves.set_ylabel("induction success")
    curves.set_ylim(0, None)
    curves.legend(fontsize=8)
    curves.set_title("When induction forms: every run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_arithmetic(records: list[dict], path: Path, operations: list[int], in_domain: int,
                    floor: dict | None = None) -> None:
    """Exact-match (left) and per-coefficient (right) accuracy against the number of operations, one line per
    (size, n): the seeds' mean, their range shaded; the divider marks the end of the training domain, the dotted
    line (when given) what always giving the most frequent answer scores, and the dashed one per-coefficient chance."""
    plt = pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2))
    ms = list(operations)
    keys = sorted({(r["size"], r["n_future"]) for r in records}, key=lambda k: (k[0] != "S", k[1]))
    for ax, metric, title in ((panels[0], "exact", "exact match"), (panels[1], "per_coefficient", "per coefficient")):
        for size, n in keys:
            rows = [r for r in records if r["size"] == size and r["n_future"] == n]
            values = [[100 * r["final"][metric][str(m)] for r in rows] for m in ms]
            style = "-" if size == keys[0][0] else "--"
            ax.plot(ms, [statistics.mean(v) for v in values], style, marker="o", ms=3, color=COLORS.get(n),
                    label=f"{size}, n = {n} ({rows[0]['non_embedding_params'] / 1e6:.2f}M)")
            ax.fill_between(ms, [min(v) for v in values], [max(v) for v in values], color=COLORS.get(n), alpha=0.12)
        if floor:
            ax.plot(ms, [100 * floor[metric][str(m)] for m in ms], ":", color="#000000", lw=1.2,
                    label="most frequent answer (no model)")
        if metric == "per_coefficient":
            ax.axhline(100 / P, color="#999999", ls="--", lw=1, label=f"chance (1/{P})")
        ax.axvline(in_domain + 0.5, color="#999999", lw=1)
        ax.set_xlabel("# operations (training: 1-5)")
        ax.set_ylabel(f"accuracy, {title} (%)")
        ax.set_xticks(ms)
        ax.set_ylim(0, None)
        ax.legend(fontsize=7)
    panels[0].set_title("Polynomial arithmetic over F7[X]/(X^d) (Figs. 8 / S16 analogue)", fontsize=10)
    panels[1].set_title("Each answer coefficient right", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bytes(records: list[dict], path: Path) -> None:
    """Head-1 bits per byte (left) and self-speculative bytes per forward (right) against n, every seed a marker."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    ns = sorted({r["n_future"] for r in records})
    for ax, key, label in ((left, "bpb", "head-1 bits per byte (validation)"),
                           (right, "tau", "tau: bytes per forward (greedy, all heads)")):
        for n in ns:
            values = [r["final"][key] for r in records if r["n_future"] == n]
            ax.scatter([n] * len(values), values, color=COLORS.get(n), alpha=0.6, s=20)
        ax.plot(ns, [statistics.mean(r["final"][key] for r in records if r["n_future"] == n) for n in ns], "-",
                color="#444444", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("n (heads), parameter-matched")
        ax.set_ylabel(label)
    right.plot(ns, ns, ":", color="#999999", lw=1, label="n (every draft accepted)")
    right.legend(fontsize=8)
    fig.suptitle("Byte-level models on the built-in corpus: choice of n (Tables 1 / S3 analogue)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
