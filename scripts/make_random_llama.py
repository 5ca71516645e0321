"""A randomly initialized Llama-shaped model saved by transformers (LlamaForCausalLM.save_pretrained), with a
tokenizer copied in: a stand-in for a downloaded Hugging Face folder, for benchmarks where the weights' values do not
matter (decoding speed) and no download is possible.

    python scripts/make_random_llama.py --out llama-100m --tokenizer tok   # ~112M parameters, vocab 32000
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="Folder with tokenizer.json (and tokenizer_config.json naming eos_token) to copy in.")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import transformers

    torch.manual_seed(args.seed)
    config = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.dim, intermediate_size=args.ffn,
                                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                      num_key_value_heads=args.kv_heads, max_position_embeddings=args.context)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (args.tokenizer / name).exists():
            shutil.copy(args.tokenizer / name, args.out / name)
    print(f"wrote {args.out}: LlamaForCausalLM, {model.num_parameters():,} parameters")


if __name__ == "__main__":
    main()
