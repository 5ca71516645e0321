"""The paper's sequential head loop (Fig. 2) gives the same losses and gradients as the naive all-heads backward."""

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F

from multitoken import MTPModel, mtp_forward_backward
from multitoken.training.chunked_ce import IGNORE_INDEX
from multitoken.training.loss import mtp_eval_batch, split_window
from tests.conftest import tiny_model_config


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _assert_grads_equal(a, b, rel=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        err = (a[name] - b[name]).norm() / b[name].norm().clamp_min(1e-12)
        assert err <= rel, f"{name}: relative error {err:.2e}"


def _naive_and_sequential(model_cfg, tokens, naive_kwargs=None, sequential_kwargs=None):
    """Twin models from one init: naive strategy on one, sequential on the other. Returns both losses and grads."""
    naive = MTPModel(model_cfg)
    sequential = copy.deepcopy(naive)
    loss_naive = mtp_forward_backward(naive, tokens, "naive", **(naive_kwargs or {}))
    loss_seq = mtp_forward_backward(sequential, tokens, "sequential", **(sequential_kwargs or {}))
    return loss_naive, loss_seq, _grads(naive), _grads(sequential)


@pytest.mark.parametrize("n_future", [1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ce", ["plain", "chunked"])
def test_sequential_equals_naive_gradients(n_future, seed, ce):
    """The paper's loop (with either cross-entropy) against the naive all-heads backward with plain cross-entropy."""
    torch.manual_seed(seed)
    tokens = torch.randint(0, 64, (3, 16 + n_future))
    loss_naive, loss_seq, grads_naive, grads_seq = _naive_and_sequential(
        tiny_model_config(n_layer=5, n_future=n_future), tokens, {"ce": "plain"}, {"ce": ce})
    torch.testing.assert_close(loss_seq, loss_naive, rtol=1e-6, atol=0)
    _assert_grads_equal(grads_seq, grads_naive)


@pytest.mark.parametrize("ce", ["plain", "chunked"])
def test_tied_embeddings_sequential_equals_naive(ce):
    """One matrix as input embedding and unembedding: its gradient gathers the heads' (from the loop) and the
    trunk's (from the final backward), as the naive backward gathers them."""
    torch.manual_seed(0)
    tokens = torch.randint(0, 64, (3, 19))
    _, _, grads_naive, grads_seq = _naive_and_sequential(tiny_model_config(n_future=3, tie_embeddings=True), tokens,
                                                         {"ce": "plain"}, {"ce": ce})
    assert "output.weight" not in grads_seq  # one parameter, listed once
    _assert_grads_equal(grads_seq, grads_naive)


def test_head_weights_and_loss_scale_equal_naive():
    torch.manual_seed(0)
    tokens = torch.randint(0, 64, (2, 15))
    scaled = {"head_weights": [1.0, 0.8, 0.64], "loss_scale": 0.5}
    _, _, grads_naive, grads_seq = _naive_and_sequential(tiny_model_config(n_future=3), tokens, scaled, scaled)
    _assert_grads_equal(grads_seq, grads_naive)


def test_gradients_are_the_sum_of_per_head_cross_entropies():
    """Against an independent reference: autograd of sum_i CE(logits_i, x[t+i]) from the all-heads forward."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3))
    reference = copy.deepcopy(model)
    tokens = torch.randint(0, 64, (2, 13))
    losses = mtp_forward_backward(model, tokens)
    T = 10
    logits = reference(tokens[:, :T], return_all_heads=True)  # (B, T, n, V)
    ref_losses = [F.cross_entropy(logits[:, :, i].flatten(0, 1), tokens[:, i + 1:i + 1 + T].flatten())
                  for i in range(3)]
    sum(ref_losses).backward()
    torch.testing.assert_close(losses, torch.stack(ref_losses).detach())
    _assert_grads_equal(_grads(model), _grads(reference))


@pytest.mark.parametrize("tied", [False, True])
def test_heads_that_read_the_next_token_learn_from_the_texts_next_token(tied):
    """The head loop and the naive backward against an independent reference: the all-heads forward given the
    text's next token after each position by hand. The projections learn; the embedding gets no gradient through
    them (it belongs to the base model)."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3, heads_read_next_token=True, tie_embeddings=tied))
    with torch.no_grad():
        for proj in model.next_token_proj:
            proj.weight.normal_(std=0.1)
    naive, reference = copy.deepcopy(model), copy.deepcopy(model)
    tokens = torch.randint(0, 64, (2, 13))
    losses = mtp_forward_backward(model, tokens)
    mtp_forward_backward(naive, tokens, "naive", ce="plain")
    T = 10
    logits = reference(tokens[:, :T], return_all_heads=True, next_tokens=tokens[:, 1:T + 1])
    ref_losses = [F.cross_entropy(logits[:, :, i].flatten(0, 1), tokens[:, i + 1:i + 1 + T].flatten())
                  for i in range(3)]
    sum(ref_losses).backward()
    torch.testing.assert_close(losses, torch.stack(ref_losses).detach())
    _assert_grads_equal(_grads(model), _grads(reference))
    _assert_grads_equal(_grads(naive), _grads(reference))
    assert all(p.grad.abs().sum() > 0 for p in model.next_token_proj.parameters())


def test_windows_are_views_not_copies():
    tokens = torch.arange(2 * 14).view(2, 14)
    inputs, targets = split_window(tokens, 4)
    assert inputs.shape == (2, 10) and all(t.shape == (2, 10) for t in targets)
    assert all(t.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr() for t in [inputs, *targets])
    assert targets[0][0, 0] == 1 and targets[3][0, 0] == 4  # head i's target at position 0 is token i


def test_sequential_keeps_fewer_logits_alive():
    """With a large vocabulary the sequential loop's peak saved activations are clearly below the naive one's."""
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=4096, n_future=4, n_layer=4)
    tokens = torch.randint(0, 4096, (4, 36))
    peaks = {}
    for strategy in ("naive", "sequential"):
        model = MTPModel(cfg)
        live, peak = 0, 0

        def release(nbytes):
            nonlocal live
            live -= nbytes

        def pack(t):
            # Count a tensor saved for backward while autograd holds it; the finalizer fires when it is freed.
            nonlocal live, peak
            nbytes = t.numel() * t.element_size()
            live += nbytes
            peak = max(peak, live)
            weakref.finalize(t, release, nbytes)
            return t

        def unpack(t):
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            mtp_forward_backward(model, tokens, strategy, ce="plain")
        peaks[strategy] = peak
    logits_bytes = 4 * 32 * 4096 * 4
    assert peaks["naive"] - peaks["sequential"] >= (4 - 1) * logits_bytes, peaks  # at least n - 1 logits tensors


def test_accumulated_micro_batches_equal_the_full_batch():
    """Gradient accumulation: two half batches with loss_scale 1/2 give the gradient of the whole batch."""
    torch.manual_seed(0)
    whole = MTPModel(tiny_model_config(n_future=2))
    accumulated = copy.deepcopy(whole)
    tokens = torch.randint(0, 64, (4, 14))
    mtp_forward_backward(whole, tokens)
    for half in tokens.split(2):
        mtp_forward_backward(accumulated, half, loss_scale=0.5)
    _assert_grads_equal(_grads(accumulated), _grads(whole))


@pytest.mark.parametrize("masked", [False, True])
def test_eval_batch_matches_training_losses(masked):
    """Validation scores the training objective: with document masking on, only the targets training keeps."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3))
    tokens = torch.randint(1, 64, (3, 14))
    tokens[0, 4] = tokens[1, 9] = tokens[2, 2] = 0  # document ends, id 0
    eot_id = 0 if masked else None
    loss_sums, correct, counts, _ = mtp_eval_batch(model, tokens, eot_id)
    train_losses = mtp_forward_backward(model, tokens, eot_id=eot_id)
    torch.testing.assert_close(loss_sums / counts, train_losses)
    kept = [int((y != IGNORE_INDEX).sum()) for y in split_window(tokens, 3, eot_id)[1]]
    assert counts.tolist() == kept and (kept[2] < 3 * 11 if masked else kept == [33] * 3)
    assert (correct <= counts).all()
    if masked:  # a negative control: scoring every target gives another number
        assert not torch.allclose(mtp_eval_batch(model, tokens)[0] / (3 * 11), train_losses)


def test_unknown_strategy_and_wrong_weights_are_refused():
    model = MTPModel(tiny_model_config(n_future=2))
    tokens = torch.randint(0, 64, (1, 10))
    with pytest.raises(ValueError, match="unknown loss strategy"):
        mtp_forward_backward(model, tokens, strategy="fast")
    with pytest.raises(ValueError, match="head weights"):
        mtp_forward_backward(model, tokens, head_weights=[1.0])


@pytest.mark.parametrize("n_future", [1, 2, 4])
def test_document_boundary_masking_for_every_head_offset(n_future):
    """Head i's target at t is ignored exactly when an end token lies among tokens[t .. t+i-1], checked against a
    direct loop over positions; the end token itself stays a target."""
    eot = 0
    torch.manual_seed(n_future)
    tokens = torch.randint(1, 6, (3, 20 + n_future))
    tokens[0, [3, 4, 11]] = eot
    tokens[1, [0, 19 + n_future]] = eot
    inputs, targets = split_window(tokens, n_future, eot_id=eot)
    T = inputs.shape[1]
    for i, y in enumerate(targets, start=1):
        for b in range(tokens.shape[0]):
            for t in range(T):
                crosses = bool((tokens[b, t:t + i] == eot).any())
                assert y[b, t].item() == (-100 if crosses else tokens[b, t + i].item()), (i, b, t)
    assert (targets[0][0, 2] == eot).item()  # predicting the end of a document is still learned
    unmasked = split_window(tokens, n_future)[1]
    assert all(torch.equal(a, b) for a, b in zip(unmasked, [tokens[:, i:i + T] for i in range(1, n_future + 1)]))


def test_masked_loss_is_the_mean_over_kept_targets_and_paths_agree():
    torch.manual_seed(0)
    cfg = tiny_model_config(n_future=3)
    tokens = torch.randint(1, 64, (2, 19))
    tokens[:, 7] = 0
    kwargs = {"eot_id": 0, "ce": "plain"}
    torch.manual_seed(1)
    loss_naive, loss_seq, grads_naive, grads_seq = _naive_and_sequential(cfg, tokens, kwargs, {"eot_id": 0})
    torch.testing.assert_close(loss_seq, loss_naive, rtol=1e-6, atol=0)
    _assert_grads_equal(grads_seq, grads_naive)
    torch.manual_seed(1)
    model = MTPModel(cfg)  # the twins' initialisation
    inputs, targets = split_window(tokens, 3, eot_id=0)
    with torch.no_grad():
        logits = model(inputs, return_all_heads=True)  # (B, T, n, V)
    for i, y in enumerate(targets):
        keep = y != -100
        expected = F.cross_entropy(logits[:, :, i][keep], y[keep])
        torch.testing.assert_close(loss_naive[i], expected, rtol=1e-5, atol=1e-6)
