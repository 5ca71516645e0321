"""Seconds per step of training extra heads on a frozen model (`--freeze base`), by precision and draft vocabulary
size, each case a real `Trainer` stepping on the same data, the cases alternating in rounds (docs/real-model.md).

    python scripts/head_train_speed.py --init-from smol-mt --data data/smol-raw --draft-vocab 0 4096
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from multitoken.checkpoint import read_train_config, resolve_checkpoint
from multitoken.config import DataConfig, OptimConfig, TrainConfig
from multitoken.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-from", required=True)
    parser.add_argument("--data", required=True, help="A prepared folder (made with the model's tokenizer).")
    parser.add_argument("--n-future", type=int, default=4)
    parser.add_argument("--draft-vocab", type=int, nargs="+", default=[0, 4096])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = read_train_config(resolve_checkpoint(args.init_from)).model
    trainers = {}
    with tempfile.TemporaryDirectory() as runs:
        for precision in args.precision:
            for k in args.draft_vocab:
                cfg = TrainConfig(init_from=args.init_from, freeze="base", precision=precision,
                                  model=model.__class__(vocab_size=model.vocab_size, n_future=args.n_future,
                                                        draft_vocab=k),
                                  data=DataConfig(path=[args.data]), seq_len=args.seq_len, batch_size=args.batch_size,
                                  max_steps=args.rounds + 1, eval_batches=1, progress=False,
                                  optim=OptimConfig(warmup_steps=1), out_dir=f"{runs}/{precision}-{k}")
                trainer = Trainer(cfg)
                trainer.train_step(0)  # first-call allocations
                trainers[(precision, k)] = trainer
        seconds = {case: [] for case in trainers}
        for r in range(args.rounds):
            for case, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_step(r + 1)
                seconds[case].append(time.perf_counter() - start)
        for trainer in trainers.values():
            trainer.close()
    tokens = args.batch_size * args.seq_len
    print(f"{'precision':<10} {'draft vocab':>11} {'s/step':>8} {'tokens/s':>9}   rounds")
    for (precision, k), values in seconds.items():
        median = statistics.median(values)
        print(f"{precision:<10} {k or 'all':>11} {median:>8.2f} {tokens / median:>9.0f}   "
              + ", ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
