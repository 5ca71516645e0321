"""The multi-token prediction model (Gloeckle et al. 2024, section 2): a shared trunk and n_future one-layer heads.

Layout, as in Meta's release so that weights map one to one:

    tok_embeddings -> layers[0 .. n_layer - n_future - 1]  (trunk)  -> z
    head 1 = layers[-1](z),  head i = extra_heads[i - 2](z)  for i = 2..n_future   (every head reads z)
    logits_i = output(norm(head_i))                                                (shared norm and unembedding)

With `draft_vocab` the extra heads' logits cover only the tokens in `draft_ids` (a persistent buffer): a draft's
unembedding reads those rows alone. Head 1, which decides every output token, always covers the whole vocabulary.

With `heads_read_next_token` each extra head's input is z plus a projection of the embedded token that follows
its position (`next_token_proj`): head i then predicts t+i knowing t+1. Training gives it the text's next token;
decoding gives it head 1's choice (`follow_tokens`), which is the text's next token wherever decoding keeps it.

With `drafter` the model also holds a sequential draft module (`drafter.py`, EAGLE-3's layout) that reads three of
the base layers' inputs (`trunk_features`); it is not part of any head and changes nothing the heads compute.

`layers` alone is therefore an ordinary Llama: dropping `extra_heads` leaves a next-token model. The trunk and the
heads can be called separately (`trunk`, `head`, `unembed`): the memory-efficient loss in `training/loss.py` needs
that seam to detach z and run each head's forward and backward in turn.
"""

from __future__ import annotations

import math
import torch
from torch import nn
import torch.nn.functional as F

from multitoken.config import ModelConfig
from multitoken.model.drafter import Eagle3Drafter
from multitoken.model.positions import Positions
from multitoken.model.layers import RMSNorm, TransformerBlock, rope_cache


def prompt_next_tokens(idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The token after each position of right-padded token rows (B, T): the row's own, and -1 (head 1 chooses it)
    after each row's last (lengths (B,); None: every row is full). What the extra heads of a
    `heads_read_next_token` model read over a text or a prompt."""
    following = F.pad(idx[:, 1:], (0, 1), value=-1)
    return following if lengths is None else following.scatter(1, (lengths - 1)[:, None], -1)


class MTPModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        # Trunk layers followed by head 1's layer (Meta's naming: layers = trunk + next-token head).
        self.layers = nn.ModuleList(TransformerBlock(config, config.window_of(i))
                                    for i in range(config.n_trunk_layers + 1))
        head_window = config.window_of(config.n_trunk_layers)  # extra heads are head 1's kind of layer
        self.extra_heads = nn.ModuleList(TransformerBlock(config, head_window) for _ in range(config.n_future - 1))
        if config.heads_read_next_token:
            self.next_token_proj = nn.ModuleList(nn.Linear(config.d_model, config.d_model, bias=False)
                                                 for _ in range(config.n_future - 1))
        self.norm = RMSNorm(config.d_model, config.norm_eps, config.norm_unit_offset)
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:  # one Parameter under two names: state_dict lists both, optimizers see it once
            self.output.weight = self.tok_embeddings.weight
        if config.draft_vocab:  # sorted token ids; training fills them from its data (`training/draft_vocab.py`)
            self.register_buffer("draft_ids", torch.arange(config.draft_vocab))
        if config.drafter != "none":
            self.drafter = Eagle3Drafter(config)
        self.init_rope()
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
        cast = lambda v: (dtype or v.dtype) if v.is_floating_point() else v.dtype  # noqa: E731 (token ids stay ints)
        state = {k: v if v is None else v.to(device=device, dtype=cast(v)) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        if config.tie_embeddings:  # assign gave each name its own Parameter: tie them again
            model.output.weight = model.tok_embeddings.weight
        model.init_rope(device)
        return model

    def init_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the rotary tables on device: a model built on the meta device (to receive loaded weights
        without initialising them first) has none."""
        cos, sin = rope_cache(self.config, device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if self.config.rope_local_theta is not None:  # the window layers' own tables (Gemma 3)
            cos, sin = rope_cache(self.config, device, local=True)
            self.register_buffer("rope_local_cos", cos, persistent=False)
            self.register_buffer("rope_local_sin", sin, persistent=False)

    def reset_parameters(self) -> None:
        std = self.config.init_std
        if self.output.weight.is_meta:  # shapes only (parameter counts, or weights about to be assigned)
            return
        for name, p in self.named_parameters():
            if name.endswith("bias") or name.startswith("next_token_proj."):
                # A zero projection: heads that start out reading z alone, as the parallel heads they may come from.
                nn.init.zeros_(p)
            elif p.dim() < 2:  # norm gains: 1, or an offset of 0 from it (the drafter's Llama norms: 1)
                offset = self.config.norm_unit_offset and not name.startswith("drafter.")
                nn.init.zeros_(p) if offset else nn.init.ones_(p)
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

    def rope(self, T: int, where: Positions | None, window: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for a block of T tokens: (T, hd/2), or (B, T, hd/2) for rows at their own positions. window: the
        attention window of the layer they are for (window layers may have their own rotary base)."""
        local = window is not None and self.config.rope_local_theta is not None
        tables = (self.rope_local_cos, self.rope_local_sin) if local else (self.rope_cos, self.rope_sin)
        return (where or Positions.aligned(0, T)).rope(*tables)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(idx)
        if self.config.scale_embeddings:  # Gemma: the scale rounded to the weights' dtype first, as it was trained
            x = x * torch.tensor(self.config.d_model ** 0.5, dtype=torch.float32).to(x.dtype)
        return x

    def trunk(self, idx: torch.Tensor, where: Positions | None = None) -> torch.Tensor:
        """Shared trunk: token ids (B, T) -> hidden state z (B, T, d_model)."""
        return self._run_trunk(idx, where, ())[0]

    def trunk_features(self, idx: torch.Tensor, where: Positions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's output z (B, T, d) and the drafter's features (B, T, 3d): the inputs of its three base layers,
        concatenated in the listed order (every id is below the base's layer count, so all are trunk states)."""
        z, captured = self._run_trunk(idx, where, self.config.drafter_feature_layers)
        return z, torch.cat(captured, dim=-1)

    def _run_trunk(self, idx: torch.Tensor, where: Positions | None,
                   capture: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        T = idx.shape[1]
        tables = {w: self.rope(T, where, w) for w in {layer.window for layer in self.layers[:-1]}}
        x = self.embed(idx)
        inputs = {}
        for j, layer in enumerate(self.layers[:-1]):
            if j in capture:
                inputs[j] = x
            x = layer(x, *tables[layer.window], where)
        inputs[len(self.layers) - 1] = x  # the trunk's output is head 1's layer's input
        return x, [inputs[j] for j in capture]

    def drafter_states(self, features: torch.Tensor, reads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The drafter's chain from every position at once, on given tokens (`Eagle3Drafter.unrolled`): features
        (B, T, 3d) from `trunk_features`, reads[s] (B, T) the token step s reads at each start (the text's t_{i+1+s}
        in training). Returns each step's y (B, T, d)."""
        T, steps = features.shape[1], len(reads)
        positions = torch.arange(T + steps - 1, device=features.device).clamp_max(self.config.max_seq_len - 1)
        # The drafter's layer is a Llama layer: the base's global rotary tables (never a window layer's).
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        return self.drafter.unrolled([self.tok_embeddings(r) for r in reads], self.drafter.fc(features), cos, sin)

    def drafter_ids(self) -> torch.Tensor:
        """The token id of each of the drafter's outputs: the draft vocabulary, or every token."""
        return self.draft_ids if self.config.draft_vocab else torch.arange(self.config.vocab_size,
                                                                            device=self.output.weight.device)

    def head(self, i: int, z: torch.Tensor, where: Positions | None = None,
             next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Head i (0-based) applied to the trunk output z: (B, T, d_model) -> (B, T, d_model), before the norm.
        next_tokens (B, T): the token after each position, which an extra head of a `heads_read_next_token` model
        reads (required there, ignored elsewhere)."""
        block = self.head_block(i)
        cos, sin = self.rope(z.shape[1], where, block.window)
        return block(self.head_input(i, z, next_tokens), cos, sin, where)

    def head_input(self, i: int, z: torch.Tensor, next_tokens: torch.Tensor | None) -> torch.Tensor:
        """What head i reads: z, plus for an extra head of a `heads_read_next_token` model its projection of the
        next token's embedding. The embedding is read, not trained, through this path: it belongs to the base model,
        which `--freeze base` keeps exactly as it was; the projection learns instead."""
        if i == 0 or not self.config.heads_read_next_token:
            return z
        if next_tokens is None:
            raise ValueError("this model's extra heads read the token after each position: pass next_tokens")
        return z + self.next_token_proj[i - 1](self.embed(next_tokens).detach())

    def follow_tokens(self, next_tokens: torch.Tensor, head1_logits: torch.Tensor) -> torch.Tensor:
        """next_tokens (B, T) with every -1 replaced by head 1's choice there (argmax of head1_logits (B, T, V))."""
        return torch.where(next_tokens < 0, head1_logits.argmax(-1), next_tokens)

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """Shared final norm and unembedding: (..., d_model) -> (..., V)."""
        return self.output(self.norm(h))

    def unembed_drafts(self, h: torch.Tensor) -> torch.Tensor:
        """An extra head's logits (..., V): `unembed`, or with a draft vocabulary its tokens' logits alone and -inf
        elsewhere, so that argmax, top-k and softmax see only those tokens (an (..., V) fill is cheap next to
        reading the unembedding's other rows)."""
        if not self.config.draft_vocab:
            return self.unembed(h)
        small = F.linear(self.norm(h), self.output.weight.index_select(0, self.draft_ids))
        full = small.new_full((*small.shape[:-1], self.config.vocab_size), float("-inf"))
        return full.index_copy(-1, self.draft_ids, small)

    def unembed_heads(self, h: torch.Tensor) -> torch.Tensor:
        """Every head's logits from their hidden states (..., n, d) -> (..., n, V), head 1 first: head 1 over the
        whole vocabulary, the others through `unembed_drafts`."""
        if not self.config.draft_vocab or h.shape[-2] == 1:
            return self.unembed(h)
        return torch.cat([self.unembed(h[..., :1, :]), self.unembed_drafts(h[..., 1:, :])], dim=-2)

    def forward(self, idx: torch.Tensor, return_all_heads: bool = False,
                where: Positions | None = None, next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) of the next-token head, or (B, T, n_future, V) of all heads (`unembed_heads`: the
        extra heads over their draft vocabulary, if the model has one).

        where=None computes causally over idx alone (training). Otherwise it decodes with the KV caches attached by
        a `DecodeCaches`: `where` says each token's cache slot, position and what it may attend to.
        next_tokens (B, T), for a `heads_read_next_token` model: the token after each position, -1 where head 1's
        choice goes (a block of drafts: all -1). None: idx's own next tokens, head 1's choice after the last.
        """
        z = self.trunk(idx, where)
        if not return_all_heads:
            return self.unembed(self.head(0, z, where))
        if not self.config.heads_read_next_token:
            h = torch.stack([self.head(i, z, where) for i in range(self.n_future)], dim=2)  # (B, T, n, d)
            return self.unembed_heads(h)
        first = self.unembed(self.head(0, z, where))  # (B, T, V): the extra heads read its choices
        if next_tokens is None:
            next_tokens = prompt_next_tokens(idx)
        following = self.follow_tokens(next_tokens, first)
        extra = [self.head(i, z, where, following) for i in range(1, self.n_future)]
        if not extra:
            return first[:, :, None]
        return torch.cat([first[:, :, None], self.unembed_drafts(torch.stack(extra, dim=2))], dim=2)

    def num_params(self) -> dict[str, int]:
        """Parameter counts by part: embeddings (input and unembedding), trunk, heads, norm."""
        count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
        parts = {
            "tok_embeddings": count([self.tok_embeddings]),
            "trunk": count(self.layers[:-1]),
            "heads": count([self.layers[-1], *self.extra_heads, *getattr(self, "next_token_proj", [])]),
            "norm": count([self.norm]),
            "drafter": count([getattr(self, "drafter", nn.Identity())]),
            "output": 0 if self.config.tie_embeddings else count([self.output]),  # tied: counted once, as input
        }
        parts["total"] = sum(parts.values())
        return parts
