"""The training loop: setup -> fit (train_step, validate, save) with exact resume.

Everything that changes from step to step lives in `TrainState` plus the optimizer and RNG states, all saved in each
checkpoint; data windows are a pure function of (seed, step), and the learning rate a pure function of the step. So a
run killed after checkpoint k and resumed from it takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from multitoken.checkpoint import list_checkpoints, read_train_config
from multitoken.config import TrainConfig, model_config_diff, to_dict
from multitoken.data.batches import eval_batches, train_batch
from multitoken.data.tokens import resolve_data
from multitoken.errors import CheckpointError, ConfigError, MultitokenError, TrainingError
from multitoken.files import atomic_write_text
from multitoken.model import MTPModel
from multitoken.training.checkpoint import out_of_space, resumable, save_checkpoint, sweep_debris
from multitoken.training.distributed import (MTPObjective, all_reduce_, apply_parallel, gradient_sync,
                                             init_distributed, shutdown_distributed)
from multitoken.training.evaluate import evaluate, format_eval_table
from multitoken.training.optim import build_optimizer, get_lr
from multitoken.training.resume import load_full_state, resume_candidates, truncate_metrics
from multitoken.training.run_lock import RunLock
from multitoken.training.runtime import autocast_for, resolve_device
from multitoken.training.memory import check_fits, training_estimate
from multitoken.training.draft_vocab import most_frequent_tokens
from multitoken.training.surgery import (freeze_base, freeze_trunk, init_drafter_from_base, init_from_checkpoint,
                                        model_config_for_init)


@dataclass
class TrainState:
    """The mutable loop state, saved as-is in every checkpoint."""

    step: int = 0  # optimizer steps taken; also the data position (windows are drawn per step)
    tokens_seen: int = 0
    last_val: dict | None = None


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.init_from:  # the shape comes from the checkpoint; n_future and the extra heads' kind are this run's own
            cfg = dataclasses.replace(cfg, model=model_config_for_init(cfg.init_from, cfg.model))
        self.cfg = cfg
        self.out_dir = Path(cfg.out_dir)
        self.dist, self.device = init_distributed(resolve_device(cfg.device))
        if cfg.window_tokens > cfg.model.max_seq_len:
            raise ConfigError(f"seq_len ({cfg.seq_len}) exceeds the model's context of {cfg.model.max_seq_len}: "
                              f"use --seq_len {cfg.model.max_seq_len} or less")
        self.window = cfg.window_tokens + cfg.model.n_future
        # Before any data or weights are allocated: a run the machine cannot hold is refused by name, not killed.
        check_fits(training_estimate(cfg.model, cfg.batch_size, cfg.window_tokens, cfg.cross_entropy == "chunked",
                                     cfg.loss_strategy == "naive"), self.device, "training", cfg.model)
        if cfg.model.draft_vocab > cfg.model.vocab_size:
            raise ConfigError(f"model.draft_vocab ({cfg.model.draft_vocab:,}) is larger than the vocabulary "
                              f"({cfg.model.vocab_size:,}): use fewer tokens, or 0 to draft over all of them")
        self.tokenizer, self.data = resolve_data(cfg.data)
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise ConfigError(f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer's "
                              f"({self.tokenizer.vocab_size}): set --model.vocab_size {self.tokenizer.vocab_size}")
        self.val_batches = eval_batches(self.data.val, cfg.batch_size, self.window, cfg.eval_batches)
        train_batch(self.data.train, 1, self.window, cfg.seed, 0)  # fail now, not at step 0, if train is too short

        self._build_model()
        if cfg.compile:
            # Compile layer by layer: the head loop calls trunk and heads separately, and module-level compile keeps
            # the state-dict keys unchanged.
            for block in [*self.model.layers, *self.model.extra_heads]:
                block.compile()
        eot_id = self.tokenizer.eot_id if cfg.data.mask_documents else None
        self.drafter_steps = cfg.drafter_steps if cfg.model.drafter != "none" else 0
        self.objective = MTPObjective(self.model, cfg.loss_strategy, cfg.cross_entropy, cfg.resolved_head_weights(),
                                      eot_id, self.drafter_steps, cfg.drafter_weight, cfg.draft_targets)
        mode = cfg.parallel if cfg.parallel != "auto" else ("ddp" if self.dist.world_size > 1 else "none")
        self.parallel = mode
        self.wrapped = apply_parallel(self.objective, mode, self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device.type)  # after sharding: FSDP2 swaps params
        self.state = TrainState()
        self.resumed_from: Path | None = None
        self.notes: list[str] = []  # what setup repaired or skipped, printed when the run starts
        self.lock: RunLock | None = None
        self._claim_out_dir()
        try:
            self._maybe_resume()
        except BaseException:
            self.close()  # a refused resume must not keep the run locked for the rest of this process
            raise

    # --- setup -------------------------------------------------------------------------------------------------

    def _build_model(self) -> None:
        """The model: initialised (or from --init-from), its draft vocabulary chosen, the frozen parts fixed."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = MTPModel(cfg.model).to(self.device)
        self.init_note, vocab_loaded = init_from_checkpoint(self.model, cfg.init_from, self.tokenizer) \
            if cfg.init_from else (None, False)
        self.draft_note = None
        if cfg.model.draft_vocab and not vocab_loaded:  # a resumed run loads its own later, the same ids
            ids, coverage, counted = most_frequent_tokens(self.data.train, cfg.model.draft_vocab, cfg.model.vocab_size)
            self.model.draft_ids.copy_(ids)
            self.draft_note = (f"draft vocabulary: the {cfg.model.draft_vocab:,} most frequent tokens of the training "
                               f"data, {coverage:.1%} of its {counted:,} tokens")
        if cfg.model.drafter != "none" and cfg.init_from and "drafter" in self.init_note:
            init_drafter_from_base(self.model)  # after the draft vocabulary is chosen: its rows start the drafter's
        if cfg.freeze == "trunk":
            freeze_trunk(self.model)
        elif cfg.freeze == "base":
            if cfg.model.n_future < 2 and cfg.model.drafter == "none":
                raise ConfigError("--freeze base trains only the extra heads or the drafter, and this model has "
                                  "neither: set --model.n_future 2 or more, or --model.drafter eagle3")
            freeze_base(self.model)

    def _claim_out_dir(self) -> None:
        """One writer per run directory: rank 0 takes the run lock and clears what a killed save or deletion left;
        every rank learns whether it could, so a refused job stops on all ranks at once."""
        error = None
        if self.dist.is_main:
            try:
                self.lock = RunLock(self.out_dir).acquire()
                self.notes += sweep_debris(self.out_dir)
            except MultitokenError as e:
                error = e
        failed = all_reduce_(torch.tensor([float(error is not None)], device=self.device)).item()
        if error is not None:
            raise error
        if failed:
            raise ConfigError(f"rank 0 could not take {self.out_dir} (see its error)")

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _maybe_resume(self) -> None:
        """Continue from the newest checkpoint that loads whole; damaged newer ones are skipped, saying so."""
        candidates, skipped = resume_candidates(self.cfg.resume, self.out_dir), []
        for ckpt in candidates:
            try:
                weights, trainer_state = resumable(ckpt)
                break
            except CheckpointError as e:
                skipped.append(f"{ckpt.name}: {e}")
        else:
            if candidates:
                raise CheckpointError(f"no checkpoint can be resumed ({'; '.join(skipped)}): resume from another "
                                      "with --resume PATH, or start a new run with another --out_dir")
            self._truncate_metrics(0)  # a fresh start: records of an earlier attempt without a checkpoint are void
            return
        if skipped:
            self.notes.append(f"skipped damaged checkpoint(s) ({'; '.join(skipped)}); resuming from {ckpt}")
        saved = read_train_config(ckpt)
        if saved.model != self.cfg.model:
            diff = model_config_diff(saved.model, self.cfg.model)
            raise CheckpointError(f"cannot resume {ckpt}: the model config differs ({', '.join(diff)}); use the "
                                  "run's own config (its config.yaml) or a new --out_dir")
        load_full_state(self.model, self.optimizer, weights, trainer_state["optimizer"], ckpt, self.dist.enabled)
        torch.set_rng_state(trainer_state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in trainer_state:
            torch.cuda.set_rng_state(trainer_state["cuda_rng"], self.device)
        self.state = TrainState(**trainer_state["loop"])
        self.resumed_from = ckpt
        self._truncate_metrics(self.state.step)

    def _gather_state(self) -> tuple[dict, dict]:
        """Full weights and optimizer state by parameter name, gathered from every rank (on CPU, complete on rank 0)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(self.model, self.optimizer,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _truncate_metrics(self, step: int) -> None:
        if self.dist.is_main:
            path = self.out_dir / "metrics.jsonl"
            if torn := truncate_metrics(path, step):
                self.notes.append(f"dropped {torn} unreadable line(s) of {path} (a write cut off by a crash or a full "
                                  "disk)")

    # --- the loop ----------------------------------------------------------------------------------------------

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step (with gradient accumulation). Returns this rank's per-head losses (n_future,), on device.

        Each micro-step is one forward and one backward call of the wrapped objective (the head loop runs inside it),
        and only the last micro-step's backward reduces gradients across ranks.
        """
        cfg, d = self.cfg, self.dist
        lr = get_lr(step, cfg.max_steps, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        head_losses = torch.zeros(cfg.model.n_future + self.drafter_steps, device=self.device)
        for micro in range(cfg.grad_accum_steps):
            tokens = train_batch(self.data.train, cfg.batch_size, self.window, cfg.seed, step, micro,
                                 rank=d.rank, world_size=d.world_size, order=cfg.data.order,
                                 micro_steps=cfg.grad_accum_steps, stride=cfg.window_tokens)
            tokens = tokens.to(self.device, non_blocking=True)
            with gradient_sync(self.wrapped, micro == cfg.grad_accum_steps - 1), autocast_for(self.device,
                                                                                             cfg.precision):
                total, losses = self.wrapped(tokens, loss_scale=1.0 / cfg.grad_accum_steps)
                total.backward()
            head_losses += losses
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return head_losses / cfg.grad_accum_steps

    def validate(self) -> dict:
        """Validation over the fixed batches, split across ranks (padded so every rank runs as many forwards)."""
        rank, world = self.dist.rank, self.dist.world_size
        per_rank = math.ceil(len(self.val_batches) / world)
        mine = [rank + world * j for j in range(per_rank)]
        batches = [self.val_batches[i % len(self.val_batches)] for i in mine]
        counted = [i < len(self.val_batches) for i in mine]
        batch_fn = self.wrapped.evaluate if self.parallel == "fsdp" else None
        result = evaluate(self.model, batches, self.device, self.cfg.precision,
                          byte_level=self.tokenizer.kind == "bytes", batch_fn=batch_fn, counted=counted,
                          eot_id=self.objective.eot_id, drafter_steps=self.drafter_steps,
                          targets_from=self.cfg.draft_targets)
        self.state.last_val = result
        self._log({"step": self.state.step, "split": "val", **result})
        return result

    def save(self) -> Path | None:
        """Every rank takes part (the weights may be sharded); rank 0 writes the checkpoint."""
        weights, optim_state = self._gather_state()
        path = None
        if self.dist.is_main:
            trainer_state = {"optimizer": optim_state, "torch_rng": torch.get_rng_state(),
                             "loop": dataclasses.asdict(self.state)}
            if self.device.type == "cuda":
                trainer_state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
            meta = {"tokens_seen": self.state.tokens_seen, "last_val": self.state.last_val,
                    "world_size": self.dist.world_size, "parallel": self.parallel}
            path = save_checkpoint(self.out_dir, self.state.step, weights, self.cfg, self.tokenizer, trainer_state,
                                   meta, self.cfg.keep_last)
        if self.dist.enabled:
            torch.distributed.barrier()  # a resume, on any rank, must find the checkpoint complete
        return path

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            if not out_of_space(e, self.out_dir):
                raise
            raise TrainingError(f"no space left on device appending to {path} at step {record['step']}; "
                                f"{self._intact()}: free some space, then continue with --resume (the log is "
                                "repaired on resume)") from None

    def _intact(self) -> str:
        found = list_checkpoints(self.out_dir)
        return f"checkpoint {found[-1]} is intact" if found else "no checkpoint was saved yet"

    def _require_finite(self, loss_sum: torch.Tensor | None) -> None:
        """Stop a diverged run before it validates or saves: the losses since the last log and the weights (which the
        last optimizer step may have broken after its loss was computed) must all be finite. Every rank checks its
        own shard and all agree, so all stop together."""
        bad = 0.0 if loss_sum is None else float(not bool(torch.isfinite(loss_sum).all()))
        for p in self.model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p  # FSDP2 shards are DTensors
            if not bool(torch.isfinite(local).all()):
                bad = 1.0
                break
        if all_reduce_(torch.tensor([bad], device=self.device)).item():
            self._diverged(None if loss_sum is None else loss_sum.tolist())

    def _diverged(self, losses: list[float] | None) -> None:
        what = f"loss became {[round(x, 4) for x in losses]}" if losses is not None and not all(
            math.isfinite(x) for x in losses) else "weights became non-finite"
        raise TrainingError(f"training diverged at step {self.state.step}: {what}; nothing from this step was saved "
                            f"and {self._intact()}. Likely cause: the learning rate (optim.lr {self.cfg.optim.lr:g}) is "
                            "too high for this model: lower --optim.lr or lengthen --optim.warmup_steps, then continue "
                            "with --resume")

    def fit(self) -> dict:
        cfg, state, main = self.cfg, self.state, self.dist.is_main
        if main:
            atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.model.train()
        tokens_per_step = cfg.batch_size * cfg.grad_accum_steps * cfg.window_tokens * self.dist.world_size
        bar = tqdm(total=cfg.max_steps, initial=state.step, disable=not (cfg.progress and main), unit="step",
                   dynamic_ncols=True, desc="train")
        for note in self.notes if main else []:
            bar.write(note)
        if main and self.resumed_from is not None:
            bar.write(f"resumed from {self.resumed_from} at step {state.step}")
        elif main and self.init_note:
            bar.write(self.init_note)
        if main and self.draft_note and self.resumed_from is None:
            bar.write(self.draft_note)
        window_start, window_steps, loss_sum = time.perf_counter(), 0, None
        while state.step < cfg.max_steps:
            head_losses = self.train_step(state.step)
            state.step += 1
            state.tokens_seen += tokens_per_step
            loss_sum = head_losses if loss_sum is None else loss_sum + head_losses
            window_steps += 1
            bar.update(1)
            if state.step % cfg.log_interval == 0 or state.step == cfg.max_steps:
                losses = all_reduce_(loss_sum / window_steps, "avg").tolist()  # host sync only at log intervals
                elapsed = time.perf_counter() - window_start
                tok_s = window_steps * tokens_per_step / elapsed
                if not all(math.isfinite(x) for x in losses):
                    self._diverged(losses)
                lr = self.optimizer.param_groups[0]["lr"]
                self._log({"step": state.step, "split": "train", "loss": losses, "lr": lr, "tokens_per_s": tok_s,
                           "tokens_seen": state.tokens_seen})
                n = cfg.model.n_future
                heads = " ".join([f"h{i + 1}={x:.3f}" for i, x in enumerate(losses[:n])] +
                                 [f"d{i + 1}={x:.3f}" for i, x in enumerate(losses[n:])])
                bar.set_postfix_str(f"{heads} | {tok_s / 1e3:.1f}k tok/s")
                window_start, window_steps, loss_sum = time.perf_counter(), 0, None
            evaluating = state.step % cfg.eval_interval == 0 or state.step == cfg.max_steps
            saving = state.step % cfg.save_interval == 0 or state.step == cfg.max_steps
            if evaluating or saving:
                self._require_finite(None if loss_sum is None else loss_sum / window_steps)
            if evaluating:
                val = self.validate()
                if main:
                    bar.write(f"step {state.step} val loss per head: "
                              + " ".join(f"h{i + 1}={x:.3f}" for i, x in enumerate(val["loss"])))
            if saving:
                self.save()
        bar.close()
        if state.last_val is None:  # resumed a finished run: still report where it stands
            self.validate()
        return {"step": state.step, "tokens_seen": state.tokens_seen, "val": state.last_val,
                "checkpoint": str(list_checkpoints(self.out_dir)[-1]), "table": format_eval_table(state.last_val)}


def train(cfg: TrainConfig) -> dict | None:
    """Set up and run a training job; returns the final step, validation metrics and checkpoint path (on rank 0 of a
    distributed run; None on the other ranks)."""
    ok, trainer = False, None
    try:
        trainer = Trainer(cfg)
        result = trainer.fit()
        ok = True
        return result if trainer.dist.is_main else None
    finally:
        if trainer is not None:
            trainer.close()
        shutdown_distributed(barrier=ok)  # after a failure, peers may never reach a barrier
