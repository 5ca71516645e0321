"""Experiment: does multi-token training help algorithmic reasoning more than a 3x larger next-token model?
(paper section 4.2, Figs. 8 and S16)

Models train on polynomial expressions over F_7[X]/(X^5) (or a smaller ring, `--degree`) with 1 to 5 operations
(`polynomials.py`), packed into windows with the loss on every token, with n = 1, 2 and 4 at size S and n = 1 at size
M (about 3x S). The metric: greedy decoding with head 1 of the answer's coefficients after `=`, exact match (and per
coefficient), on a fixed test set of expressions with 1 to 10 operations (6 to 10 are out of the training domain),
2000 per number of operations; beside it, what always giving the most frequent answer scores on the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.experiments import polynomials as poly
from multitoken.config import DataConfig, int_list
from multitoken.data.tokenizer import BPETokenizer
from multitoken.errors import ConfigError
from multitoken.experiments.common import Budget, RunSpec, Shape, prepare_documents, word_tokenizer
from multitoken.experiments.report import groups, mean_sd
from multitoken.model import MTPModel

SIZES = {"S": Shape(96, 8, 4), "M": Shape(168, 8, 6)}
QUICK_SIZES = {"tiny": Shape(32, 5, 2)}  # n = 4 still leaves a 1-layer trunk
DATA_SEED, TEST_SEED = 1000, 2000
OPERATIONS = range(1, 11)
IN_DOMAIN = 5  # training draws 1..5 operations


@dataclass(frozen=True)
class Setup:
    per_operations: int = 2000  # test expressions per number of operations
    pauses: int = 0
    degree: int = poly.DEGREE  # the ring F_7[X]/(X^degree); the protocol's fallback for a model that learns nothing: 3


def tokenizer():
    return word_tokenizer(poly.VOCAB)


def test_expressions(setup: Setup) -> dict[int, list[poly.Expr]]:
    return poly.test_set(TEST_SEED, setup.per_operations, OPERATIONS, setup.degree)


def training_texts(budget: Budget, setup: Setup) -> list[str]:
    """Enough expressions for the token budget, none of them a test question. An expression of 1..5 operations
    holds 3.25 leaves on average, so it takes about 4.25 d + 5 words with its operators, `=`, answer and separator
    (26 for d = 5)."""
    held = {" ".join(e.prefix()) for exprs in test_expressions(setup).values() for e in exprs}
    count = int(budget.tokens / (4.25 * setup.degree + 5 + setup.pauses) * 1.1) + 50
    return poly.training_texts(DATA_SEED, count, IN_DOMAIN, setup.pauses, exclude=held, degree=setup.degree)


def make_metric(setup: Setup, device: torch.device, tokenizer_, seq_len: int):
    """Exact-match accuracy per number of operations (and per-coefficient accuracy), greedy head-1 decoding."""
    tests = test_expressions(setup)
    eot = [tokenizer_.eot_id]
    cases = {m: ([eot + tokenizer_.encode(" ".join(poly.question(e, setup.pauses))) for e in exprs],
                 [[tokenizer_.encode(str(c))[0] for c in e.value()] for e in exprs]) for m, exprs in tests.items()}

    def metric(model: MTPModel) -> dict:
        model.eval()
        exact, per_coefficient = {}, {}
        for m, (prompts, answers) in cases.items():
            hits = coefficient_hits = 0
            for start in range(0, len(prompts), 256):
                batch = prompts[start:start + 256]
                ids, lengths = pad_prompts(batch, device)
                out = generate(model, ids, setup.degree, lengths=lengths).tolist()
                for got, want in zip(out, answers[start:start + 256]):
                    hits += got == want
                    coefficient_hits += sum(a == b for a, b in zip(got, want))
            exact[str(m)] = hits / len(prompts)
            per_coefficient[str(m)] = coefficient_hits / (setup.degree * len(prompts))
        in_domain, out_of_domain = domain_means(exact)
        return {"in_domain": in_domain, "out_of_domain": out_of_domain, "exact": exact,
                "per_coefficient": per_coefficient}

    return metric


def domain_means(per_m: dict[str, float]) -> tuple[float, float]:
    """The means over the training domain's numbers of operations and over the rest."""
    inside = [per_m[str(m)] for m in OPERATIONS if m <= IN_DOMAIN]
    outside = [per_m[str(m)] for m in OPERATIONS if m > IN_DOMAIN]
    return sum(inside) / len(inside), sum(outside) / len(outside)


def majority_reference(setup: Setup) -> dict:
    """The test set's scores for a model that ignores the question and always gives the most frequent answer (or
    coefficient values): the floor a run must clear to have learned any arithmetic, in the metric's own layout."""
    exact, per_coefficient = {}, {}
    for m, exprs in test_expressions(setup).items():
        exact[str(m)], per_coefficient[str(m)] = poly.majority_answer_accuracy(exprs)
    in_domain, out_of_domain = domain_means(exact)
    return {"in_domain": in_domain, "out_of_domain": out_of_domain, "exact": exact,
            "per_coefficient": per_coefficient}


def grid(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int], larger_n: list[int]) -> list[RunSpec]:
    """Every size except the largest with each n; the largest (the "3x larger" model) with `larger_n`."""
    names = list(sizes)
    specs = []
    for size in names:
        for seed in seeds:
            for n in (n_futures if size != names[-1] or len(names) == 1 else larger_n):
                specs.append(RunSpec(size, sizes[size], n, seed))
    return specs


def data(budget: Budget, setup: Setup, out: Path) -> tuple[DataConfig, BPETokenizer]:
    """The generated training documents, prepared once under OUT/data, and their tokenizer."""
    return prepare_documents(lambda: training_texts(budget, setup), tokenizer(), out / "data")


# --- the experiment's protocol (see `runner.py`) ----------------------------------------------------------------------

UNIT = "percent"
QUICK_BUDGET = Budget(tokens=49_152, seq_len=128, batch_tokens=2048, evaluations=2, lr=3e-3)


def setup_from_args(a) -> Setup:
    if not 2 <= a.degree <= 8:
        raise ConfigError(f"--degree must be 2..8 (got {a.degree}): the ring's coefficient count")
    return Setup(per_operations=20 if a.quick else a.per_operations, degree=a.degree)


def specs(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int], a) -> list[RunSpec]:
    return grid(sizes, n_futures, seeds, int_list(a.larger_n, "--larger_n", "1"))


FORMED = 0.5  # exact match at which a number of operations counts as formed (the second reading)


def formation(evals: list[dict]) -> dict[str, int | None]:
    """Per number of operations, the tokens trained when exact match first reached FORMED (None: never)."""
    return {str(m): next((e["tokens"] for e in evals if e["exact"][str(m)] >= FORMED), None) for m in OPERATIONS}


def summarize(evals: list[dict]) -> dict:
    """The curve (tokens, in domain, out of domain), every evaluation's exact match per m, and when each m formed."""
    return {"curve": [[e["tokens"], e["in_domain"], e["out_of_domain"]] for e in evals],
            "exact_curve": [[e["tokens"], e["exact"]] for e in evals], "formed_at": formation(evals)}


def reference(setup: dict) -> dict:
    """What answering without reading the question scores on this grid's test set: the floor row."""
    return majority_reference(Setup(**setup))


def table(records: list[dict], reference: dict | None = None) -> str:
    """One row per (size, n), and a last row for `reference` when given."""
    lines = ["| size | non-embedding params | n | seeds | in domain (1-5 ops) | out of domain (6-10 ops) | "
             "per coefficient, in domain | per coefficient, out of domain | "
             + " | ".join(f"{m} ops" for m in OPERATIONS) + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(OPERATIONS)]

    def row(label: str, params: str, n: str, seeds: str, finals: list[dict]) -> str:
        per_coefficient = [domain_means(f["per_coefficient"]) for f in finals]
        per_m = " | ".join(mean_sd([f["exact"][str(m)] for f in finals]) for m in OPERATIONS)
        return (f"| {label} | {params} | {n} | {seeds} | {mean_sd([f['in_domain'] for f in finals])} | "
                f"{mean_sd([f['out_of_domain'] for f in finals])} | "
                f"{mean_sd([p[0] for p in per_coefficient])} | {mean_sd([p[1] for p in per_coefficient])} | "
                f"{per_m} |")

    for (size, n), rs in groups(records).items():
        lines.append(row(size, f"{rs[0]['non_embedding_params']:,}", str(n), str(len(rs)), [r["final"] for r in rs]))
    if reference:  # one value, no spread: "± 0.0" would read as a measured sd
        lines.append(row("most frequent answer, no model", "-", "-", "-", [reference]).replace(" ± 0.0", ""))
    # The formation reading first, so that the floor row stays the table's (and the report's) last line.
    return "\n".join(_formation_table(records) + lines) + "\n"


def _formation_table(records: list[dict]) -> list[str]:
    """The second reading: tokens (millions) until exact match first reached 50% at each m, mean over the seeds
    that got there, and how many did ("never" where none did)."""
    if not any("formed_at" in r for r in records):
        return []  # records from before this reading
    lines = [f"Tokens (millions) until exact match first reached {100 * FORMED:.0f}%, mean over the seeds that "
             "reached it (how many of them did):", "",
             "| size | n | " + " | ".join(f"{m} ops" for m in OPERATIONS) + " |",
             "|---|---:|" + "---:|" * len(OPERATIONS)]
    for (size, n), rs in groups(records).items():
        cells = []
        for m in OPERATIONS:
            reached = [r["formed_at"][str(m)] for r in rs if r.get("formed_at", {}).get(str(m)) is not None]
            cells.append(f"{sum(reached) / len(reached) / 1e6:.1f} ({len(reached)}/{len(rs)})" if reached else "never")
        lines.append(f"| {size} | {n} | " + " | ".join(cells) + " |")
    return lines + ["", "Final exact match (percent, mean ± sd over seeds):", ""]


def plot(records: list[dict], path: Path, reference: dict | None = None) -> None:
    from multitoken.experiments.plots import plot_arithmetic

    plot_arithmetic(records, path, list(OPERATIONS), IN_DOMAIN, reference)
