"""Chunked linear + cross-entropy equals the plain one on loss and every gradient, and holds less memory."""

import weakref

import pytest
import torch
import torch.nn.functional as F

from multitoken import MTPModel, mtp_forward_backward
from multitoken.training.chunked_ce import (IGNORE_INDEX, chunked_linear_cross_entropy, chunked_loss_sum_and_correct,
                                            default_chunk_rows)
from tests.conftest import tiny_model_config


def _both(N=50, V=300, d=16, seed=0, dtype=torch.float32, ignore=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=dtype, requires_grad=True)
    w = (torch.randn(V, d, generator=g) * 0.3).to(dtype).requires_grad_(True)
    t = torch.randint(0, V, (N,), generator=g)
    if ignore:
        t[::7] = IGNORE_INDEX
    return h, w, t


def _plain(h, w, t):
    return F.cross_entropy((h @ w.t()).float(), t, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 16, 50, 64])
@pytest.mark.parametrize("ignore", [False, True])
def test_equals_plain_cross_entropy_fp32(chunk_rows, ignore):
    h, w, t = _both(ignore=ignore)
    loss = chunked_linear_cross_entropy(h, w, t, chunk_rows)
    gh, gw = torch.autograd.grad(loss * 3.0, (h, w))  # a non-unit upstream gradient must scale both
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = _plain(h2, w2, t)
    rh, rw = torch.autograd.grad(ref * 3.0, (h2, w2))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, rh, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-7)


def test_equals_plain_cross_entropy_bf16():
    h, w, t = _both(N=64, V=500, d=32, dtype=torch.bfloat16)
    loss = chunked_linear_cross_entropy(h, w, t, 16)
    gh, gw = torch.autograd.grad(loss, (h, w))
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    h32, w32 = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = _plain(h32, w32, t)
    rh, rw = torch.autograd.grad(ref, (h32, w32))
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gh.float(), rh, rtol=5e-2, atol=2e-3)
    torch.testing.assert_close(gw.float(), rw, rtol=5e-2, atol=2e-3)


def test_no_gradients_computed_without_autograd():
    h, w, t = _both()
    with torch.no_grad():
        loss = chunked_linear_cross_entropy(h, w, t)
    torch.testing.assert_close(loss, _plain(h, w, t).detach())
    loss_sum, correct, count = chunked_loss_sum_and_correct(h.detach(), w.detach(), t, 8)
    logits = h.detach() @ w.detach().t()
    torch.testing.assert_close(loss_sum, F.cross_entropy(logits, t, reduction="sum"))
    assert correct == (logits.argmax(-1) == t).sum() and count == len(t)
    ignored = t.clone()
    ignored[::3] = IGNORE_INDEX  # ignored targets are not scored
    loss_sum, correct, count = chunked_loss_sum_and_correct(h.detach(), w.detach(), ignored, 8)
    torch.testing.assert_close(loss_sum, F.cross_entropy(logits, ignored, reduction="sum"))
    assert correct == (logits.argmax(-1) == ignored).sum() and count == int((ignored != IGNORE_INDEX).sum())


def test_default_chunk_keeps_logits_near_hidden_size():
    assert default_chunk_rows(65536, 32000, 1024) == 2048  # 32 chunks: 2048 x 32000 ~ 65536 x 1024
    assert default_chunk_rows(10, 256, 128) == 256  # the floor: small inputs go in one chunk
    assert default_chunk_rows(512, 128000, 256) == 256


def _saved_peak(fn) -> int:
    live = peak = 0

    def release(nbytes):
        nonlocal live
        live -= nbytes

    def pack(t):
        nonlocal live, peak
        live += t.numel() * t.element_size()
        peak = max(peak, live)
        weakref.finalize(t, release, t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return peak


def test_chunked_sequential_holds_less_than_one_logits_tensor_of_plain():
    """Saved activations: chunked + sequential stays below plain + sequential by more than one head's logits."""
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=8192, n_future=4)
    tokens = torch.randint(0, 8192, (4, 36))
    peaks = {ce: _saved_peak(lambda ce=ce: mtp_forward_backward(MTPModel(cfg), tokens, "sequential", ce=ce))
             for ce in ("plain", "chunked")}
    logits_bytes = 4 * 32 * 8192 * 4
    assert peaks["plain"] - peaks["chunked"] >= logits_bytes, peaks


def test_weight_gradient_into_a_shared_accumulator():
    """Two losses adding scaled unembedding gradients into one fp32 buffer equal autograd's sum over both."""
    h1, w, t1 = _both(seed=1)
    h2, _, t2 = _both(seed=2)
    acc = torch.zeros(w.shape)
    loss1 = chunked_linear_cross_entropy(h1, w.detach(), t1, 16, weight_grad_into=acc, weight_grad_scale=0.5)
    loss2 = chunked_linear_cross_entropy(h2, w.detach(), t2, 16, weight_grad_into=acc, weight_grad_scale=2.0)
    (0.5 * loss1).backward()
    (2.0 * loss2).backward()
    w_ref = w.detach().clone().requires_grad_()
    h1r, h2r = h1.detach().clone().requires_grad_(), h2.detach().clone().requires_grad_()
    (0.5 * _plain(h1r, w_ref, t1) + 2.0 * _plain(h2r, w_ref, t2)).backward()
    torch.testing.assert_close(acc, w_ref.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h1.grad, h1r.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h2.grad, h2r.grad, rtol=1e-5, atol=1e-7)
