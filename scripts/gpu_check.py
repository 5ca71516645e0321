"""Everything a borrowed GPU should check, in one prepared run that fits in 10 minutes and writes one JSON file.

    python scripts/gpu_check.py --out OUT [--smol CKPT] [--budget-s 540]
    python scripts/gpu_check.py --out OUT --dry-run        # the same steps on this CPU at tiny sizes (CI runs it)

Steps, each timed, its result (or why it failed or was skipped) written to OUT/gpu_check.json as soon as it ends, so a
run stopped by its time limit keeps what it finished:
    env           torch, the device, its memory
    tests         the gpu-marked tests, among them decoding equivalence in bf16 with compiled steps
    bench_train   configs/gpu-byte-200m.yaml's shape: tokens/s, MFU and peak memory, next-token vs multi-token
    default_run   the built-in default run trained on the GPU at 4x its batch (bf16 autocast), kept in OUT
    bench_decode  that checkpoint in bf16, compiled, plain vs speculative (heads' chain), batch 1 and 8
    smol          with --smol CKPT (SmolLM2 converted): distil chat answers at GPU batch sizes, train 3 heads and an
                  EAGLE-3 drafter on them (--freeze base), keep both checkpoints in OUT (small: extra weights only)
    arithmetic    the arithmetic pilot of docs/experiments.md at 4x the tokens per step
A step past the budget is skipped, not started. docs/gpu.md says how to run it through the device tool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense, per the vendors' sheets


def run(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """A command's exit status and its output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else ""
    return {"command": " ".join(command), "returncode": code, "seconds": round(time.perf_counter() - start, 1),
            "tail": output[-2000:]}


def multitoken(*args: str) -> list[str]:
    return [sys.executable, "-m", "multitoken", *args]


def step_env(a) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "device": a.device}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gb=round(props.total_memory / 1e9, 1),
                    capability=f"{props.major}.{props.minor}")
    return info


def step_tests(a) -> dict:
    env = {} if not a.dry_run else {"MULTITOKEN_CHECK_DEVICE": "cpu", "MULTITOKEN_CHECK_DTYPE": "float32",
                                    "MULTITOKEN_CHECK_COMPILE": "0"}
    where = ["tests/decoding/test_gpu_decoding.py", "tests/training/test_gpu_paths.py"] if a.dry_run else ["tests"]
    result = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:randomly", "-p", "no:cacheprovider",
                  *where], a.timeout(300), env)
    if result["returncode"] not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"gpu tests failed: {result['tail'][-600:]}")
    return result


def step_bench_train(a) -> dict:
    import yaml

    shape = yaml.safe_load((ROOT / "configs" / "gpu-byte-200m.yaml").read_text())["model"]
    size = dict(d_model=32, n_layer=4, n_head=2, seq_len=32, batch_size=2, steps=2) if a.dry_run else \
        dict(d_model=shape["d_model"], n_layer=shape["n_layer"], n_head=shape["n_head"], seq_len=shape["max_seq_len"],
             batch_size=16, steps=10)
    path = a.out / "bench_train.json"
    result = run(multitoken("bench", "train", "--vocab-size", "256", "--n-future", str(shape["n_future"]),
                            "--cases", "mtp_chunked" if a.dry_run else "ntp_chunked,mtp_sequential,mtp_chunked",
                            "--rounds", "1", "--json", str(path),
                            *[f"--{k.replace('_', '-')}={v}" for k, v in size.items()], "--device", a.device),
                 a.timeout(240))
    if result["returncode"] != 0:
        raise RuntimeError(result["tail"][-600:])
    records = json.loads(path.read_text())
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in a.device_name), None)
    for r in records:  # model FLOPs utilisation: the step's useful FLOPs over the card's dense bf16 peak
        r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak if peak else None
    return {"records": records, "peak_flops": peak, "seconds": result["seconds"]}


def step_default_run(a) -> dict:
    out = a.out / "default-run"
    args = ["--batch_size", "64", "--eval_interval", "400", "--save_interval", "800"]
    if a.dry_run:  # a tiny model on a tiny corpus: the same command, in seconds
        corpus = a.out / "corpus.txt"
        corpus.write_text("".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)))
        args = ["--data", str(corpus), "--model.d_model", "32", "--model.n_layer", "6", "--model.n_head", "2",
                "--max_steps", "6", "--batch_size", "2", "--seq_len", "64", "--eval_interval", "6",
                "--save_interval", "6", "--eval_batches", "1"]
    result = run(multitoken("train", "--out_dir", str(out), "--progress", "false", "--device", a.device, *args),
                 a.timeout(240))
    if result["returncode"] != 0:
        raise RuntimeError(result["tail"][-600:])
    return {**result, "run": str(out)}


def step_bench_decode(a) -> dict:
    import numpy as np
    import torch

    from multitoken.bench.decode import bench_decode
    from multitoken.checkpoint import load_checkpoint
    from multitoken.data.tokens import resolve_data

    model, cfg, tokenizer = load_checkpoint(a.out / "default-run", a.device)
    if not a.dry_run:
        model = model.to(torch.bfloat16)
    val = resolve_data(cfg.data, tokenizer)[1].val
    length = min(64, len(val) // 2)
    prompts = [val[s:s + length].astype("int64").tolist() for s in np.linspace(0, len(val) - length, 8).astype(int)]
    results = []
    for batch in (1, 8):
        r = bench_decode(model, prompts, batch, 16 if a.dry_run else 128, repeats=1 if a.dry_run else 3,
                         device=a.device, compile=not a.dry_run, max_repeats=1 if a.dry_run else 6)
        results.append({k: r.get(k) for k in ("batch_size", "speedup", "tau", "identical", "tokens_per_s",
                                              "acceptance_per_position", "compile_seconds")})
    return {"dtype": "float32" if a.dry_run else "bfloat16", "compiled": not a.dry_run, "results": results}


def step_smol(a) -> dict:
    if a.smol is None:
        if not a.dry_run:
            return {"skipped": "no --smol CKPT: SmolLM2-135M converted is 0.5 GB, past what the device tool carries "
                               "(64 MiB); give a path on the GPU machine to run this step"}
        a.smol = a.out / "default-run"  # the dry run walks the same steps on the tiny base
    chat = a.out / "chat"
    prompts = chat / "all.jsonl"  # the 600 training requests and the 1,000 more (never the held-out ones)
    if a.dry_run:  # the tiny base has no chat template: plain-text prompts
        chat.mkdir(exist_ok=True)
        prompts = chat / "prompts.txt"
        prompts.write_text("def add(x, y):\nclass Point:\nimport os\nfor i in range(\n")
    else:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_chat_prompts.py"), "--out", str(chat), "--more"],
                       cwd=ROOT, check=True, capture_output=True)
        prompts.write_text("".join(p.read_text() for p in sorted(chat.glob("train*.jsonl"))))
    data = a.out / "distilled"
    # The dry run decodes eagerly: compiling the tiny base's step with the CPU's autotuning took most of its time.
    tokens = ["--max-new-tokens", "24", "--batch-size", "4", "--val-fraction", "0.5", "--compile", "false"] \
        if a.dry_run else ["--max-new-tokens", "512", "--batch-size", "128"]
    results = {"distill": run(multitoken("distill", "--ckpt", str(a.smol), "--prompts", str(prompts), "--out",
                                         str(data), "--chat", "auto", "--device", a.device, *tokens), a.timeout(240))}
    steps = "2" if a.dry_run else "1500"
    kinds = (("heads", ["--model.n_future", "4"]), ("drafter", ["--model.n_future", "1", "--model.drafter", "eagle3"]))
    for name, extra in kinds[1:] if a.dry_run else kinds:  # the dry run: the drafter's (the longer path) alone
        results[name] = run(multitoken("train", "--init-from", str(a.smol), "--freeze", "base", "--data", str(data),
                                       "--out_dir", str(a.out / f"smol-{name}"), "--max_steps", steps,
                                       *(["--batch_size", "2", "--seq_len", "8", "--eval_batches", "1"] if a.dry_run
                                         else ["--batch_size", "64"]), "--progress", "false",
                                       "--device", a.device, *extra), a.timeout(180))
    failed = [k for k, r in results.items() if r["returncode"] != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed: {results[failed[0]]['tail'][-600:]}")
    for name in (k for k, _ in kinds if k in results):
        results[name]["extra"] = keep_extra_weights(a.out / f"smol-{name}", drop_run=not a.dry_run)
    return results


def keep_extra_weights(run_dir: Path, drop_run: bool) -> str:
    """What the run trained (the extra heads or the drafter: the base was frozen) as one small safetensors file
    beside its config, so that it comes back from the GPU machine; the base's weights are the converted model's own.
    Put together again: build the model from the config, load the base's weights and these with strict=False."""
    import shutil

    from safetensors.torch import load_file, save_file

    from multitoken.checkpoint import list_checkpoints

    final = list_checkpoints(run_dir)[-1]
    state = load_file(str(final / "model.safetensors"))
    extra = {k: v for k, v in state.items() if k.startswith(("extra_heads.", "drafter.", "next_token_proj.",
                                                             "draft_ids"))}
    target = run_dir.parent / f"{run_dir.name}-extra"
    target.mkdir(exist_ok=True)
    save_file(extra, str(target / "extra.safetensors"))
    shutil.copy(final / "config.yaml", target / "config.yaml")
    if drop_run:  # the full checkpoint holds the whole base again (0.5 GB): too large to bring back
        shutil.rmtree(run_dir)
    return str(target)


def step_arithmetic(a) -> dict:
    size = ["--quick", "--n_future", "1"] if a.dry_run else ["--sizes", "S", "--n_future", "1", "--seeds", "1", "--degree", "3",
                                          "--lr", "3e-3", "--batch_tokens", "4096", "--tokens", "83886080",
                                          "--evaluations", "10", "--per_operations", "500"]
    result = run(multitoken("experiment", "arithmetic", *size, "--out", str(a.out / "arithmetic"),
                            "--device", a.device), a.timeout(300))
    if result["returncode"] != 0:
        raise RuntimeError(result["tail"][-600:])
    return {**result, "results": json.loads((a.out / "arithmetic" / "results.json").read_text())}


STEPS = {"env": step_env, "tests": step_tests, "bench_train": step_bench_train, "default_run": step_default_run,
         "bench_decode": step_bench_decode, "smol": step_smol, "arithmetic": step_arithmetic}
NEEDS = {"bench_decode": "default_run"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_check.json and the checkpoints.")
    parser.add_argument("--dry-run", action="store_true", help="Tiny sizes on the CPU: checks the script itself.")
    parser.add_argument("--smol", type=Path, help="A converted SmolLM2 checkpoint on the GPU machine.")
    parser.add_argument("--budget-s", type=float, default=540, help="Seconds for all steps (default 9 minutes).")
    parser.add_argument("--steps", default=",".join(STEPS), help="Comma-separated subset of the steps.")
    a = parser.parse_args()
    import torch

    a.device = "cpu" if a.dry_run or not torch.cuda.is_available() else "cuda"
    if a.device == "cpu" and not a.dry_run:
        print("no CUDA device here: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    a.device_name = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    a.out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + a.budget_s
    a.timeout = lambda wanted: max(1.0, min(wanted, deadline - time.perf_counter()))
    report = {"dry_run": a.dry_run, "budget_s": a.budget_s, "steps": {}}
    for name in [s.strip() for s in a.steps.split(",") if s.strip()]:
        start = time.perf_counter()
        if start > deadline - 5:
            entry = {"status": "skipped", "why": "out of time"}
        elif NEEDS.get(name) and report["steps"].get(NEEDS[name], {}).get("status") != "ok":
            entry = {"status": "skipped", "why": f"needs {NEEDS[name]}"}
        else:
            try:
                entry = {"status": "ok", **STEPS[name](a)}
                entry["status"] = "skipped" if "skipped" in entry else "ok"
            except Exception as e:  # the next steps still run: a GPU session is too short to lose to one failure
                entry = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-1500:],
                         "traceback": traceback.format_exc()[-1500:]}
        entry["seconds"] = round(time.perf_counter() - start, 1)
        report["steps"][name] = entry
        (a.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"{name}: {entry['status']} ({entry['seconds']} s)", flush=True)
    return 0 if all(s["status"] != "failed" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
