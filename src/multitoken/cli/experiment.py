"""`multitoken experiment induction|arithmetic|bytes|sequential`: the paper's small-scale findings (and the kind of
multi-token prediction to train) as runnable grids."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.cli.common import add_command_group, call, command_parser, int_list
from multitoken.errors import ConfigError
from multitoken.files import read_json

COMMON_HELP = ("Each run is an ordinary run directory under OUT/runs (trained by the ordinary trainer, resumable); "
               "re-running skips finished runs, resumes unfinished ones and evaluates only new checkpoints. Writes "
               "OUT/results.json (a record per run), OUT/results.md (mean ± sd over seeds) and a PNG plot.")
# The options every experiment takes, documented once: each experiment's docstring is built from its own text and
# these (`_documented`), and its signature repeats their names with its own defaults.
COMMON_ARGS = """
        sizes: Model sizes, comma-separated (see --help above).
        n_future: Head counts n, comma-separated.
        seeds: Seeds per configuration (1..N).
        first_seed: Start the seeds here (K..K+N-1): split one grid between processes or machines, each with its
            own seeds and the same --out.
        tokens: Tokens trained per run.
        lr: Peak learning rate (warmup 2%, cosine to 0.03x).
        batch_tokens: Tokens per optimizer step (windows of 256): fewer give more steps for the same tokens.
        evaluations: Checkpoints evaluated along each run (evenly spaced; the last is the end).
        out: Output folder; runs accumulate in its results.json.
        report: Only redraw OUT's table and plot from its results.json (no training; e.g. for the results committed
            under docs/experiments).
        quick: A miniature grid (one tiny size, 1 seed, ~50k tokens, small test sets) that checks the pipeline in
            under a minute; not the claim.
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""


def _documented(description: str, extra_args: str = ""):
    """Give an experiment's function its docstring: the description, then every option's help (Args)."""
    def attach(fn):
        fn.__doc__ = f"{description} {COMMON_HELP}\n\n    Args:{COMMON_ARGS}{extra_args}\n    "
        return fn
    return attach


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "experiment", "Reproduce the paper's small-scale findings on this machine.",
                              "Run the paper's small-scale experiments (induction, arithmetic).")
    inner.add_subcommand("induction", command_parser(induction),
                         help="Induction heads form earlier with n = 2 in small models?")
    inner.add_subcommand("arithmetic", command_parser(arithmetic),
                         help="Multi-token beats a 3x larger next-token model at arithmetic?")
    inner.add_subcommand("bytes", command_parser(bytes_n), help="Which n is best for byte-level models?")
    inner.add_subcommand("sequential", command_parser(sequential),
                         help="Next-token, parallel heads or a sequential module, trained from scratch?")


@_documented("Induction (paper section 4.1, Fig. 7): n = 1 vs n = 2 models of sizes 0.15M, 0.45M, 1M, 3M "
             "non-embedding parameters on procedural stories with two-token names; the metric is head 1's accuracy "
             "at the second token of repeated names.", """
        p_fresh: Share of training characters with a fresh two-token name (0.05: Fig. 7; 1.0: App. J).
        test_stories: Test stories (names from held-out pairs).""")
def induction(sizes: str = "0.15M,0.45M,1M", n_future: str = "1,2", seeds: int = 3, first_seed: int = 1,
              tokens: int = 3_000_000, lr: float = 1e-3, batch_tokens: int = 8192, evaluations: int = 20,
              out: str = "experiments/induction", report: bool = False, quick: bool = False, device: str = "auto",
              p_fresh: float = 0.05, test_stories: int = 500) -> int:
    return _run("induction", SimpleNamespace(**locals()))


@_documented("Polynomial arithmetic over F_7[X]/(X^5) (paper section 4.2, Figs. 8 and S16): size S with n = 1, 2, 4 "
             "against size M (about 3x S) with n = 1; the metric is exact-match greedy accuracy per number of "
             "operations, 1-5 in the training domain, 6-10 out of it.", """
        larger_n: Head counts for the largest size (the 3x larger next-token baseline: 1).
        per_operations: Test expressions per number of operations.
        degree: The ring F_7[X]/(X^degree): 5 is the paper's; 3 is the protocol's fallback when a small next-token
            model learns almost nothing of the 5-coefficient task.""")
def arithmetic(sizes: str = "S,M", n_future: str = "1,2,4", seeds: int = 3, first_seed: int = 1,
               tokens: int = 3_000_000, lr: float = 1e-3, batch_tokens: int = 8192, evaluations: int = 4,
               out: str = "experiments/arithmetic", report: bool = False, quick: bool = False, device: str = "auto",
               larger_n: str = "1", per_operations: int = 2000, degree: int = 5) -> int:
    return _run("arithmetic", SimpleNamespace(**locals()))


@_documented("Byte-level choice of n (paper sections 3.3-3.4): n = 1, 2, 4, 8, parameter-matched (10 layers, "
             "d_model 128), the same tokens of the built-in corpus; head 1's validation bits per byte and the bytes "
             "per forward of greedy self-speculative decoding.")
def bytes_n(sizes: str = "2M", n_future: str = "1,2,4,8", seeds: int = 3, first_seed: int = 1,
            tokens: int = 3_276_800, lr: float = 2e-3, batch_tokens: int = 4096, evaluations: int = 4,
            out: str = "experiments/bytes", report: bool = False, quick: bool = False, device: str = "auto") -> int:
    return _run("bytes", SimpleNamespace(**locals()))


@_documented("From scratch, which kind of multi-token prediction: next-token, n parallel heads (the paper's) or one "
             "sequential module (DeepSeek-V3's MTP module in the EAGLE-3 layout the serving engines run), at about "
             "equal parameters on the same bytes of the built-in corpus; sizes 'default' (the built-in default run's "
             "6 layers) and '2M' (the bytes experiment's 10); head 1's validation bits per byte and the bytes per "
             "forward of greedy self-speculative decoding with 3 guesses per step. --n_future is the heads' one n.")
def sequential(sizes: str = "default,2M", n_future: str = "4", seeds: int = 2, first_seed: int = 1,
               tokens: int = 3_276_800, lr: float = 2e-3, batch_tokens: int = 4096, evaluations: int = 4,
               out: str = "experiments/sequential", report: bool = False, quick: bool = False,
               device: str = "auto") -> int:
    return _run("sequential", SimpleNamespace(**locals()))


def _sizes(text: str, known: dict) -> dict:
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise ConfigError(f"--sizes takes a comma-separated subset of {','.join(known)} (got {text!r})")
    return {name: known[name] for name in names}


def _report(experiment: str, out) -> int:
    from multitoken.experiments.runner import write_report

    path = out / "results.json"
    records = read_json(path, "run the grid first, or point --out at its folder", ConfigError, kind=list)
    print(write_report(experiment, records, out))
    print(f"wrote {out / 'results.md'} and {out / (experiment + '.png')}")
    return 0


def run(args: Namespace) -> int:
    command = {"induction": induction, "arithmetic": arithmetic, "bytes": bytes_n,
               "sequential": sequential}[args.experiment]
    return call(command, args[args.experiment])


def _run(experiment: str, a: SimpleNamespace) -> int:
    from dataclasses import replace

    from multitoken.experiments.common import Budget
    from multitoken.experiments.runner import EXPERIMENTS, reference, run_grid, table
    from multitoken.training.runtime import resolve_device

    if a.report:
        return _report(experiment, Path(a.out).expanduser())
    module = EXPERIMENTS[experiment]
    n_futures = int_list(a.n_future, "--n_future")
    if min(a.seeds, a.first_seed, a.tokens, a.evaluations, a.batch_tokens) < 1 or a.lr <= 0:
        raise ConfigError("--seeds, --first_seed, --tokens, --evaluations and --batch_tokens must be at least 1 and "
                          "--lr positive")
    if a.quick:
        sizes, seeds = module.QUICK_SIZES, [a.first_seed]
        budget = replace(module.QUICK_BUDGET, tokens=min(a.tokens, module.QUICK_BUDGET.tokens))
    else:
        sizes, seeds = _sizes(a.sizes, module.SIZES), list(range(a.first_seed, a.first_seed + a.seeds))
        budget = Budget(tokens=a.tokens, lr=a.lr, evaluations=a.evaluations, batch_tokens=a.batch_tokens)
    setup = module.setup_from_args(a)
    specs = module.specs(sizes, n_futures, seeds, a)
    out = Path(a.out).expanduser()
    records = run_grid(experiment, specs, budget, setup, out, resolve_device(a.device))
    print(table(experiment, records, reference(experiment, out)))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / (experiment + '.png')}")
    return 0
