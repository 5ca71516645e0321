"""`multitoken experiment induction|arithmetic`: the paper's small-scale findings as runnable grids."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace

from multitoken.cli.common import add_command_group, add_device_argument, int_list, new_parser
from multitoken.errors import ConfigError
from multitoken.files import read_json

COMMON_HELP = ("Each run is an ordinary run directory under OUT/runs (trained by the ordinary trainer, resumable); "
               "re-running skips finished runs, resumes unfinished ones and evaluates only new checkpoints. Writes "
               "OUT/results.json (a record per run), OUT/results.md (mean ± sd over seeds) and a PNG plot.")


def _add_common(parser, sizes: str, n_future: str, out: str, tokens: int, lr: float, evaluations: int,
                batch_tokens: int = 8192) -> None:
    parser.add_argument("--sizes", type=str, default=sizes, help="Model sizes, comma-separated (see --help above).")
    parser.add_argument("--n_future", type=str, default=n_future, help="Head counts n, comma-separated.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per configuration (1..N).")
    parser.add_argument("--first_seed", type=int, default=1,
                        help="Start the seeds here (K..K+N-1): split one grid between processes or machines, each "
                             "with its own seeds and the same --out.")
    parser.add_argument("--tokens", type=int, default=tokens, help="Tokens trained per run.")
    parser.add_argument("--lr", type=float, default=lr, help="Peak learning rate (warmup 2%, cosine to 0.03x).")
    parser.add_argument("--batch_tokens", type=int, default=batch_tokens,
                        help="Tokens per optimizer step (windows of 256): fewer give more steps for the same tokens.")
    parser.add_argument("--evaluations", type=int, default=evaluations,
                        help="Checkpoints evaluated along each run (evenly spaced; the last is the end).")
    parser.add_argument("--out", type=str, default=out, help="Output folder; runs accumulate in its results.json.")
    parser.add_argument("--report", action="store_true",
                        help="Only redraw OUT's table and plot from its results.json (no training; e.g. for the "
                             "results committed under docs/experiments).")
    parser.add_argument("--quick", action="store_true",
                        help="A miniature grid (one tiny size, 1 seed, ~50k tokens, small test sets) that checks the "
                             "pipeline in under a minute; not the claim.")
    add_device_argument(parser)


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "experiment", "Reproduce the paper's small-scale findings on this machine.",
                              "Run the paper's small-scale experiments (induction, arithmetic).")
    ind = new_parser("Induction (paper section 4.1, Fig. 7): n = 1 vs n = 2 models of sizes 0.15M, 0.45M, 1M, 3M "
                     "non-embedding parameters on procedural stories with two-token names; the metric is head 1's "
                     "accuracy at the second token of repeated names. " + COMMON_HELP)
    _add_common(ind, "0.15M,0.45M,1M", "1,2", "experiments/induction", 3_000_000, 1e-3, 20)
    ind.add_argument("--p_fresh", type=float, default=0.05,
                     help="Share of training characters with a fresh two-token name (0.05: Fig. 7; 1.0: App. J).")
    ind.add_argument("--test_stories", type=int, default=500, help="Test stories (names from held-out pairs).")
    inner.add_subcommand("induction", ind, help="Induction heads form earlier with n = 2 in small models?")
    ari = new_parser("Polynomial arithmetic over F_7[X]/(X^5) (paper section 4.2, Figs. 8 and S16): size S with "
                     "n = 1, 2, 4 against size M (about 3x S) with n = 1; the metric is exact-match greedy accuracy "
                     "per number of operations, 1-5 in the training domain, 6-10 out of it. " + COMMON_HELP)
    _add_common(ari, "S,M", "1,2,4", "experiments/arithmetic", 3_000_000, 1e-3, 4)
    ari.add_argument("--larger_n", type=str, default="1",
                     help="Head counts for the largest size (the 3x larger next-token baseline: 1).")
    ari.add_argument("--per_operations", type=int, default=2000, help="Test expressions per number of operations.")
    ari.add_argument("--degree", type=int, default=5,
                     help="The ring F_7[X]/(X^degree): 5 is the paper's; 3 is the protocol's fallback when a small "
                          "next-token model learns almost nothing of the 5-coefficient task.")
    inner.add_subcommand("arithmetic", ari, help="Multi-token beats a 3x larger next-token model at arithmetic?")
    byt = new_parser("Byte-level choice of n (paper sections 3.3-3.4): n = 1, 2, 4, 8, parameter-matched (10 layers, "
                     "d_model 128), the same tokens of the built-in corpus; head 1's validation bits per byte and "
                     "the bytes per forward of greedy self-speculative decoding. " + COMMON_HELP)
    _add_common(byt, "2M", "1,2,4,8", "experiments/bytes", 3_276_800, 2e-3, 4, batch_tokens=4096)
    inner.add_subcommand("bytes", byt, help="Which n is best for byte-level models?")


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
    from dataclasses import replace

    from multitoken.experiments.common import Budget
    from multitoken.experiments.runner import EXPERIMENTS, reference, run_grid, table
    from multitoken.training.runtime import resolve_device

    experiment = args.experiment
    a = args[experiment]
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
