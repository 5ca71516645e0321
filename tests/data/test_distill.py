"""`multitoken distill`: the dataset holds each prompt followed by exactly what greedy decoding answers (up to and
including end-of-sequence), a killed run resumes to the same files, `train` reads the result, and bad input gets one
line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from multitoken.interop.convert import convert
from multitoken.checkpoint import load_checkpoint
from tests.cli.conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

QUESTIONS = ["add two", "def add", "class Point", "return x", "pass", "add x and y", "def f", "point"]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE tokenizer and a ChatML template, converted from GGUF."""
    from tests.interop.test_gguf import byte_level_bpe, make_gguf

    folder = tmp_path_factory.mktemp("chat_model")
    convert(make_gguf(folder, byte_level_bpe(320)), folder / "mt")
    return folder / "mt"


def write_prompts(path, questions=QUESTIONS):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in questions))
    return path


def distill_args(ckpt, prompts, out, *extra):
    return ["distill", "--ckpt", ckpt, "--prompts", prompts, "--out", out, "--max-new-tokens", 12, "--batch-size", 3,
            "--compile", "false", "--val-fraction", 0.3, "--progress", "false", *extra]


def split_tokens(out, split: str) -> list[int]:
    manifest = json.loads((out / "manifest.json").read_text())
    return np.fromfile(out / split / "shard_000000.bin", dtype=manifest["dtype"]).tolist()


def test_documents_are_prompts_and_greedy_answers(chat_model, tmp_path, capsys):
    from multitoken.data.chat import encode_chat
    from multitoken.data.corpus import is_validation
    from multitoken.data.prompts import read_prompts
    from multitoken.decoding.generate import generate

    code, _, err = run_cli(capsys, *distill_args(chat_model, write_prompts(tmp_path / "p.jsonl"), tmp_path / "out"))
    assert code == 0 and "distilled 8 prompts (chat template)" in err
    model, _, tok = load_checkpoint(chat_model)
    keys = [p.key for p in read_prompts(tmp_path / "p.jsonl")]
    prompts = [encode_chat(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    docs = []
    for ids in prompts:
        new = generate(model, torch.tensor([ids]), 12, temperature=0.0)[0].tolist()
        answer = new[:new.index(tok.eot_id) + 1] if tok.eot_id in new else new + [tok.eot_id]
        docs.append(ids + answer)
    order = sorted(range(len(docs)), key=lambda i: (len(prompts[i]), i))  # the batches' order: by prompt length
    for split in ("train", "val"):
        expected = [t for i in order if is_validation(keys[i], 0.3) == (split == "val") for t in docs[i]]
        assert split_tokens(tmp_path / "out", split) == expected
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["documents"] >= 1 and manifest["distilled"]["prompts"] == 8
    # the same command again: up to date, nothing decoded
    code, out, _ = run_cli(capsys, *distill_args(chat_model, tmp_path / "p.jsonl", tmp_path / "out"))
    assert code == 0 and "up to date" in out


def test_a_killed_distillation_resumes_to_the_same_dataset(chat_model, tmp_path, capsys):
    """A kill after some batches (their parts on disk, no manifest yet) continues with the rest; sampled answers
    too, since each batch has its own seed."""
    from multitoken.data.distill import DistillOptions, distill
    from multitoken.data.prompts import encode_prompt, read_prompts

    model, _, tok = load_checkpoint(chat_model)
    records = read_prompts(write_prompts(tmp_path / "p.jsonl"))
    prompts, keys = [encode_prompt(tok, p, True) for p in records], [p.key for p in records]
    options = DistillOptions(max_new_tokens=10, batch_size=3, temperature=1.0, seed=4, compile=False)
    whole = distill(model, tok, prompts, keys, tmp_path / "whole", "m", options, progress=False)
    assert whole.batches == 3 and whole.batches_reused == 0
    killed = tmp_path / "killed"
    distill(model, tok, prompts, keys, killed, "m", options, progress=False)
    (killed / "manifest.json").unlink()  # as if killed while decoding the last batch
    (killed / ".distill" / "batch_000002.npz").write_bytes(b"cut short")
    resumed = distill(model, tok, prompts, keys, killed, "m", options, progress=False)
    assert resumed.batches_reused == 2
    for split in ("train", "val"):
        assert (killed / split / "shard_000000.bin").read_bytes() == (tmp_path / "whole" / split /
                                                                      "shard_000000.bin").read_bytes()
    # another model, other prompts or other settings never resume into this folder
    from multitoken.errors import DataError

    with pytest.raises(DataError, match="another model, prompts or settings"):
        distill(model, tok, prompts, keys, killed, "m", DistillOptions(max_new_tokens=9, compile=False))


@pytest.fixture(scope="module")
def heads_model(chat_model, tmp_path_factory):
    """Heads trained (--freeze base) on the chat model's own answers: `train` reads a distilled dataset."""
    from multitoken.cli.main import main

    folder = tmp_path_factory.mktemp("heads")
    assert main([str(a) for a in distill_args(chat_model, write_prompts(folder / "p.jsonl"), folder / "out")]) == 0
    assert main(["train", "--init-from", str(chat_model), "--model.n_future", "3", "--freeze", "base", "--data",
                 str(folder / "out"), "--seq_len", "16", "--max_steps", "2", "--batch_size", "2", "--eval_interval",
                 "2", "--eval_batches", "1", "--out_dir", str(folder / "heads"), "--progress", "false"]) == 0
    return folder / "heads"


def test_train_reads_a_distilled_dataset(heads_model):
    assert load_checkpoint(heads_model)[0].n_future == 3


def test_chat_with_heads_answers_as_plain_decoding_through_a_chain_or_a_tree(heads_model, capsys, monkeypatch):
    """`multitoken chat` on a model with heads, driven through stdin: through the chain and through a draft tree
    (--tree), each answer of the conversation is plain greedy decoding's, and tau is reported; a tree deeper than the
    heads gets one line."""
    import io

    conversation = "add two\nclass Point\n"
    answers, cases = {}, {"plain": ["--speculative", "false"], "chain": [], "tree": ["--tree", "(0,), (1,), (0, 0)"],
                          "lookup": ["--tree", "(0,), lookup 3"]}
    for case, extra in cases.items():
        monkeypatch.setattr("sys.stdin", io.StringIO(conversation))
        code, answers[case], err = run_cli(capsys, "chat", "--ckpt", heads_model, "--max-new-tokens", 12, *extra)
        assert code == 0 and err.count("tokens/s") == 2 and ("tau" in err) == (case != "plain")
    assert answers["chain"] == answers["tree"] == answers["lookup"] == answers["plain"]
    assert answers["plain"].count("\n") == 2
    code, out, err = run_cli(capsys, "generate", "--ckpt", heads_model, "--chat", "--prompt", "add two",
                             "--temperature", 0, "--speculative", *cases["tree"], "--max-new-tokens", 12)
    assert code == 0 and out == answers["plain"].split("\n")[0] + "\n" and "tree of 4 nodes, depth 2:" in err
    code, _, err = run_cli(capsys, "generate", "--ckpt", heads_model, "--prompt", "add", "--temperature", 0.7,
                           "--speculative", "--tree", "(0,), (1,)", "--max-new-tokens", 12)
    assert code == 0 and "speculative, draft length 1:" in err  # sampling verifies the tree's depth as a chain
    monkeypatch.setattr("sys.stdin", io.StringIO(conversation))
    code, _, err = run_cli(capsys, "chat", "--ckpt", heads_model, "--tree", "(0,), (0, 0), (0, 0, 0)")
    assert_one_line_error(code, err, "3 drafts deep but the model has 2 extra heads")


def test_lookup_drafts_speed_up_a_model_without_heads(chat_model, capsys, monkeypatch):
    """--tree "lookup N" needs no heads: generate and chat on a next-token-only model answer as plain greedy
    decoding and report tau; sampling with copied drafts alone gets one line."""
    import io

    plain = run_cli(capsys, "generate", "--ckpt", chat_model, "--chat", "--prompt", "add two", "--temperature", 0,
                    "--max-new-tokens", 12)[1]
    code, out, err = run_cli(capsys, "generate", "--ckpt", chat_model, "--chat", "--prompt", "add two",
                             "--temperature", 0, "--speculative", "--tree", "lookup 3", "--max-new-tokens", 12)
    assert code == 0 and out == plain and "lookup of 3 tokens:" in err and "tau" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("add two\n"))
    code, out, err = run_cli(capsys, "chat", "--ckpt", chat_model, "--temperature", 0, "--tree", "lookup 3",
                             "--max-new-tokens", 12)
    assert code == 0 and out == plain and "tau" in err
    code, _, err = run_cli(capsys, "generate", "--ckpt", chat_model, "--prompt", "add", "--temperature", 0.7,
                           "--speculative", "--tree", "lookup 3")
    assert_one_line_error(code, err, "verified greedily")
    code, _, err = run_cli(capsys, "generate", "--ckpt", chat_model, "--prompt", "add", "--speculative",
                           "--tree", "(0,), lookup three")
    assert_one_line_error(code, err, "'lookup' takes a number of tokens")


@pytest.mark.slow
def test_bench_decode_chat_prompts_stop_at_eos(heads_model, tmp_path, capsys):
    """bench decode --prompts FILE.jsonl --chat: conversations through the template, rows ending at EOS (tokens/s
    counts what was produced), speculative output identical; bad prompt files get one line."""
    path = tmp_path / "bench.json"
    args = ["bench", "decode", "--ckpt", heads_model, "--prompts", write_prompts(tmp_path / "p.jsonl"), "--chat",
            "--max-new-tokens", 12, "--repeats", 1, "--batch-size", "1,3", "--json", path]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "(chat template)" in out and "identical outputs  yes" in out
    results = json.loads(path.read_text())
    assert all(r["stop_at_eos"] and r["identical"] for r in results)
    code, out, _ = run_cli(capsys, *args[:-2], "--ignore-eos", "--batch-size", "1")
    assert code == 0 and "12 new tokens each" in out
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", heads_model, "--prompts", tmp_path / "empty.jsonl",
                           "--chat")
    assert_one_line_error(code, err, "holds no prompts")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", heads_model, "--prompts", tmp_path / "p.jsonl")
    assert_one_line_error(code, err, "add --chat")
    code, _, err = run_cli(capsys, "bench", "decode", "--ckpt", heads_model, "--chat")
    assert_one_line_error(code, err, "--chat formats the prompts of a --prompts file")


def test_plain_prompts_and_a_corpus_cut_into_prompts(chat_model, tmp_path, capsys):
    (tmp_path / "lines.txt").write_text("def add\n\nclass Point\n")
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "lines.txt", tmp_path / "a", "--chat",
                                                 "false"))
    assert code == 0 and "distilled 2 prompts (plain text)" in err
    (tmp_path / "corpus.txt").write_text("def add(x, y):\n    return x + y\n" * 4)
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "corpus.txt", tmp_path / "b",
                                                 "--prompt-tokens", 8))
    assert code == 0 and "prompts (plain text)" in err


def test_bad_inputs_get_one_line(chat_model, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("\n")
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "empty.jsonl", tmp_path / "o1"))
    assert_one_line_error(code, err, "holds no prompts")
    write_prompts(tmp_path / "p.jsonl")
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "p.jsonl", tmp_path / "o2", "--chat",
                                                 "false"))
    assert_one_line_error(code, err, "add --chat")
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user"}]}\n')
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "bad.jsonl", tmp_path / "o3"))
    assert_one_line_error(code, err, "bad.jsonl line 1")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "p.jsonl", tmp_path / "taken"))
    assert_one_line_error(code, err, "holds no distillation")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "p.jsonl", tmp_path / "o4",
                                                 "--max-new-tokens", 1000))
    assert_one_line_error(code, err, "exceeds the model's context")
    code, _, err = run_cli(capsys, *distill_args(chat_model, tmp_path / "p.jsonl", tmp_path / "o5", "--chat", "yes"))
    assert_one_line_error(code, err, "--chat is 'auto', 'true' or 'false'")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))
