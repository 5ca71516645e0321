"""The sequential draft module: EAGLE-3's layout (Li et al. 2025, arXiv 2503.01840), the draft vLLM, SGLang and
llama.cpp run beside a Llama-family target.

For a position i of the base model, with the token t_{i+1} that follows it:

    f_i = [h_a ; h_b ; h_c]          the inputs of three base layers (`drafter_feature_layers`; 0 = the embeddings)
    g_i = fc(f_i)                    (3d -> d, no bias): the module's state at a verified position
    x   = [input_norm(E t_{i+1}) ; hidden_norm(g_i)]                      (2d: the embedding first)
    r   = g_i + attention(x)         one Llama decoder layer whose q, k, v read 2d; RoPE at position i; causal
    y   = r + mlp(ffn_norm(r))       over the module's own KV cache. y is the "prenorm" state
    logits = output(norm(y))         over the draft vocabulary (the model's `draft_ids`, or every token)

The logits guess t_{i+2}. A further guess chains on the module's own output: at position i + 1 it reads the token
it just guessed in place of t_{i+1} and y in place of g (no fc), and guesses t_{i+3}; and so on. So every guess
after the first knows the ones before it, which the parallel heads (each reading the trunk alone) cannot.

The layer is a Llama layer whatever the base's family (no biases, q/k norms or sandwich norms, SwiGLU, plain
RMSNorm), with the base's attention sizes and rotary base, as the engines expect. It reads the base's token
embedding matrix as it is, unscaled even where the base scales its own input (Gemma): an engine's draft has no
embeddings of its own and looks up the target's table. Parameter names map one to one onto the engines' draft
files (`interop/eagle3.py`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from multitoken.config import ModelConfig
from multitoken.model.layers import Attention, FeedForward, RMSNorm
from multitoken.model.positions import Positions



def llama_layer_config(config: ModelConfig) -> ModelConfig:
    """The drafter's layer: the base's sizes with every other family's switch off (a Llama layer)."""
    return dataclasses.replace(config, qkv_bias=False, qk_norm=False, norm_unit_offset=False, sandwich_norm=False,
                               scale_embeddings=False, activation="silu", attention_scale=None, sliding_window=None,
                               sliding_layers=None, rope_local_theta=None)


class Eagle3Drafter(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.check_drafter()
        llama = llama_layer_config(config)
        d, eps = config.d_model, config.norm_eps
        self.layer_ids = config.drafter_feature_layers
        self.fc = nn.Linear(3 * d, d, bias=False)
        self.input_norm, self.hidden_norm = RMSNorm(d, eps), RMSNorm(d, eps)
        self.attention = Attention(llama, in_dim=2 * d)
        self.ffn_norm = RMSNorm(d, eps)
        self.feed_forward = FeedForward(llama)
        self.norm = RMSNorm(d, eps)
        self.output = nn.Linear(d, config.draft_vocab or config.vocab_size, bias=False)

    def layer_input(self, embedded: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """[input_norm(embedding) ; hidden_norm(state)]: what q, k and v read (B, T, 2d)."""
        return torch.cat([self.input_norm(embedded), self.hidden_norm(state)], dim=-1)

    def finish(self, state: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output y from its residual input (the state) and its attention's output."""
        r = state + attended
        return r + self.feed_forward(self.ffn_norm(r))

    def forward(self, embedded: torch.Tensor, state: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                where: Positions | None = None) -> torch.Tensor:
        """One drafting pass over a block: embedded (B, T, d), the embedding of the token after each position;
        state (B, T, d), fc(features) at verified positions or the previous guess's y. Returns y (B, T, d).
        where None: causal over the block alone (training's first step); else through the attached KV cache."""
        x = self.layer_input(embedded, state)
        return self.finish(state, self.attention(x, cos, sin, where))

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., draft vocabulary)."""
        return self.output(self.norm(y))

    def unrolled(self, embedded: list[torch.Tensor], state: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> list[torch.Tensor]:
        """Training's chain (EAGLE-3's training-time test), every start position at once: y of each step.

        embedded[s] (B, T, d): the token step s reads at each start i (the text's t_{i+1+s}); state (B, T, d): g at
        each position; cos, sin: the rotary tables from position 0, at least T + steps - 1 long. Step s at start i
        sits at position i + s and attends to what decoding's chain from i would have in the cache: the first step's
        keys at positions 0..i (all verified) and its own chain's keys, the steps 1..s at start i (a diagonal).
        The decoding chain with a KV cache is this function's slow twin (tested equal)."""
        a = self.attention
        T = state.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=state.device).tril()
        keys, values, outputs = None, [], []
        chain_k: list[torch.Tensor] = []
        for s, emb in enumerate(embedded):
            q, k, v = a.project(self.layer_input(emb, state), cos[s:s + T], sin[s:s + T])  # (B, H, T, hd)
            k, v = (t.repeat_interleave(a.n_head // a.n_kv_head, dim=1) for t in (k, v))
            scale = a.scale or 1 / math.sqrt(a.head_dim)
            if keys is None:
                keys, first_values = k, v
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                chain_k.append(k)
                values.append(v)
                scores = torch.cat([(q @ keys.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf")),
                                    torch.stack([(q * c).sum(-1) for c in chain_k], dim=-1) * scale], dim=-1)
                p = scores.float().softmax(-1).type_as(q)
                attended = p[..., :T] @ first_values + sum(p[..., T + j, None] * values[j] for j in range(len(values)))
            attended = a.wo(attended.transpose(1, 2).flatten(2))
            state = self.finish(state, attended)
            outputs.append(state)
        return outputs
