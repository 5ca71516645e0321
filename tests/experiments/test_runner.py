"""The experiment pipeline end to end in miniature (--quick), its resumption, and the induction metric on a hand-made
case."""

import json
from pathlib import Path

import pytest
import torch

from multitoken.experiments import induction
from multitoken.experiments.common import word_tokenizer
from tests.cli.conftest import assert_one_line_error, run_cli


class Oracle(torch.nn.Module):
    """A 'model' whose head 1 predicts the true next token everywhere except at the listed (row, position) pairs."""

    def __init__(self, sequences, wrong, vocab):
        super().__init__()
        self.sequences, self.wrong, self.vocab = sequences, wrong, vocab

    def forward(self, ids):
        B, T = ids.shape
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            seq = self.sequences[b]
            for t in range(min(T, len(seq) - 1)):
                target = seq[t + 1] if (b, t + 1) not in self.wrong else (seq[t + 1] + 1) % self.vocab
                logits[b, t, target] = 1.0
        return logits


def test_induction_metric_counts_exactly_the_scored_positions():
    sequences = [[0, 5, 6, 7, 5, 6], [0, 8, 9, 8, 9, 3, 3]]
    positions = [[2, 5], [2, 4, 6]]
    hits, total = induction._accuracy_at(Oracle(sequences, set(), 16), sequences, positions, "cpu")
    assert (hits, total) == (5, 5)
    hits, total = induction._accuracy_at(Oracle(sequences, {(0, 5), (1, 4)}, 16), sequences, positions, "cpu")
    assert (hits, total) == (3, 5)  # a wrong guess outside the scored positions would not count


def test_word_tokenizer_maps_one_word_to_one_token():
    tok = word_tokenizer(["the", "Ka", "zor", "."])
    ids = tok.encode("the Ka zor .")
    assert len(ids) == 4 and tok.eot_id == 0 and tok.decode(ids) == "the Ka zor ."


@pytest.mark.slow
def test_quick_grids_write_results_and_resume(tmp_path, capsys):
    out = tmp_path / "induction"
    code, printed, _ = run_cli(capsys, "experiment", "induction", "--quick", "--out", out)
    assert code == 0 and "| tiny |" in printed and "| tiny-n2-s1 | 2 | 1 |" in printed  # per (size, n), and per run
    records = json.loads((out / "results.json").read_text())
    assert [(r["n_future"], r["seed"]) for r in records] == [(1, 1), (2, 1)]
    for r in records:
        assert r["experiment"] == "induction" and r["non_embedding_params"] > 0 and r["tokens_trained"] > 0
        assert 0 <= r["best"]["induction"] <= 1 and r["evaluations"] >= 2
    assert (out / "results.md").read_text().startswith("# induction") and (out / "induction.png").stat().st_size

    # A run stopped midway (its last checkpoint and evaluation lost) is resumed, not restarted; the others skipped.
    run = out / "runs" / "tiny-n2-s1"
    steps = sorted((run / "checkpoints").iterdir())
    last_step = int(steps[-1].name.split("_")[1])
    import shutil

    shutil.rmtree(steps[-1])
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    (run / "evaluations.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    code, printed, err = run_cli(capsys, "experiment", "induction", "--quick", "--out", out)
    assert code == 0 and "training tiny-n2-s1 from step" in printed and "training tiny-n1-s1" not in printed
    again = json.loads((out / "results.json").read_text())
    assert again[1]["final"]["step"] == last_step and again[0] == records[0]

    # Continuing the grid with other data settings would mix runs that cannot be compared: refused, nothing touched.
    code, _, err = run_cli(capsys, "experiment", "induction", "--quick", "--p_fresh", "0.5", "--out", out)
    assert_one_line_error(code, err, "setup.p_fresh 0.05 -> 0.5", "new --out")
    assert json.loads((out / "results.json").read_text()) == again

    out = tmp_path / "arithmetic"
    code, printed, _ = run_cli(capsys, "experiment", "arithmetic", "--quick", "--degree", "3", "--out", out)
    assert code == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["n_future"] for r in records] == [1, 2, 4]
    assert set(records[0]["final"]["exact"]) == {str(m) for m in range(1, 11)}
    assert json.loads((out / "grid.json").read_text())["setup"]["degree"] == 3
    documents = (out / "data" / "documents.jsonl").read_text().splitlines()
    assert all(json.loads(d)["text"].split(" = ")[1].count(" ") == 2 for d in documents[:50])  # 3 coefficients
    assert (out / "arithmetic.png").stat().st_size > 0
    # The floor a run must clear, from the grid's own test set: what always answering the most frequent answer scores.
    from multitoken.experiments import arithmetic

    floor = arithmetic.majority_reference(arithmetic.Setup(per_operations=20, degree=3))
    last = (out / "results.md").read_text().splitlines()[-1]
    assert last.startswith("| most frequent answer, no model |") and "±" not in last
    assert f"| {100 * floor['in_domain']:.1f} |" in last and "most frequent answer" in printed


@pytest.mark.slow
def test_quick_byte_level_grid(tmp_path, capsys):
    out = tmp_path / "bytes"
    code, printed, _ = run_cli(capsys, "experiment", "bytes", "--quick", "--out", out)
    assert code == 0 and "head-1 bits/byte" in printed
    records = json.loads((out / "results.json").read_text())
    assert [r["n_future"] for r in records] == [1, 2, 4, 8]
    assert len({r["non_embedding_params"] for r in records}) == 1  # parameter-matched
    for r in records:
        assert r["final"]["bpb"] > 0 and 1.0 <= r["final"]["tau"] <= r["n_future"]
    assert records[0]["final"]["tau"] == 1.0 and (out / "bytes.png").stat().st_size > 0

    # Another process's seeds join the same grid (--first_seed): its record is merged, the others kept as they were.
    code, printed, _ = run_cli(capsys, "experiment", "bytes", "--quick", "--n_future", "1", "--first_seed", "2",
                               "--out", out)
    assert code == 0 and "tiny-n1-s2" in printed
    merged = json.loads((out / "results.json").read_text())
    assert merged[:4] == records and [(r["n_future"], r["seed"]) for r in merged[4:]] == [(1, 2)]


@pytest.mark.slow
def test_quick_sequential_grid_trains_the_three_kinds(tmp_path, capsys):
    out = tmp_path / "sequential"
    code, printed, _ = run_cli(capsys, "experiment", "sequential", "--quick", "--out", out)
    assert code == 0 and "| tiny | sequential module | 1 |" in printed and "| tiny | parallel heads | 4 |" in printed
    records = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert sorted(records) == ["tiny-n1-drafter-s1", "tiny-n1-s1", "tiny-n4-s1"]
    drafter, plain = records["tiny-n1-drafter-s1"], records["tiny-n1-s1"]
    assert drafter["drafter"] and not plain["drafter"] and records["tiny-n4-s1"]["n_future"] == 4
    # The module replaces one trunk layer: its model holds about as many parameters as next-token's, not a layer more.
    assert 1.0 < drafter["non_embedding_params"] / plain["non_embedding_params"] < 1.1
    assert len(drafter["final"]["drafter_acc"]) == 3 and len(drafter["final"]["acceptance"]) == 3
    assert plain["final"]["tau"] == 1.0 and 1.0 <= drafter["final"]["tau"] <= 4.0
    assert (out / "sequential.png").stat().st_size > 0


@pytest.mark.slow
def test_report_redraws_from_results_json_alone(tmp_path, capsys):
    """The committed results of a grid (no run directories) redraw to the committed table."""
    import shutil

    committed = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "bytes"
    out = tmp_path / "bytes"
    out.mkdir()
    for name in ("results.json", "grid.json"):
        shutil.copy(committed / name, out / name)
    code, printed, _ = run_cli(capsys, "experiment", "bytes", "--report", "--out", out)
    assert code == 0 and "head-1 bits/byte" in printed and (out / "bytes.png").exists()
    assert (out / "results.md").read_text() == (committed / "results.md").read_text()
    code, _, err = run_cli(capsys, "experiment", "bytes", "--report", "--out", tmp_path / "none")
    assert code == 1 and "cannot read" in err


def test_bad_grid_options_get_one_line_errors(tmp_path, capsys):
    cases = [(["induction", "--seeds", "0"], "--seeds"), (["bytes", "--first_seed", "0"], "--first_seed"),
             (["arithmetic", "--batch_tokens", "0"], "--batch_tokens"),
             (["arithmetic", "--degree", "1"], "--degree must be 2..8"), (["induction", "--p_fresh", "0"], "--p_fresh"),
             (["induction", "--sizes", "7M"], "--sizes takes"), (["sequential", "--n_future", "1,4"], "one n")]
    for argv, fragment in cases:
        code, _, err = run_cli(capsys, "experiment", *argv, "--out", tmp_path / "grid")
        assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "grid").exists()  # refused before anything is written


def test_documents_are_generated_only_until_prepared(tmp_path):
    from multitoken.experiments.common import prepare_documents

    calls = []

    def texts():
        calls.append(1)
        return ["the Ka zor ."] * 200

    first = prepare_documents(texts, word_tokenizer(["the", "Ka", "zor", "."]), tmp_path / "data")
    again = prepare_documents(texts, word_tokenizer(["the", "Ka", "zor", "."]), tmp_path / "data")
    assert len(calls) == 1 and first[0] == again[0] and again[1].encode("Ka zor") == first[1].encode("Ka zor")


def test_table_rows_go_by_size_then_n_whatever_order_runs_finished():
    from multitoken.experiments.runner import table

    def record(size, params, n, seed):
        return {"size": size, "non_embedding_params": params, "n_future": n, "seed": seed,
                "final": {"bpb": 1.0, "tau": 1.0}}

    records = [record("big", 20, 2, 1), record("small", 10, 4, 1), record("small", 10, 1, 2), record("small", 10, 1, 1)]
    rows = [[cell.strip() for cell in line.split("|")[1:5]] for line in table("bytes", records).splitlines()[2:]]
    assert rows == [["small", "10", "1", "2"], ["small", "10", "4", "1"], ["big", "20", "2", "1"]]


def test_arithmetic_formation_is_the_first_evaluation_at_half():
    from multitoken.experiments import arithmetic

    def evaluation(tokens, at_one, at_two):
        exact = {str(m): 0.0 for m in arithmetic.OPERATIONS}
        exact.update({"1": at_one, "2": at_two})
        return {"tokens": tokens, "exact": exact, "in_domain": 0.0, "out_of_domain": 0.0}

    evals = [evaluation(1_000_000, 0.1, 0.0), evaluation(2_000_000, 0.6, 0.2), evaluation(3_000_000, 0.4, 0.5)]
    record = arithmetic.summarize(evals)
    assert record["formed_at"]["1"] == 2_000_000 and record["formed_at"]["2"] == 3_000_000
    assert record["formed_at"]["3"] is None
    final = {"exact": evals[-1]["exact"], "in_domain": 0.0, "out_of_domain": 0.0,
             "per_coefficient": {str(m): 0.0 for m in arithmetic.OPERATIONS}}
    runs = [{"size": "S", "non_embedding_params": 1, "n_future": 1, "seed": seed, "final": final, **record}
            for seed in (1, 2)]
    table = arithmetic.table(runs)
    assert "| S | 1 | 2.0 (2/2) | 3.0 (2/2) | never |" in table
