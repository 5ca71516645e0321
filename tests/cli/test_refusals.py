"""The newer surfaces' bad input, one row per case a user met: draft trees the model cannot draft, options that would
be ignored, `train --init-from` settings the checkpoint fixes, and messages that point the right way. Each a one-line
error naming the input and the fix, nothing written."""

from tests.cli.conftest import TINY, assert_one_line_error, run_cli

GENERATE = ["--prompt", "ab", "--max-new-tokens", "4", "--temperature", "0"]

TREES = [  # (--tree, what the refusal says): the model has 256 tokens, one extra head, no drafter
    ("(100000,)", "rank 100000, but each head ranks only 256 tokens: use ranks 0..255"),
    ("", "the tree is empty"),
    ("  ", "the tree is empty"),
    ("lookup 0", "'lookup' takes a number of tokens 1..64"),
    ("lookup 100000", "'lookup' takes a number of tokens 1..64"),
    ("chain 0", "drafts nothing: use chain 1 or deeper"),
    ("(0,), (0, 0)", "2 drafts deep but the model has 1 extra heads"),
    (", ".join(str((i,)) for i in range(200)), "verifies 201 tokens per step: use at most 128"),
    ("drafter chain 3", "this model has no drafter"),
]


def test_draft_trees_the_model_cannot_draft(trained_run, capsys):
    for tree, message in TREES:
        for command in (["generate", "--ckpt", trained_run, *GENERATE, "--speculative"],
                        ["bench", "decode", "--ckpt", trained_run, "--num-prompts", "1", "--prompt-len", "4",
                         "--max-new-tokens", "4", "--repeats", "1"]):
            code, out, err = run_cli(capsys, *command, "--tree", tree)
            assert_one_line_error(code, err, message)
    # A tree of one rank is a chain of one draft: it decodes.
    code, out, err = run_cli(capsys, "generate", "--ckpt", trained_run, *GENERATE, "--speculative", "--tree",
                             "((0,),)")
    assert code == 0 and "chain of 1" in err


def test_draft_options_without_speculative_are_refused_not_ignored(trained_run, capsys):
    for argv, message in ((["--tree", "(0,)"], "--tree only applies with --speculative"),
                          (["--draft-len", "1"], "--draft-len only applies with --speculative"),
                          (["--tree", "(0,)", "--draft-len", "1"], "--tree and --draft-len only apply")):
        code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, *GENERATE, *argv)
        assert_one_line_error(code, err, message, "add --speculative")
    code, _, err = run_cli(capsys, "chat", "--ckpt", trained_run, "--speculative", "false", "--tree", "(0,)")
    assert_one_line_error(code, err, "--tree only applies with --speculative")


def test_generate_chat_on_a_model_without_a_template(trained_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--ckpt", trained_run, *GENERATE, "--chat")
    assert_one_line_error(code, err, "has no chat template", "leave out --chat")


def test_train_init_from_refuses_settings_the_checkpoint_fixes(trained_run, corpus, tmp_path, capsys):
    ckpt = sorted((trained_run / "checkpoints").glob("step_*"))[-1]
    base = ["train", "--init-from", ckpt, "--data", corpus, "--max_steps", "2", "--progress", "false",
            "--batch_size", "2", "--eval_batches", "1"]
    for argv, message in ((["--model.d_model", "64"], "model.d_model 64 differs from the checkpoint's 32"),
                          (["--model.max_seq_len", "512"], "model.max_seq_len 512 differs from the checkpoint's 32")):
        out_dir = tmp_path / argv[0].strip("-").replace(".", "_")
        code, _, err = run_cli(capsys, *base, *argv, "--out_dir", out_dir)
        assert_one_line_error(code, err, message, "--init-from")
        assert not out_dir.exists()
    code, _, err = run_cli(capsys, "train", *TINY, "--data", corpus, "--freeze", "base", "--out_dir", tmp_path / "f")
    assert_one_line_error(code, err, "--freeze base", "--init-from")
    assert not (tmp_path / "f").exists()


def test_outputs_that_cannot_be_written_are_refused_before_any_work(trained_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add\n")
    for out in (blocker / "sub", "/proc/no/such/place"):
        for argv in (["export", "--ckpt", trained_run, "--format", "hf", "--out", out],
                     ["distill", "--ckpt", trained_run, "--prompts", prompts, "--out", out, "--max-new-tokens", "2"]):
            code, _, err = run_cli(capsys, *argv)
            assert_one_line_error(code, err, f"--out {out}", "choose another --out")
