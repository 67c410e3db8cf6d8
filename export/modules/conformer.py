"""Conformer encoder of IndexTTS2's GPT conditioning (`conditioning_encoder`, `emo_conditioning_encoder`).

A plain re-implementation of what upstream's `indextts/gpt/conformer_encoder.py` (a WeNet/ESPnet
descendant) computes at inference, configured as UnifiedVoice builds it: `conv2d2` subsampling,
`rel_pos` encoding, pre-norm layers without macaron FFN, a convolution module with LayerNorm, SiLU
everywhere, no dropout. Attribute names equal the keys of the official `gpt.pth`.

Two upstream facts shape this file:
* the "relative" attention never applies `rel_shift`: its position term is a bias from the absolute
  sinusoid of each key frame (`RelPositionMultiHeadedAttention` below);
* upstream passes the feature size (1024) as every sequence's length (upstream-quirks.md item 3), so
  for prompts up to 1024 input frames every frame is valid and its padding masks are all-true. The
  runtime caps prompts at 15 s = 750 frames, so we compute the unmasked encoder and take no lengths.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConformerConfig


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    """The (1, max_len, d_model) table upstream stores as `embed.pos_enc.pe`.

    pe[0, p, 2i] = sin(p * w_i), pe[0, p, 2i+1] = cos(p * w_i), w_i = exp(-2i * ln(10000) / d_model),
    evaluated in float32 in the same order as upstream so the table matches the checkpoint's buffer
    (checkpoints carry it, so loading overwrites it anyway).
    """
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe[None]  # (1, max_len, d_model)


class RelPositionalEncoding(nn.Module):
    """Scale the input by sqrt(d) and return the first T rows of the sinusoid table beside it.

    Despite the name nothing relative happens here; the table is added as a bias inside attention.
    """

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.register_buffer("pe", sinusoid_table(max_len, d_model), persistent=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # upstream asserts T < max_len (5000 rows = 10 000 input frames); prompts are far shorter.
        pos_emb = self.pe.narrow(1, 0, x.size(1))  # (1, T, d)
        return x * self.xscale, pos_emb


class Conv2dSubsampling2(nn.Module):
    """Halve the frame rate: Conv2d(1, d, 3, stride 2) + ReLU over (time, feature), then Linear.

    The conv maps T frames to (T - 1) // 2 and F features to (F - 1) // 2 (= (F - 3) // 2 + 1);
    the Linear sees all d channels of all those feature bins at once (512 * 511 = 261 632 inputs for
    the official F = 1024).
    """

    def __init__(self, input_size: int, d_model: int, pos_max_len: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, d_model, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(d_model * ((input_size - 1) // 2), d_model))
        self.pos_enc = RelPositionalEncoding(d_model, pos_max_len)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x[:, None])  # (B, d, Tc, Fc)
        B, C, T, Fc = x.shape
        x = x.transpose(1, 2).reshape(B, T, C * Fc)  # (B, Tc, d * Fc), channel-major per frame
        return self.pos_enc(self.out(x))


class RelPositionMultiHeadedAttention(nn.Module):
    """Self-attention with a learned content bias u and a position bias v, as upstream computes it.

    scores = ((q + u) k^T + (q + v) p^T) / sqrt(d_k), with p = linear_pos(pos_emb) split into heads.
    Upstream comments out `rel_shift`, so the second term scores each query against the *absolute*
    sinusoid of each key frame; we reproduce that, not Transformer-XL.
    """

    def __init__(self, n_head: int, d_model: int):
        super().__init__()
        assert d_model % n_head == 0, f"output_size {d_model} is not a multiple of attention_heads {n_head}"
        self.h = n_head
        self.d_k = d_model // n_head
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.linear_q(x).view(B, T, self.h, self.d_k)  # (B, T, h, d_k)
        k = self.linear_k(x).view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        v = self.linear_v(x).view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        p = self.linear_pos(pos_emb).view(1, T, self.h, self.d_k).transpose(1, 2)  # (1, h, T, d_k)
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, h, T, d_k)
        q_v = (q + self.pos_bias_v).transpose(1, 2)  # (B, h, T, d_k)
        scores = (q_u @ k.transpose(-2, -1) + q_v @ p.transpose(-2, -1)) / math.sqrt(self.d_k)  # (B, h, T, T)
        y = scores.softmax(dim=-1) @ v  # (B, h, T, d_k)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, h * d_k)
        return self.linear_out(y)


class ConvolutionModule(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv ("same" padding) -> LayerNorm -> SiLU -> pointwise conv."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        assert kernel_size % 2 == 1, "the symmetric depthwise conv needs an odd kernel"
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(
            channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels
        )
        self.norm = nn.LayerNorm(channels)  # upstream's `use_layer_norm` variant, not BatchNorm
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, C, T)
        x = F.glu(self.pointwise_conv1(x), dim=1)  # (B, C, T)
        x = self.depthwise_conv(x).transpose(1, 2)  # (B, T, C)
        x = F.silu(self.norm(x)).transpose(1, 2)  # (B, C, T)
        return self.pointwise_conv2(x).transpose(1, 2)  # (B, T, C)


class PositionwiseFeedForward(nn.Module):
    """w_2(SiLU(w_1 x))."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, hidden)
        self.w_2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm block: attention, convolution and FFN residuals (FFN scale 1), then norm_final."""

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        d = cfg.output_size
        self.self_attn = RelPositionMultiHeadedAttention(cfg.attention_heads, d)
        self.feed_forward = PositionwiseFeedForward(d, cfg.linear_units)
        self.conv_module = ConvolutionModule(d, cfg.cnn_module_kernel)
        self.norm_ff = nn.LayerNorm(d)
        self.norm_mha = nn.LayerNorm(d)
        self.norm_conv = nn.LayerNorm(d)
        self.norm_final = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb)
        x = x + self.conv_module(self.norm_conv(x))
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    """(B, T, input_size) semantic features -> (B, (T - 1) // 2, output_size) encodings.

    Unmasked on purpose: upstream builds its masks from a length equal to the feature size (1024),
    so every frame of a prompt up to 1024 frames is valid and its masks change nothing. A batch of
    prompts with different lengths would need masks that upstream never applies. T must be at least 3.
    """

    def __init__(self, input_size: int, cfg: ConformerConfig):
        super().__init__()
        self.embed = Conv2dSubsampling2(input_size, cfg.output_size, cfg.pos_max_len)
        self.encoders = nn.ModuleList([ConformerEncoderLayer(cfg) for _ in range(cfg.num_blocks)])
        self.after_norm = nn.LayerNorm(cfg.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x : float32, shape = (B, T, input_size) -> float32, shape = (B, (T - 1) // 2, output_size)"""
        x, pos_emb = self.embed(x)
        for layer in self.encoders:
            x = layer(x, pos_emb)
        return self.after_norm(x)
