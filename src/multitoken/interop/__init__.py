"""Interoperability: import Hugging Face Llama-family and Meta (multi-token) checkpoints, export back to both.

`convert` turns a folder in either format into an ordinary multitoken checkpoint, `export` goes the other way, and
`load_model` reads any of the three in one call. Weights stream tensor by tensor, so converting never holds the whole
model in memory. Layout, the rotary permutation and what was measured: docs/interop.md.
"""

from multitoken.interop.load import load_model, load_tokenizer

__all__ = ["load_model", "load_tokenizer"]
