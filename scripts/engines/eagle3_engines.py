"""A drafter trained by multitoken, run by the engines: export it, decode the same prompts with vLLM (CPU build) and
llama.cpp beside the target, and compare with multitoken's own decoding of the same draft. Outside CI: the engines
are oracles installed and built into a cache outside the repository (docs/engines.md says how).

    python scripts/engines/eagle3_engines.py --ckpt runs/smol-drafter --prompts chat/heldout.jsonl --chat \\
        --target-hf smol-hf --target-gguf smol-f32.gguf --llama-bin llama.cpp-build/bin \\
        --vllm-python vllm-venv/bin/python --work engines-work --out docs/results/engines-eagle3.json

For each engine: greedy output with the draft identical to the engine's own plain output (prompt for prompt), and
its acceptance length (tokens per verification) beside multitoken's, chain of --k guesses, batch 1, stopping at
the end-of-text token as the engines do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def prompt_ids(ckpt: str, prompts: str, chat: bool, limit: int | None) -> tuple[list[list[int]], object]:
    from multitoken.checkpoint import load_checkpoint
    from multitoken.data.prompts import encode_prompt, read_prompts

    model, _, tokenizer = load_checkpoint(ckpt, "cpu")
    ids = [encode_prompt(tokenizer, p, chat) for p in read_prompts(prompts)][:limit]
    return ids, (model, tokenizer)


def ours(model, tokenizer, prompts: list[list[int]], max_tokens: int, k: int) -> dict:
    """multitoken's own decoding of the same draft: each prompt alone, plain and with the drafter's chain of k."""
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import DecodeStats, speculative_generate
    from multitoken.decoding.text import until_eos
    from multitoken.decoding.tree import DraftTree

    stops = torch.tensor(tokenizer.stop_ids)
    total, outputs, identical = DecodeStats(), [], 0
    for p in prompts:
        prompt = torch.tensor([p])
        plain = generate(model, prompt, max_tokens, stop_ids=stops)
        fast, stats = speculative_generate(model, prompt, max_tokens, tree=DraftTree.chain(k, drafter=True),
                                           stop_ids=stops)
        identical += torch.equal(plain, fast)
        total.add(stats)
        text, n = until_eos(fast[0].tolist(), tokenizer.stop_ids)
        outputs.append(fast[0, :n].tolist())  # up to and including the stop token, as `engine_tokens` cuts
    return {"tokens": outputs, "identical_to_plain": identical, "acceptance_length": total.tau,
            "acceptance_per_position": total.acceptance_per_position}


def export(ckpt: str, work: Path, target_gguf: str | None) -> tuple[Path, Path | None]:
    from multitoken.interop.export import export

    folder, gguf = work / "draft-eagle3", work / "draft-eagle3.gguf"
    if not folder.exists():
        export(ckpt, "eagle3", folder)
    if target_gguf and not gguf.exists():
        export(ckpt, "eagle3-gguf", gguf, target=target_gguf)
    return folder, gguf if target_gguf else None


def engine_tokens(tokens: list[list[int]], stop_ids: list[int]) -> list[list[int]]:
    """An engine's answer up to and including its first stop token (engines differ in whether they return it)."""
    out = []
    for row in tokens:
        cut = next((i for i, t in enumerate(row) if t in stop_ids), None)
        out.append(row if cut is None else row[:cut + 1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--target-hf")
    parser.add_argument("--target-gguf")
    parser.add_argument("--llama-bin")
    parser.add_argument("--vllm-python")
    parser.add_argument("--vllm-server", action="store_true")
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ids, (model, tokenizer) = prompt_ids(args.ckpt, args.prompts, args.chat, args.limit)
    (work / "prompts.json").write_text(json.dumps({"prompts": ids}))
    folder, gguf = export(args.ckpt, work, args.target_gguf)
    result = {"ckpt": args.ckpt, "prompts": args.prompts, "n_prompts": len(ids), "max_tokens": args.max_tokens,
              "k": args.k, "multitoken": ours(model, tokenizer, ids, args.max_tokens, args.k)}
    print("multitoken:", {k: v for k, v in result["multitoken"].items() if k != "tokens"}, flush=True)
    common = ["--prompts", str(work / "prompts.json"), "--max-tokens", str(args.max_tokens), "--k", str(args.k)]
    if args.vllm_python:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
               "OMP_NUM_THREADS": "2"}
        subprocess.run([args.vllm_python, str(HERE / "vllm_eagle3.py"), "--target", args.target_hf, "--draft",
                        str(folder), *common, "--out", str(work / "vllm.json"),
                        *(["--server"] if args.vllm_server else [])], check=True, env=env)
        result["vllm"] = json.loads((work / "vllm.json").read_text())
    if args.llama_bin and gguf is not None:
        subprocess.run([sys.executable, str(HERE / "llama_cpp_eagle3.py"), "--bin", args.llama_bin, "--target",
                        args.target_gguf, "--draft", str(gguf), *common, "--out", str(work / "llama_cpp.json")],
                       check=True)
        result["llama.cpp"] = json.loads((work / "llama_cpp.json").read_text())
    compare(result, tokenizer.stop_ids)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["comparison"], indent=1))


def compare(result: dict, stop_ids: list[int]) -> None:
    """Per engine: output identical to its own plain output, its acceptance length over multitoken's, and how many
    of its answers equal multitoken's token for token (different arithmetic may part ways at a near tie)."""
    ours_len = result["multitoken"]["acceptance_length"]
    mine = result["multitoken"]["tokens"]
    comparison = {}
    for name, key in (("vllm", "offline"), ("vllm server", "server"), ("llama.cpp", None)):
        engine = result.get(name.split()[0])
        if engine is None or (key is not None and key not in engine):
            continue
        run = engine[key] if key else engine
        tokens = engine_tokens(run["tokens"], stop_ids)
        comparison[name] = {
            "identical_to_own_plain": f"{run['identical_to_plain']}/{len(tokens)}",
            "acceptance_length": run["acceptance_length"],
            "ratio_to_multitoken": run["acceptance_length"] / ours_len if run["acceptance_length"] else None,
            "same_tokens_as_multitoken": f"{sum(a == b for a, b in zip(tokens, mine))}/{len(tokens)}",
        }
    result["comparison"] = comparison


if __name__ == "__main__":
    main()
