"""Peak memory of `multitoken convert` on a ~2 GB random Llama folder: the figure in docs/interop.md.

Writes a random LlamaForCausalLM folder (fp32, written tensor by tensor so that making it needs little memory
either), converts it with the real CLI in a child process (to fp32 and to bf16), exports the result to Meta's format
and converts that too, sampling the child's memory every 10 ms: peak RSS, and its anonymous part (RssAnon: memory
the process allocated; the rest of RSS is file pages it mapped, which the kernel can drop at any time). Then checks
the converted weights against the source, tensor by tensor.

    python scripts/convert_memory.py --out /tmp/convert-memory [--layers 8] [--dim 2048]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


def make_folder(folder: Path, dim: int, layers: int, vocab: int, ffn: int, heads: int, kv_heads: int) -> int:
    from multitoken.interop.tensors import LazyTensor, write_safetensors

    hd = dim // heads
    shapes = {"model.embed_tokens.weight": (vocab, dim), "model.norm.weight": (dim,), "lm_head.weight": (vocab, dim)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (heads * hd, dim), p + "self_attn.k_proj.weight": (kv_heads * hd, dim),
                       p + "self_attn.v_proj.weight": (kv_heads * hd, dim), p + "self_attn.o_proj.weight": (dim, heads * hd),
                       p + "mlp.gate_proj.weight": (ffn, dim), p + "mlp.up_proj.weight": (ffn, dim),
                       p + "mlp.down_proj.weight": (dim, ffn), p + "input_layernorm.weight": (dim,),
                       p + "post_attention_layernorm.weight": (dim,)})
    folder.mkdir(parents=True)
    tensors = {n: LazyTensor(s, torch.float32, lambda s=s: torch.randn(s) * 0.02) for n, s in shapes.items()}
    size = write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": dim,
              "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    return size


def measure(cmd: list[str]) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}

    def sample():
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in peak:
                        peak[key] = max(peak[key], int(value.split()[0]) * 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.01)

    start = time.perf_counter()
    thread = threading.Thread(target=sample)
    thread.start()
    output, _ = proc.communicate()
    thread.join()
    assert proc.returncode == 0, output
    return {"seconds": time.perf_counter() - start, "peak_rss": peak["VmRSS"], "peak_anon": peak["RssAnon"],
            "peak_file": peak["RssFile"], "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--ffn", type=int, default=5632)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    size = make_folder(args.out / "hf", args.dim, args.layers, args.vocab, args.ffn, heads=16, kv_heads=8)
    print(f"random Llama folder: {size / 1e9:.2f} GB ({size // 4 / 1e6:.0f}M fp32 parameters)")
    for dtype in ("float32", "bfloat16"):
        out = args.out / f"mt-{dtype}"
        r = measure([sys.executable, "-m", "multitoken", "convert", str(args.out / "hf"), "--out", str(out),
                     "--dtype", dtype, "--progress", "false", "--tokenizer", "bytes"])
        print(f"convert --dtype {dtype}: {r['seconds']:.1f} s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB "
              f"(anonymous {r['peak_anon'] / 2**20:,.0f} MiB, file-backed {r['peak_file'] / 2**20:,.0f} MiB)")
    from multitoken.interop.export import export

    export(args.out / "mt-float32", "meta", args.out / "meta")  # Meta's consolidated.00.pth of the same model
    r = measure([sys.executable, "-m", "multitoken", "convert", str(args.out / "meta"), "--out",
                 str(args.out / "mt-from-meta"), "--progress", "false"])
    print(f"convert of the Meta folder (consolidated.00.pth, memory-mapped): {r['seconds']:.1f} s, peak RSS "
          f"{r['peak_rss'] / 2**20:,.0f} MiB (anonymous {r['peak_anon'] / 2**20:,.0f} MiB, file-backed "
          f"{r['peak_file'] / 2**20:,.0f} MiB)")
    from multitoken.interop.source import read_model_folder
    from multitoken.interop.tensors import safetensors_tensors

    source = read_model_folder(args.out / "hf", tokenizer="bytes").tensors
    converted = safetensors_tensors(args.out / "mt-float32" / "model.safetensors")
    assert source.keys() == converted.keys()
    assert all(torch.equal(source[n].load(), converted[n].load()) for n in source)
    print(f"checked: all {len(source)} converted tensors equal the source's (q/k rows permuted back)")


if __name__ == "__main__":
    main()
