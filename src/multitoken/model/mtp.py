"""The multi-token prediction model (Gloeckle et al. 2024, section 2): a shared trunk and n_future one-layer heads.

Layout, as in Meta's release so that weights map one to one:

    tok_embeddings -> layers[0 .. n_layer - n_future - 1]  (trunk)  -> z
    head 1 = layers[-1](z),  head i = extra_heads[i - 2](z)  for i = 2..n_future   (every head reads z)
    logits_i = output(norm(head_i))                                                (shared norm and unembedding)

`layers` alone is therefore an ordinary Llama: dropping `extra_heads` leaves a next-token model. The trunk and the
heads can be called separately (`trunk`, `head`, `unembed`): the memory-efficient loss in `training/loss.py` needs
that seam to detach z and run each head's forward and backward in turn.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from multitoken.config import ModelConfig
from multitoken.model.kv_cache import BlockPositions, KVCache
from multitoken.model.layers import RMSNorm, TransformerBlock, rope_cache


class MTPModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        # Trunk layers followed by head 1's layer (Meta's naming: layers = trunk + next-token head).
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_trunk_layers + 1))
        self.extra_heads = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_future - 1))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:  # one Parameter under two names: state_dict lists both, optimizers see it once
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_cache(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @classmethod
    def from_state_dict(cls, config: ModelConfig, state: dict[str, torch.Tensor],
                        device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> MTPModel:
        """A model holding exactly these weights, built without initialising any first (it starts on the meta
        device and takes the tensors as its parameters): loading a 7B model costs its weights, not twice that and a
        random initialisation. dtype None keeps the tensors' own. Tied embeddings need only tok_embeddings.weight."""
        with torch.device("meta"):
            model = cls(config)
        state = dict(state)
        if config.tie_embeddings:
            state.setdefault("output.weight", state.get("tok_embeddings.weight"))
        state = {k: v.to(device=device, dtype=dtype or v.dtype) if v is not None else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        if config.tie_embeddings:  # assign gave each name its own Parameter: tie them again
            model.output.weight = model.tok_embeddings.weight
        model.init_rope(device)
        return model

    def init_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the rotary tables on device: a model built on the meta device (to receive loaded weights
        without initialising them first) has none."""
        cos, sin = rope_cache(self.config, device)
        self.rope_cos, self.rope_sin = cos, sin

    def reset_parameters(self) -> None:
        std = self.config.init_std
        if self.output.weight.is_meta:  # shapes only (parameter counts, or weights about to be assigned)
            return
        for name, p in self.named_parameters():
            if p.dim() < 2:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                # Residual-branch outputs scaled down with depth (GPT-2) so the residual stream starts near unit scale.
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, std=std)

    @property
    def n_future(self) -> int:
        return self.config.n_future

    def head_block(self, i: int) -> TransformerBlock:
        """The transformer layer of head i (0-based here: 0 is the next-token head)."""
        return self.layers[-1] if i == 0 else self.extra_heads[i - 1]

    def rope(self, T: int, start_pos: int | torch.Tensor | BlockPositions | None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for the block: (T, hd/2), or (B, T, hd/2) for per-row start positions."""
        if isinstance(start_pos, BlockPositions):
            # Static decoding may run draft nodes past the context (they are never kept: the caller stops at it);
            # clamping keeps their table lookups in range without a data-dependent check.
            positions = start_pos.positions.clamp_max(self.config.max_seq_len - 1)
            return self.rope_cos[positions], self.rope_sin[positions]
        if isinstance(start_pos, torch.Tensor):  # bounds are the caller's job here: checking would sync the device
            positions = start_pos[:, None] + torch.arange(T, device=start_pos.device)
            return self.rope_cos[positions], self.rope_sin[positions]
        start = start_pos or 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} positions exceeds max_seq_len={self.config.max_seq_len}")
        return self.rope_cos[start:start + T], self.rope_sin[start:start + T]

    def trunk(self, idx: torch.Tensor, start_pos: int | torch.Tensor | BlockPositions | None = None) -> torch.Tensor:
        """Shared trunk: token ids (B, T) -> hidden state z (B, T, d_model)."""
        cos, sin = self.rope(idx.shape[1], start_pos)
        x = self.tok_embeddings(idx)
        for layer in self.layers[:-1]:
            x = layer(x, cos, sin, start_pos)
        return x

    def head(self, i: int, z: torch.Tensor, start_pos: int | torch.Tensor | BlockPositions | None = None) -> torch.Tensor:
        """Head i (0-based) applied to the trunk output z: (B, T, d_model) -> (B, T, d_model), before the norm."""
        cos, sin = self.rope(z.shape[1], start_pos)
        return self.head_block(i)(z, cos, sin, start_pos)

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """Shared final norm and unembedding: (..., d_model) -> (..., V)."""
        return self.output(self.norm(h))

    def forward(self, idx: torch.Tensor, return_all_heads: bool = False,
                start_pos: int | torch.Tensor | BlockPositions | None = None) -> torch.Tensor:
        """Logits (B, T, V) of the next-token head, or (B, T, n_future, V) of all heads.

        start_pos=None computes causally over idx alone. Otherwise it decodes with the KV caches (see `setup_caches`):
        idx is the block of tokens at positions start_pos..start_pos+T-1, where start_pos is an int shared by all
        rows or a (B,) tensor with one start per row; or a `BlockPositions` that says each token's slot, position
        and what it may attend to (static-shape and tree decoding).
        """
        z = self.trunk(idx, start_pos)
        if not return_all_heads:
            return self.unembed(self.head(0, z, start_pos))
        h = torch.stack([self.head(i, z, start_pos) for i in range(self.n_future)], dim=2)  # (B, T, n, d)
        return self.unembed(h)

    def setup_caches(self, batch_size: int, max_seq_len: int | None = None, dtype: torch.dtype | None = None,
                     heads: Literal["all", "next", "none"] = "all") -> None:
        """Allocate KV caches of max_seq_len slots: the trunk's, and the heads' as asked. Each head is a full attention
        layer over all past positions, so each needs its own cache: "all" heads, only the "next"-token head (plain
        decoding), or "none" (the heads run elsewhere, e.g. fused for speculative decoding). A cache may hold more
        slots than the context (scratch room for draft nodes past its end); positions stay within the context."""
        max_seq_len = max_seq_len or self.config.max_seq_len
        dtype = dtype or self.output.weight.dtype
        device = self.output.weight.device
        c = self.config
        blocks = {"all": [*self.layers, *self.extra_heads], "next": list(self.layers), "none": list(self.layers[:-1])}
        for block in blocks[heads]:
            block.attention.kv_cache = KVCache(batch_size, c.kv_heads, max_seq_len, c.head_size, dtype, device)

    def clear_caches(self) -> None:
        for block in [*self.layers, *self.extra_heads]:
            block.attention.kv_cache = None

    def num_params(self) -> dict[str, int]:
        """Parameter counts by part: embeddings (input and unembedding), trunk, heads, norm."""
        count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
        parts = {
            "tok_embeddings": count([self.tok_embeddings]),
            "trunk": count(self.layers[:-1]),
            "heads": count([self.layers[-1], *self.extra_heads]),
            "norm": count([self.norm]),
            "output": 0 if self.config.tie_embeddings else count([self.output]),  # tied: counted once, as input
        }
        parts["total"] = sum(parts.values())
        return parts
