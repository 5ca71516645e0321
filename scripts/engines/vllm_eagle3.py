"""vLLM (its CPU build) runs a target folder with and without an exported EAGLE-3 draft: greedy outputs, and the
engine's own acceptance counters. Runs in vLLM's virtual environment, not multitoken's (vLLM pins its own torch and
transformers); `eagle3_engines.py` calls it and compares with multitoken's own decoding of the same draft.

    VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=2 \\
        vllm-venv/bin/python scripts/engines/vllm_eagle3.py --target smol-hf --draft smol-eagle3 \\
        --prompts prompts.json --max-tokens 128 --k 3 --out vllm.json [--server]

prompts.json: {"prompts": [[token ids], ...]}. The offline engine decodes them plain, then with the draft; with
--server the draft runs again through vLLM's OpenAI-compatible server (on 127.0.0.1), each prompt one request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request


def spec_metrics(metrics) -> dict:
    """vLLM's speculative-decoding counters from `LLM.get_metrics()` (or parsed from /metrics)."""
    found = {}
    for m in metrics:
        name = m.name.removeprefix("vllm:")
        if name in ("spec_decode_num_drafts", "spec_decode_num_draft_tokens", "spec_decode_num_accepted_tokens"):
            found[name] = getattr(m, "value", None)
        elif name == "spec_decode_num_accepted_tokens_per_pos":
            found[name] = list(getattr(m, "values", []))
    return found


def summary(counters: dict, k: int) -> dict:
    drafts = counters.get("spec_decode_num_drafts") or 0
    accepted = counters.get("spec_decode_num_accepted_tokens") or 0
    per_pos = counters.get("spec_decode_num_accepted_tokens_per_pos") or [0] * k
    return {"drafts": drafts, "draft_tokens": counters.get("spec_decode_num_draft_tokens"), "accepted": accepted,
            "acceptance_length": 1 + accepted / drafts if drafts else None,
            "acceptance_per_position": [a / drafts if drafts else None for a in per_pos]}


def offline(args, prompts: list[list[int]], draft: bool) -> tuple[list[list[int]], dict, float]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = {"method": "eagle3", "model": args.draft, "num_speculative_tokens": args.k} if draft else None
    # float32, as multitoken decodes on a CPU (vLLM would otherwise run a float32 folder in bfloat16 here)
    llm = LLM(model=args.target, speculative_config=spec, enforce_eager=True, max_model_len=args.max_model_len,
              disable_log_stats=False, seed=0, dtype="float32")
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    start = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    counters = spec_metrics(llm.get_metrics()) if draft else {}
    del llm
    return tokens, counters, seconds


def served(args, prompts: list[list[int]]) -> tuple[list[list[int]], dict]:
    """The same draft through vLLM's OpenAI-compatible server, one request per prompt."""
    port = args.port
    spec = json.dumps({"method": "eagle3", "model": args.draft, "num_speculative_tokens": args.k})
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.target,
                               "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--dtype", "float32",
                               "--max-model-len", str(args.max_model_len), "--speculative-config", spec],
                              stdout=subprocess.DEVNULL, stderr=open(args.out + ".server.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the vLLM server exited ({server.returncode}): see {args.out}.server.log")
                time.sleep(2)
        model = json.load(urllib.request.urlopen(base + "/v1/models"))["data"][0]["id"]
        tokens = []
        for p in prompts:
            body = json.dumps({"model": model, "prompt": p, "max_tokens": args.max_tokens, "temperature": 0,
                               "return_token_ids": True}).encode()
            request = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
            choice = json.load(urllib.request.urlopen(request, timeout=600))["choices"][0]
            tokens.append(choice.get("token_ids") or [])
        text = urllib.request.urlopen(base + "/metrics").read().decode()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return tokens, parse_prometheus(text)


def parse_prometheus(text: str) -> dict:
    found: dict = {}
    per_pos: dict[int, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("vllm:spec_decode"):
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{")[0].removeprefix("vllm:").removesuffix("_total")
        if base == "spec_decode_num_accepted_tokens_per_pos":
            pos = int(name.split('position="')[1].split('"')[0])
            per_pos[pos] = per_pos.get(pos, 0) + float(value)
        elif base in ("spec_decode_num_drafts", "spec_decode_num_draft_tokens", "spec_decode_num_accepted_tokens"):
            found[base] = found.get(base, 0) + float(value)
    found["spec_decode_num_accepted_tokens_per_pos"] = [per_pos[i] for i in sorted(per_pos)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    prompts = json.load(open(args.prompts))["prompts"]
    plain, _, plain_s = offline(args, prompts, draft=False)
    spec, counters, spec_s = offline(args, prompts, draft=True)
    offline_run = {"tokens": spec, "identical_to_plain": sum(a == b for a, b in zip(spec, plain)),
                   "seconds_plain": plain_s, "seconds_draft": spec_s, **summary(counters, args.k)}
    result = {"engine": "vllm", "k": args.k, "prompts": len(prompts), "max_tokens": args.max_tokens,
              "plain": plain, "offline": offline_run}
    if args.server:
        tokens, counters = served(args, prompts)
        result["server"] = {"tokens": tokens, "identical_to_plain": sum(a == b for a, b in zip(tokens, plain)),
                            **summary(counters, args.k)}
    import vllm

    result["vllm_version"] = vllm.__version__
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({k: v for k, v in result["offline"].items() if k != "tokens"}))


if __name__ == "__main__":
    main()
