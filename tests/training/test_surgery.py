"""Finetuning across n_future (--init_from) and training heads on a frozen trunk (--freeze trunk)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from multitoken.config import DataConfig, TrainConfig
from multitoken.errors import CheckpointError, ConfigError
from multitoken.checkpoint import list_checkpoints
from multitoken.decoding.tree import DraftTree
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_model_config, tiny_train_config


def _final(run):
    return load_file(list_checkpoints(run)[-1] / "model.safetensors")


@pytest.fixture
def base_run(corpus, tmp_path):
    """A trained 3-head model: 1 trunk layer + 3 head layers."""
    cfg = tiny_train_config(corpus, tmp_path / "base", model=tiny_model_config(vocab_size=256, n_future=3),
                            max_steps=3)
    train(cfg)
    return tmp_path / "base"


@pytest.mark.parametrize("n_future", [1, 3, 5])
def test_init_from_with_fewer_equal_and_more_heads(corpus, tmp_path, base_run, n_future):
    base = _final(base_run)
    cfg = tiny_train_config(corpus, tmp_path / "ft", init_from=str(base_run),
                            model=tiny_model_config(vocab_size=256, n_future=n_future, n_layer=max(4, n_future)))
    trainer = Trainer(cfg)
    c = trainer.model.config
    assert (c.n_future, c.n_layer, c.n_trunk_layers) == (n_future, 1 + n_future, 1)
    state = trainer.model.state_dict()
    for key in state:
        if key.startswith("extra_heads."):
            j = int(key.split(".")[1])
            # heads the checkpoint has are kept; new ones start as copies of its head 1 (layers.1 = trunk 1 + head 1)
            source = key if j < 2 else "layers.1." + key.split(".", 2)[2]
            assert torch.equal(state[key], base[source]), key
        else:
            assert torch.equal(state[key], base[key]), key
    result = trainer.fit()
    assert len(result["val"]["loss"]) == n_future


def test_init_from_a_missing_checkpoint_or_another_tokenizer_is_refused(corpus, tmp_path, base_run):
    cfg = tiny_train_config(corpus, tmp_path / "ft", init_from=str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(cfg)
    # A checkpoint trained with a BPE tokenizer, finetuned on byte-level data: refused, naming the fix.
    pytest.importorskip("tokenizers")
    from multitoken.data.bpe import train_bpe

    bpe = tmp_path / "bpe"
    bpe.mkdir()
    train_bpe(iter([p.read_text() for p in sorted(corpus.rglob("*.py"))]), vocab_size=300).save(bpe)
    bpe_run = tmp_path / "bpe_run"
    train(tiny_train_config(corpus, bpe_run, max_steps=2, data=DataConfig(path=[str(corpus)], tokenizer=str(bpe)),
                            model=tiny_model_config(vocab_size=300, n_future=2)))
    assert json.loads((list_checkpoints(bpe_run)[-1] / "tokenizer_config.json").read_text())["kind"] == "bpe"
    with pytest.raises(CheckpointError, match="tokenizer"):
        Trainer(tiny_train_config(corpus, tmp_path / "ft2", init_from=str(bpe_run),
                                  model=tiny_model_config(vocab_size=300, n_future=2)))


def test_frozen_trunk_parameters_do_not_change(corpus, tmp_path, base_run):
    base = _final(base_run)
    cfg = tiny_train_config(corpus, tmp_path / "frozen", init_from=str(base_run), freeze="trunk",
                            model=tiny_model_config(vocab_size=256, n_future=3), max_steps=4)
    train(cfg)
    after = _final(tmp_path / "frozen")
    frozen = [k for k in after if k.startswith(("tok_embeddings.", "layers.0."))]
    trained = [k for k in after if k not in frozen]
    assert frozen and all(torch.equal(after[k], base[k]) for k in frozen)
    assert all(not torch.equal(after[k], base[k]) for k in trained if k.endswith("wq.weight"))


def test_head_weight_rules():
    model = tiny_model_config(n_layer=5, n_future=4)
    assert TrainConfig(model=model, head_weights="decay:0.5").resolved_head_weights() == [1, 0.5, 0.25, 0.125]
    assert TrainConfig(model=model, head_weights="deepseek:0.3").resolved_head_weights() == pytest.approx(
        [1, 0.1, 0.1, 0.1])
    assert TrainConfig(model=model).resolved_head_weights() == [1.0] * 4
    with pytest.raises(ConfigError, match="decay:0.8"):
        TrainConfig(model=model, head_weights="exp:2")
    with pytest.raises(ConfigError, match="one weight per head"):
        TrainConfig(model=model, head_weights=[1.0, 0.5])


@pytest.mark.parametrize("tied", [False, True])
def test_frozen_base_keeps_what_the_model_says(corpus, tmp_path, tied):
    """--freeze base on a next-token model: only the new heads learn, so every source tensor, head 1's logits and
    plain greedy output are bit-identical to the source's, and speculative decoding gives exactly that output."""
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.checkpoint import load_checkpoint

    source = tmp_path / "source"
    train(tiny_train_config(corpus, source, max_steps=3,
                            model=tiny_model_config(vocab_size=256, n_future=1, tie_embeddings=tied)))
    cfg = tiny_train_config(corpus, tmp_path / "heads", init_from=str(source), freeze="base",
                            model=tiny_model_config(vocab_size=256, n_future=3, tie_embeddings=tied), max_steps=4)
    train(cfg)
    before, after = _final(source), _final(tmp_path / "heads")
    kept = [k for k in after if not k.startswith("extra_heads.")]
    assert kept and all(torch.equal(after[k], before[k]) for k in kept if k in before)
    assert all(not torch.equal(after[k], after["layers.3." + k.split(".", 2)[2]])
               for k in after if k.startswith("extra_heads.") and k.endswith("wq.weight"))  # the heads did learn
    old, new = load_checkpoint(source)[0], load_checkpoint(tmp_path / "heads")[0]
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(old(idx), new(idx))
    prompt = idx[:1, :8]
    expected = generate(old, prompt, 20, temperature=0.0)
    assert torch.equal(generate(new, prompt, 20, temperature=0.0), expected)
    assert torch.equal(speculative_generate(new, prompt, 20, temperature=0.0)[0], expected)


def test_frozen_base_needs_extra_heads(corpus, tmp_path, base_run):
    with pytest.raises(ConfigError, match="n_future 2"):
        Trainer(tiny_train_config(corpus, tmp_path / "x", freeze="base", init_from=str(base_run),
                                  model=tiny_model_config(n_future=1, vocab_size=256)))


def test_heads_that_read_the_next_token_start_as_the_checkpoints_heads_and_learn_alone(corpus, tmp_path, base_run):
    """--model.heads_read_next_token on a checkpoint of parallel heads: the projections start at zero, so every
    head's logits are the checkpoint's; with --freeze base the heads and their projections alone learn, and the
    model still says exactly what the checkpoint says."""
    from multitoken.checkpoint import load_checkpoint
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import speculative_generate

    cfg = tiny_train_config(corpus, tmp_path / "next", init_from=str(base_run), freeze="base", max_steps=4,
                            model=tiny_model_config(vocab_size=256, n_future=3, heads_read_next_token=True))
    trainer = Trainer(cfg)
    old = load_checkpoint(base_run)[0]
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(trainer.model(idx, return_all_heads=True), old(idx, return_all_heads=True))
    assert all(p.requires_grad for p in trainer.model.next_token_proj.parameters())
    trainer.fit()
    trainer.close()
    before, after = _final(base_run), _final(tmp_path / "next")
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("extra_heads."))
    assert all(after[f"next_token_proj.{j}.weight"].abs().sum() > 0 for j in range(2))  # the projections learned
    new = load_checkpoint(tmp_path / "next")[0]
    assert new.config.heads_read_next_token
    prompt = idx[:1, :8]
    expected = generate(old, prompt, 20)
    assert torch.equal(speculative_generate(new, prompt, 20)[0], expected)
    assert torch.equal(speculative_generate(new, prompt, 20, tree=DraftTree(((0,), (1,), (0, 0))))[0], expected)
