"""Decoding: sampling rules and generation with the KV cache."""

from multitoken.decoding.generate import generate
from multitoken.decoding.sampling import sample

__all__ = ["generate", "sample"]
