"""Perceiver resampler of IndexTTS2's GPT conditioning (`perceiver_encoder`, `emo_perceiver_encoder`).

A plain re-implementation of upstream's `indextts/gpt/perceiver.py` (adapted there from lucidrains'
naturalspeech2): a fixed set of learned latents cross-attends to the Conformer output (with the
latents themselves prepended to the context), two layers deep, then an RMSNorm. Attribute names equal
the keys of the official `gpt.pth`. Upstream's padding mask is all-true for the same reason as the
Conformer's (upstream-quirks.md item 3), so none is applied here.

`speaker_conditioner` / `emotion_conditioner` at the bottom build the Conformer + Perceiver pairs the
way UnifiedVoice does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import GPTConfig
from .conformer import ConformerEncoder


class PerceiverAttention(nn.Module):
    """Latents attend to cat(latents, context); bias-free projections, scale dim_head ** -0.5."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, N, _ = latents.shape
        context = torch.cat((latents, context), dim=1)  # (B, N + T, dim): cross_attn_include_queries
        S = context.size(1)
        q = self.to_q(latents).view(B, N, self.heads, -1).transpose(1, 2)  # (B, h, N, dh)
        k, v = self.to_kv(context).chunk(2, dim=-1)  # 2 x (B, S, h * dh)
        k = k.reshape(B, S, self.heads, -1).transpose(1, 2)  # (B, h, S, dh)
        v = v.reshape(B, S, self.heads, -1).transpose(1, 2)  # (B, h, S, dh)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, h, N, S)
        y = (attn @ v).transpose(1, 2).reshape(B, N, -1)  # (B, N, h * dh)
        return self.to_out(y)


class GEGLU(nn.Module):
    """Split the last dim in (x, gate) halves and return gelu(gate) * x (exact erf GELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Linear(dim, 2 * inner) -> GEGLU -> Linear(inner, dim), inner = int(dim * mult * 2 / 3).

    A Sequential so the keys are `.0` and `.2`, as upstream's. Official: 1280 -> 3412 / 1706 (speaker),
    1024 -> 2730 / 1365 (emotion).
    """
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(nn.Linear(dim, 2 * inner), GEGLU(), nn.Linear(inner, dim))


class RMSNorm(nn.Module):
    """F.normalize(x) * sqrt(dim) * gamma: unit rows rescaled, no mean removal, no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class PerceiverResampler(nn.Module):
    """(B, T, dim_context) encodings -> (B, num_latents, dim) latents.

    `proj_context` is a Linear only when dim_context != dim; upstream uses an Identity (no keys)
    otherwise, and so do we.
    """

    def __init__(
        self,
        dim: int,
        dim_context: int,
        num_latents: int,
        heads: int,
        ff_mult: int,
        depth: int = 2,
        dim_head: int = 64,
    ):
        super().__init__()
        self.proj_context = nn.Linear(dim_context, dim) if dim_context != dim else nn.Identity()
        self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : float32, shape = (B, T, dim_context) -> float32, shape = (B, num_latents, dim)"""
        x = self.proj_context(x)  # (B, T, dim)
        latents = self.latents.expand(x.size(0), -1, -1)  # (B, N, dim)
        for attn, ff in self.layers:
            latents = attn(latents, x) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


def speaker_conditioner(gpt: GPTConfig) -> tuple[ConformerEncoder, PerceiverResampler]:
    """UnifiedVoice's `conditioning_encoder` and `perceiver_encoder` (speaker prompt -> 32 latents)."""
    cond = gpt.condition_module
    encoder = ConformerEncoder(gpt.semantic_dim, cond)
    perceiver = PerceiverResampler(
        gpt.model_dim,
        dim_context=cond.output_size,
        num_latents=gpt.condition_num_latent,
        heads=cond.attention_heads,
        ff_mult=cond.perceiver_mult,
    )
    return encoder, perceiver


def emotion_conditioner(gpt: GPTConfig) -> tuple[ConformerEncoder, PerceiverResampler]:
    """UnifiedVoice's `emo_conditioning_encoder` and `emo_perceiver_encoder` (emotion prompt -> 1 latent).

    Upstream hard-codes the latent width 1024, which equals the semantic feature width; we read it
    from `gpt.semantic_dim` (also the input width of `emovec_layer`).
    """
    cond = gpt.emo_condition_module
    encoder = ConformerEncoder(gpt.semantic_dim, cond)
    perceiver = PerceiverResampler(
        gpt.semantic_dim,
        dim_context=cond.output_size,
        num_latents=1,
        heads=cond.attention_heads,
        ff_mult=cond.perceiver_mult,
    )
    return encoder, perceiver
