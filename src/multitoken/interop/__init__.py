"""Interoperability: models in from Hugging Face folders (Llama, Mistral, Qwen2, Qwen3, Gemma 3), Meta's (multi-token)
folders and GGUF files; out as Hugging Face or Meta folders, and a drafter as the EAGLE-3 draft vLLM and llama.cpp run.

`convert` turns a folder or GGUF file into an ordinary multitoken checkpoint, `export` goes the other way, and
`load_model` reads any of them in one call. Weights stream tensor by tensor, so converting never holds the whole
model in memory. Layout, the rotary permutation and what was measured: docs/interop.md; the engines: docs/engines.md.
"""

from multitoken.interop.load import load_model, load_tokenizer

__all__ = ["load_model", "load_tokenizer"]
