"""Qwen3, the decoder of upstream's emotion-from-text model (QwenEmotion, a Qwen3-0.6B fine-tune), written
for export.

Follows transformers' `Qwen3ForCausalLM` (qwen-emotion.md): token embedding, per layer RMSNorm ->
grouped-query attention (RMSNorm on each query and key head, rotary position embeddings) -> residual,
RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and the vocabulary head, tied to the embedding or not as
the config says. Attribute names equal the `model.safetensors` keys, so the file loads without renaming.

Two forwards over the same weights:
* `forward(ids, positions)`: every position's logits, no cache (the reference the tests compare with
  transformers);
* `decode_shared(...)`: the exported decoder call, attention over shared max-length KV buffers
  (modules/gqa.py, the GPT's machinery) and only the last position's logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, load_strict, read_safetensors
from ..config import QwenConfig, load_qwen_config
from .gqa import shared_kv_attention

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class RMSNorm(nn.Module):
    """Qwen3RMSNorm: x / sqrt(mean(x^2) + eps) in float32, times the weight."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Rotary(nn.Module):
    """transformers' default rope (attention scaling 1): frequency i = theta^(-2i/head_dim), used for both
    halves of a head. cos and sin are tabulated for every position the model has, in float32 as
    transformers computes them, and looked up: ONNX Runtime's own Cos / Sin of large angles drift from
    torch's (1e-4 on the official model's keys at 300 positions), a table is exact. Not in the state dict."""

    def __init__(self, head_dim: int, theta: float, positions: int):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # (hd/2,)
        angles = torch.arange(positions, dtype=torch.int64).float()[:, None] * inv_freq  # (P, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, S) int64 -> cos, sin (B, S, head_dim)."""
        cos, sin = self.cos[positions], self.sin[positions]  # (B, S, hd/2)
        return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, S, heads, hd) rotated by cos, sin (B, S, hd): x * cos + [-x2, x1] * sin."""
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, :, None] + turned * sin[:, :, None]


class Attention(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        d, q_width, kv_width = cfg.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(d, q_width, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(d, kv_width, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(d, kv_width, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(q_width, d, bias=cfg.attention_bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)  # per head, before the rotation
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, S, d), cos / sin (B, S, hd) -> q (B, S, heads, hd), k (B, S, kv_heads, hd) normed and rotated,
        v (B, S, kv_heads, hd)."""
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, S, self.heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(B, S, self.kv_heads, self.head_dim))
        v = self.v_proj(x).view(B, S, self.kv_heads, self.head_dim)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Causal attention over the S tokens of x (B, S, d) alone -> (B, S, d)."""
        B, S, _ = x.shape
        q, k, v = self._qkv(x, cos, sin)
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=2)  # (B, S, heads, hd)
        v = v.repeat_interleave(group, dim=2)
        att = torch.einsum("bshd,bthd->bhst", q, k) * self.head_dim ** -0.5  # (B, heads, S, S)
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = torch.einsum("bhst,bthd->bshd", att, v).reshape(B, S, self.heads * self.head_dim)
        return self.o_proj(y)

    def shared(self, x, cos, sin, k_cache, v_cache, seqlens_k, total_len):
        """The same attention over shared buffers (B, kv_heads, L, hd) holding the earlier tokens."""
        B, S, _ = x.shape
        q, k, v = self._qkv(x, cos, sin)
        y, k_cache, v_cache = shared_kv_attention(q.reshape(B, S, -1), k.reshape(B, S, -1), v.reshape(B, S, -1),
                                                  k_cache, v_cache, seqlens_k, total_len, self.heads, self.kv_heads)
        return self.o_proj(y), k_cache, v_cache


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))

    def shared(self, x, cos, sin, k_cache, v_cache, seqlens_k, total_len):
        a, k_cache, v_cache = self.self_attn.shared(self.input_layernorm(x), cos, sin, k_cache, v_cache,
                                                    seqlens_k, total_len)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), k_cache, v_cache


class Body(nn.Module):
    """transformers' Qwen3Model: `embed_tokens`, `layers.N`, `norm`."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class QwenLM(nn.Module):
    """Qwen3ForCausalLM: `model` (the body) and `lm_head`, which is the embedding when tied."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden (..., d) -> logits (..., V)."""
        weight = self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight
        return F.linear(h, weight)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids, positions (B, S) int64 -> logits (B, S, V) of a causal pass over these tokens alone."""
        x = self.model.embed_tokens(ids)
        cos, sin = self.rotary(positions)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.head(self.model.norm(x))

    def decode_shared(self, ids: torch.Tensor, positions: torch.Tensor, caches: list[torch.Tensor],
                      seqlens_k: torch.Tensor, total_len: torch.Tensor):
        """One decoder call: ids, positions (B, S) int64 appended after the tokens the shared buffers
        hold; caches [k0, v0, k1, ...] each (B, kv_heads, L, hd); seqlens_k int32 (B,) = tokens per row
        after the call - 1; total_len int32 () = their largest + 1.
        -> (logits of each row's last new position (B, V), caches')."""
        x = self.model.embed_tokens(ids)  # (B, S, d)
        cos, sin = self.rotary(positions)  # (B, S, hd) each
        out = []
        for i, layer in enumerate(self.model.layers):
            x, k, v = layer.shared(x, cos, sin, caches[2 * i], caches[2 * i + 1], seqlens_k, total_len)
            out += [k, v]
        return self.head(self.model.norm(x[:, -1])), out


def load_qwen(folder: str | Path) -> QwenLM:
    """The emotion model folder's `model.safetensors` loaded strictly into a QwenLM sized by its
    `config.json` (bf16 / fp16 files are widened to fp32). A tied head's `lm_head.weight`, which some
    saved files still carry, is accepted and ignored, as transformers ties it to the embedding."""
    folder = Path(folder)
    cfg = load_qwen_config(folder / CONFIG_FILE)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; the emotion model folder holds {WEIGHTS_FILE} (sharded "
                              "checkpoints are not supported: merge them into one file)")
    state = {k: v.float() for k, v in read_safetensors(path).items()}
    model = QwenLM(cfg)
    extras = (r"lm_head\.weight",) if cfg.tie_word_embeddings else ()
    load_strict(model, state, path, extras)
    return model.eval()
