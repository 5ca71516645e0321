"""What the experiments' tables share: records in a stable order, grouped by (size, n), and mean ± sd over seeds."""

from __future__ import annotations

import statistics


def mean_sd(values: list[float]) -> str:
    """Percent, mean ± sd over seeds ("-" for none)."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def mean_sd_plain(values: list[float]) -> str:
    """Mean ± sd over seeds to four decimals, as measured (bits/byte, tau); the mean alone for one seed."""
    return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def in_order(records: list[dict]) -> list[dict]:
    """Smallest size first, then n, then seed, whatever order the runs finished in (several processes sharing a grid
    finish them interleaved)."""
    return sorted(records, key=lambda r: (r["non_embedding_params"], r["n_future"], r["seed"]))


def groups(records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The records by (size, n), in order."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in in_order(records):
        out.setdefault((r["size"], r["n_future"]), []).append(r)
    return out
