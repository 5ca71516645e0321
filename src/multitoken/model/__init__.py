"""The model: a shared transformer trunk with n_future one-layer output heads (no training or decoding logic)."""

from multitoken.model.caches import DecodeCaches
from multitoken.model.kv_cache import KVCache
from multitoken.model.mtp import MTPModel, prompt_next_tokens
from multitoken.model.positions import Positions

__all__ = ["DecodeCaches", "KVCache", "MTPModel", "Positions"]
