"""What the serving engine's auto choice between plain and chain steps measures: step times and tau."""

from __future__ import annotations


class StepTimes:
    """Seconds per step of each kind at each batch size (moving averages), and tau, for the auto choice."""

    def __init__(self, samples: int = 3, every: int = 256) -> None:
        self.seconds: dict[tuple[str, int], float] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self.tau: float | None = None
        self.samples, self.every, self.count = samples, every, 0

    def record(self, kind: str, batch: int, seconds: float) -> None:
        key = (kind, batch)
        n = self.counts.get(key, 0)
        old = self.seconds.get(key, seconds)
        # The plain mean of the first samples, then a moving average (the machine and the rows' lengths drift)
        self.seconds[key] = old + (seconds - old) / (n + 1) if n < self.samples else 0.8 * old + 0.2 * seconds
        self.counts[key] = n + 1

    def record_tau(self, tokens_per_row: float) -> None:
        self.tau = tokens_per_row if self.tau is None else 0.9 * self.tau + 0.1 * tokens_per_row

    def choose(self, batch: int) -> str:
        """'chain' or 'plain' for a greedy batch of this size: each timed `samples` times first, then the faster in
        tokens/s, with the other re-timed every `every` steps (tau and the machine move)."""
        self.count += 1
        for kind in ("chain", "plain"):
            if self.counts.get((kind, batch), 0) < self.samples:
                return kind
        chain, plain = self.seconds[("chain", batch)], self.seconds[("plain", batch)]
        best = "chain" if (self.tau or 1.0) * plain > chain else "plain"
        if self.count % self.every == 0:
            return "plain" if best == "chain" else "chain"
        return best
