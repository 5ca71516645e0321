"""Faults a run must survive: a second writer, kills before, during and after saves and deletions, damaged
checkpoints, a full disk, divergence. Each test injects the fault and asserts what the user gets."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from multitoken.errors import CheckpointError, ConfigError, TrainingError
from multitoken.training import checkpoint as checkpoint_module
from multitoken.checkpoint import list_checkpoints, load_checkpoint
from multitoken.training.checkpoint import save_checkpoint, sweep_debris
from multitoken.training.run_lock import RunLock
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_train_config

TIMING_FIELDS = ("tokens_per_s",)  # the only metrics that may differ between two runs of the same steps


def metrics(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(run)[-1] / "model.safetensors")


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert metrics(a) == metrics(b)
    assert [p.name for p in list_checkpoints(a)] == [p.name for p in list_checkpoints(b)]


@pytest.fixture
def straight(corpus, tmp_path) -> Path:
    """An uninterrupted run: 6 steps, checkpoints at 2, 4 and 6 (two kept), the reference for every fault."""
    train(tiny_train_config(corpus, tmp_path / "straight", save_interval=2, keep_last=2))
    return tmp_path / "straight"


def config(corpus, run: Path, **overrides):
    return tiny_train_config(corpus, run, save_interval=2, keep_last=2, **overrides)


# --- one writer per run --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_free(corpus, tmp_path):
    run = tmp_path / "run"
    first = Trainer(config(corpus, run))  # holds the lock until closed
    try:
        with pytest.raises(ConfigError, match="in use by another training run .*pid"):
            Trainer(config(corpus, run, seed=7))
    finally:
        first.close()
    assert train(config(corpus, run))["step"] == 6

    # A writer killed with SIGKILL cannot release anything: the kernel drops its flock, so the next run goes on.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from multitoken.training.run_lock import RunLock
        lock = RunLock({str(tmp_path / 'other')!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="in use"):
            RunLock(tmp_path / "other").acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path / "other").acquire().release()


# --- metrics equal an uninterrupted run's ---------------------------------------------------------------------------

@pytest.mark.parametrize("resume", [False, True])
def test_rerun_after_a_kill_before_the_first_checkpoint_restarts_the_log(corpus, tmp_path, straight, resume):
    run = tmp_path / "killed"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints")  # killed before any checkpoint: only the metrics of lost steps remain
    train(config(corpus, run, resume=resume))
    assert_same_run(straight, run)


def test_a_torn_metrics_line_is_repaired_on_resume(corpus, tmp_path, straight):
    run = tmp_path / "torn"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints" / "step_000006")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "split": "tr')  # a write cut off by a full disk or a kill
    train(config(corpus, run, resume=True))
    assert_same_run(straight, run)


# --- deletion a kill cannot leave half done ---------------------------------------------------------------------------

def test_a_deletion_cut_short_leaves_no_broken_checkpoint(corpus, tmp_path, straight, monkeypatch):
    run = tmp_path / "cut"
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # removes one file, then "the process dies"
        if ".deleting-" in str(path):
            next(Path(path).iterdir()).unlink()
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train(config(corpus, run))
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", real_rmtree)
    # Only complete checkpoints are listed, never more than keep_last; the half-deleted one is hidden debris.
    assert [p.name for p in list_checkpoints(run)] == ["step_000004", "step_000006"]
    assert list((run / "checkpoints").glob(".step_000002.deleting-*"))
    train(config(corpus, run, resume=True))  # sweeps the debris
    assert not list((run / "checkpoints").glob(".*"))
    assert_same_run(straight, run)


def test_a_replaced_checkpoint_whose_replacement_never_landed_is_restored(tmp_path, straight):
    root = straight / "checkpoints"
    os.rename(root / "step_000006", root / ".step_000006.old-123")  # killed between the two renames of a re-save
    (root / ".step_000006.tmp-xyz").mkdir()
    notes = sweep_debris(straight)
    assert [p.name for p in list_checkpoints(straight)] == ["step_000004", "step_000006"]
    assert any("restored step_000006" in n for n in notes) and not list(root.glob(".*"))


# --- damaged newest checkpoint ------------------------------------------------------------------------------------------

def test_resume_falls_back_to_the_newest_loadable_checkpoint(corpus, tmp_path, straight, capsys):
    run = tmp_path / "damaged"
    shutil.copytree(straight, run)
    (run / "checkpoints" / "step_000006" / "model.safetensors").unlink()
    cfg = config(corpus, run, resume=True)
    trainer = Trainer(cfg)
    try:
        assert trainer.resumed_from.name == "step_000004"
        assert any("skipped damaged checkpoint(s) (step_000006" in n and "missing model.safetensors" in n
                   for n in trainer.notes)
    finally:
        trainer.close()
    train(cfg)
    assert_same_run(straight, run)

    empty = tmp_path / "empty"
    shutil.copytree(straight, empty)
    for ckpt in list_checkpoints(empty):
        shutil.rmtree(ckpt)
        ckpt.mkdir()  # an empty step directory
    with pytest.raises(CheckpointError, match="no checkpoint can be resumed .*--resume PATH"):
        train(config(corpus, empty, resume=True))


def test_resume_path_chooses_the_checkpoint(corpus, tmp_path, straight):
    run = tmp_path / "chosen"
    step4 = list_checkpoints(straight)[0]
    assert step4.name == "step_000004"
    shutil.copytree(straight, run)
    trainer = Trainer(config(corpus, run, resume=str(run / "checkpoints" / "step_000004")))
    try:
        assert trainer.state.step == 4 and trainer.resumed_from.name == "step_000004"
    finally:
        trainer.close()
    with pytest.raises(CheckpointError, match="--resume .*nope does not exist"):
        Trainer(config(corpus, run, resume=str(tmp_path / "nope")))


# --- full disk ------------------------------------------------------------------------------------------------------------

def test_disk_full_while_saving_names_the_step_and_the_intact_checkpoint(corpus, tmp_path, monkeypatch):
    real_save_file = save_file

    def save_file_on_a_full_disk(tensors, filename, metadata=None):
        if "step_000004" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file_on_a_full_disk)
    run = tmp_path / "full"
    with pytest.raises(TrainingError, match=r"no space left on device writing checkpoint step 4 to .*checkpoints; "
                                            r"step_000002 is intact"):
        train(config(corpus, run))
    assert [p.name for p in list_checkpoints(run)] == ["step_000002"] and not list((run / "checkpoints").glob(".*"))


def test_disk_full_on_a_real_small_filesystem(corpus, tmp_path):
    """A 64 KiB tmpfs: torch.save reports a full disk only as 'unexpected pos'; the user still learns what happened."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with pytest.raises(TrainingError, match="no space left on device writing checkpoint step 2"):
            train(config(corpus, mount / "run"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --- divergence -----------------------------------------------------------------------------------------------------------

def test_divergence_stops_before_any_save_and_non_finite_weights_are_refused(corpus, tmp_path):
    from multitoken import OptimConfig

    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"training diverged at step \d+: .*optim.lr 1e\+10"):
        train(config(corpus, run, optim=OptimConfig(lr=1e10, warmup_steps=0)))
    for ckpt in list_checkpoints(run):  # whatever was saved before the divergence is finite
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())

    good = tmp_path / "good"
    train(config(corpus, good, max_steps=2))
    ckpt = list_checkpoints(good)[-1]
    state = load_file(ckpt / "model.safetensors")
    state["norm.weight"][0] = float("nan")
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="non-finite weights .*norm.weight"):
        load_checkpoint(ckpt)


# --- kill -9 in a real process, at the worst moments --------------------------------------------------------------------

KILLER = """
import os, shutil, signal, sys
import torch
from multitoken.training import checkpoint
from tests.conftest import tiny_train_config
from multitoken.training.trainer import train

where, step = sys.argv[1], int(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_save, real_rmtree = torch.save, shutil.rmtree

def save(obj, path, *a, **k):  # kill mid-save: weights written, trainer state half written, not yet renamed
    if where == "save" and f"step_{step:06d}" in str(path):
        open(path, "wb").write(b"PK")
        die()
    real_save(obj, path, *a, **k)

def rmtree(path, *a, **k):  # kill mid-deletion of an old checkpoint
    if where == "delete" and f"step_{step:06d}" in str(path):
        os.unlink(sorted(os.scandir(path), key=lambda e: e.name)[0].path)
        die()
    real_rmtree(path, *a, **k)

checkpoint.torch.save = save
checkpoint.shutil.rmtree = rmtree
train(tiny_train_config(sys.argv[3], sys.argv[4], save_interval=2, keep_last=2, resume=True))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where,step", [("save", 4), ("delete", 2), ("save", 6)])
def test_kill_9_during_save_and_deletion_then_resume_is_bit_identical(corpus, tmp_path, straight, where, step):
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", KILLER, where, str(step), str(corpus), str(run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    train(config(corpus, run, resume=True))
    assert_same_run(straight, run)
    assert not list((run / "checkpoints").glob(".*"))
