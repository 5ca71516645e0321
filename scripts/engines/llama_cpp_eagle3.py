"""llama.cpp's server runs a target GGUF with and without an exported EAGLE-3 draft GGUF: greedy outputs from the
same prompt tokens, and the engine's own draft counters (`draft_n`, `draft_n_accepted` of each answer's timings).
`eagle3_engines.py` calls it and compares with multitoken's own decoding of the same draft.

    python scripts/engines/llama_cpp_eagle3.py --bin llama.cpp-build/bin --target smol-f32.gguf \\
        --draft smol-eagle3.gguf --prompts prompts.json --max-tokens 128 --k 3 --out llama_cpp.json

prompts.json: {"prompts": [[token ids], ...]}. Each prompt is one /completion request (temperature 0, the prompt
as token ids, so that both decoders see exactly multitoken's tokens), on 127.0.0.1, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from pathlib import Path


def run_server(args, draft: bool) -> list[dict]:
    command = [str(Path(args.bin) / "llama-server"), "-m", args.target, "--host", "127.0.0.1", "--port",
               str(args.port), "-t", str(args.threads), "-c", str(args.context), "-np", "1", "--temp", "0"]
    if draft:
        command += ["-md", args.draft, "--spec-type", "draft-eagle3", "--spec-draft-n-max", str(args.k),
                    "--spec-draft-p-min", "0", "-td", str(args.threads)]
    log = open(f"{args.out}.{'draft' if draft else 'plain'}.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    answers = []
    try:
        for _ in range(300):
            try:
                if json.load(urllib.request.urlopen(base + "/health", timeout=2)).get("status") == "ok":
                    break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"llama-server exited ({server.returncode}): see {log.name}")
            time.sleep(1)
        for prompt in json.load(open(args.prompts))["prompts"]:
            body = json.dumps({"prompt": prompt, "n_predict": args.max_tokens, "temperature": 0, "top_k": 1,
                               "cache_prompt": False, "return_tokens": True, "samplers": ["top_k"]}).encode()
            request = urllib.request.Request(base + "/completion", body, {"Content-Type": "application/json"})
            answers.append(json.load(urllib.request.urlopen(request, timeout=900)))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the folder of llama.cpp's built binaries")
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    plain = run_server(args, draft=False)
    spec = run_server(args, draft=True)
    tokens_plain = [a.get("tokens") for a in plain]
    tokens_spec = [a.get("tokens") for a in spec]
    drafted = sum(a["timings"].get("draft_n", 0) for a in spec)
    accepted = sum(a["timings"].get("draft_n_accepted", 0) for a in spec)
    predicted = sum(a["timings"]["predicted_n"] for a in spec)
    # Each verification keeps its accepted drafts and one token of its own: steps = tokens - accepted drafts.
    steps = predicted - accepted
    result = {"engine": "llama.cpp", "k": args.k, "prompts": len(plain), "max_tokens": args.max_tokens,
              "plain": tokens_plain, "tokens": tokens_spec,
              "identical_to_plain": sum(a is not None and a == b for a, b in zip(tokens_spec, tokens_plain)),
              "draft_tokens": drafted, "accepted": accepted, "predicted": predicted,
              "acceptance_length": predicted / steps if steps else None,
              "acceptance_rate": accepted / drafted if drafted else None,
              "tokens_per_s_plain": sum(a["timings"]["predicted_n"] for a in plain) /
              sum(a["timings"]["predicted_ms"] / 1e3 for a in plain),
              "tokens_per_s_draft": predicted / sum(a["timings"]["predicted_ms"] / 1e3 for a in spec)}
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({k: v for k, v in result.items() if k not in ("plain", "tokens")}))


if __name__ == "__main__":
    main()
