"""Shared fixtures: tiny random models, a small text corpus on disk, and an isolated token cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from multitoken import DataConfig, ModelConfig, OptimConfig, TrainConfig

torch.set_num_threads(2)


def tiny_model_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=64, d_model=32, n_layer=4, n_head=4, n_future=2, max_seq_len=32)
    values.update(overrides)
    return ModelConfig(**values)


def sharp_model(seed: int, n_future: int, vocab: int = 16):
    """A tiny random MTP model (n_future heads on a one-layer trunk) with confident predictions: greedy choices are
    not near-ties that float noise could flip, so decoders can be compared token for token."""
    from multitoken import MTPModel

    torch.manual_seed(seed)
    model = MTPModel(tiny_model_config(vocab_size=vocab, n_future=n_future, n_layer=n_future + 1,
                                       max_seq_len=48)).eval()
    with torch.no_grad():
        model.output.weight.mul_(10)
    return model


def counting_model(n_future: int, wrong_heads: frozenset[int] = frozenset(), vocab: int = 32,
                   max_seq_len: int = 128, read_next: bool = False):
    """A real MTP model, its weights set by hand, on the sequence x_{t+1} = x_t + 1 (mod V): head 1 predicts
    x_t + 1 and head h (1-based) x_t + h, always right, except the heads in wrong_heads, which say x_t + h + 1 and so
    are always wrong. Acceptance counts can be predicted exactly.

    How: the embedding and the unembedding are the identity, attention and the trunk add nothing (every residual
    branch's output projection is zero), so z is the token's one-hot vector; each head's SwiGLU maps that one-hot
    vector to a much larger one at its guess, which the identity unembedding turns into a confident logit.

    read_next: the extra heads read the next token (`heads_read_next_token`), ten times louder than z, and add h - 1
    to it rather than h to x_t: they are right only when they are given x_{t+1}."""
    from multitoken import MTPModel

    model = MTPModel(tiny_model_config(vocab_size=vocab, d_model=vocab, n_head=4, n_future=n_future,
                                       n_layer=n_future + 1, ffn_hidden=vocab, max_seq_len=max_seq_len,
                                       heads_read_next_token=read_next)).eval()
    eye = torch.eye(vocab)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if p.dim() == 1 else torch.zeros_like(p))  # norm gains 1, matrices 0
        model.tok_embeddings.weight.copy_(eye)
        model.output.weight.copy_(eye)
        for proj in getattr(model, "next_token_proj", []):
            proj.weight.copy_(10 * eye)
        for i in range(n_future):
            head = i + 1
            shift = head - (1 if read_next and head > 1 else 0) + (1 if head in wrong_heads else 0)
            ffn = model.head_block(i).feed_forward
            ffn.w1.weight.copy_(10 * eye)
            ffn.w3.weight.copy_(eye)
            ffn.w2.weight.copy_(eye.roll(shift, dims=0))  # hidden unit j -> output j + shift
    return model


@pytest.fixture
def quick_compile(monkeypatch):
    """Compiled decoding steps without the CPU's kernel autotuning, which costs most of a compilation's time and picks
    among kernels rather than changing what a step captures: for tests whose point is what compiled decoding
    computes (every compiled test: the autotuning's own kernels are torch's to test, and it would double the suite's
    time on 2 cores)."""
    from multitoken.decoding import static

    options = static.compile_options
    monkeypatch.setattr(static, "compile_options",
                        lambda device: {k: v for k, v in options(device).items() if "autotune" not in k})


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a per-test temporary folder, never to ~/.cache."""
    monkeypatch.setenv("MULTITOKEN_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder of small Python-like text files, plus a binary file that must be skipped."""
    root = tmp_path / "corpus"
    rng = random.Random(0)
    words = ["def", "return", "self", "x", "y", "for", "in", "range", "if", "else", "print", "(", ")", ":", "=", "+"]
    for i in range(12):
        path = root / f"pkg{i % 3}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(60)]
        path.write_text("\n".join(lines) + "\n")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return root


def tiny_train_config(corpus: Path, out_dir: Path, **overrides) -> TrainConfig:
    values = dict(model=tiny_model_config(vocab_size=256, n_future=2), data=DataConfig(path=[str(corpus)]),
                  optim=OptimConfig(lr=3e-3, warmup_steps=2), out_dir=str(out_dir), max_steps=6, batch_size=4,
                  eval_interval=3, eval_batches=2, log_interval=2, save_interval=3, keep_last=5, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def counting_drafter_model(noise: float = 0.2, steps: int = 80, n_future: int = 1, draft_vocab: int = 0):
    """A tiny model with an EAGLE-3 drafter, trained for a few seconds on counting by 1 or 2 (mod V) with a share of
    random tokens: head 1 and the drafter both learn the rule, so drafts are often but not always accepted, and
    every branch of verification (kept, rejected, partly kept paths) runs. Trained once per process."""
    key = (noise, steps, n_future, draft_vocab)
    if key not in _TRAINED:
        from multitoken import MTPModel
        from multitoken.training.loss import mtp_loss

        torch.manual_seed(0)
        vocab = 24
        model = MTPModel(tiny_model_config(vocab_size=vocab, d_model=32, n_layer=3 + n_future, n_head=4, n_kv_head=2,
                                           n_future=n_future, drafter="eagle3", max_seq_len=96,
                                           draft_vocab=draft_vocab))
        if draft_vocab:
            with torch.no_grad():
                model.draft_ids.copy_(torch.arange(0, vocab, vocab // draft_vocab)[:draft_vocab])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            start, step = torch.randint(0, vocab, (16, 1), generator=g), torch.randint(1, 3, (16, 1), generator=g)
            counting = (start + step * torch.arange(41)) % vocab
            random = torch.randint(0, vocab, counting.shape, generator=g)
            tokens = torch.where(torch.rand(counting.shape, generator=g) < noise, random, counting)
            total, _ = mtp_loss(model, tokens, drafter_steps=3)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        _TRAINED[key] = model.eval()
    return _TRAINED[key]


_TRAINED: dict = {}
