"""The model: a shared transformer trunk with n_future one-layer output heads (no training or decoding logic)."""

from multitoken.model.kv_cache import BlockPositions, KVCache
from multitoken.model.mtp import MTPModel

__all__ = ["BlockPositions", "KVCache", "MTPModel"]
