"""An independent check of multitoken's GGUF reader on every family: tiny random Hugging Face models written to GGUF
by llama.cpp's own converter (`convert_hf_to_gguf.py`, from the llama-cpp-python sdist), read back by `multitoken
convert`, and compared with the Hugging Face model's logits. The tests write their GGUF files themselves in what
they take to be llama.cpp's layout; this checks that layout against llama.cpp.

    pip download --no-deps --no-binary :all: -d /tmp/lcpp llama-cpp-python && tar xzf /tmp/lcpp/llama_cpp_python-*.tar.gz -C /tmp/lcpp
    python scripts/llama_cpp_gguf_check.py --llama-cpp /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Run inside a child process with llama.cpp's own gguf-py first on the path. Its tokenizer check hashes the
# pre-tokenizer against the Hub models it knows; the test tokenizer is plain byte-level BPE, GPT-2's split.
CONVERT = """
import sys
sys.path[:0] = [{root!r}, {root!r} + "/gguf-py"]
import convert_hf_to_gguf as c
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py", {src!r}, "--outfile", {out!r}, "--outtype", "f32"]
c.main()
"""

FAMILIES = {
    "llama": dict(num_key_value_heads=2),
    "qwen2": dict(num_key_value_heads=2),
    "qwen3": dict(num_key_value_heads=2, head_dim=24),
    "gemma3": dict(num_hidden_layers=7, num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                   query_pre_attn_scalar=256, sliding_window=8),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", required=True, help="llama.cpp's source folder (holds convert_hf_to_gguf.py)")
    parser.add_argument("--json", help="write the measured differences here")
    args = parser.parse_args()

    from multitoken.interop.convert import convert
    from multitoken.checkpoint import load_checkpoint
    from tests.interop.conftest import make_hf_model
    from tests.interop.test_gguf import TEXT, byte_level_bpe

    tokenizer = byte_level_bpe(320)
    results = {}
    for arch, overrides in FAMILIES.items():
        root = Path(tempfile.mkdtemp(prefix=f"{arch}-"))
        hf_model = make_hf_model(root / "hf", arch, vocab_size=tokenizer.get_vocab_size(),
                                 tie_word_embeddings=arch == "gemma3", **overrides)
        tokenizer.save(str(root / "hf" / "tokenizer.json"))
        (root / "hf" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>",
                                                                       "tokenizer_class": "PreTrainedTokenizerFast"}))
        gguf_path = root / f"{arch}.gguf"
        code = CONVERT.format(root=args.llama_cpp, src=str(root / "hf"), out=str(gguf_path))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{arch}: llama.cpp's converter failed:\n{done.stderr[-2000:]}")
            return 1
        convert(gguf_path, root / "mt")
        model = load_checkpoint(root / "mt")[0]
        idx = torch.tensor([tokenizer.encode(TEXT[:400]).ids[:48]] * 2)
        with torch.no_grad():
            diff = (hf_model(idx).logits - model(idx)).abs().max().item()
        results[arch] = diff
        print(f"{arch:8s} llama.cpp GGUF -> multitoken vs Hugging Face: max |logit difference| {diff:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(d < 1e-4 for d in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
