"""MaskGCT semantic codec of IndexTTS2: the RepCodec encoder and its one factorized VQ.

A plain re-implementation of upstream's `indextts/utils/maskgct/models/codec/kmeans/repcodec_model.py`
(`RepCodec.quantize`), `kmeans/vocos.py` (`VocosBackbone`, `ConvNeXtBlock`) and
`amphion_codec/quantize/{residual_vq,factorized_vector_quantize}.py` (architecture §2.3). Attribute
names equal the keys of `hf_cache/semantic_codec_model.safetensors`. Only what inference uses is built:

* `quantize(semantic)`: w2v-BERT features -> encoder -> in_project -> nearest codebook row by cosine
  -> (codes, out_project(row)) — the prompt's `S_ref` (architecture §1.2 step 2);
* `vq2emb(codes)`: out_project(codebook[codes]) — the generated codes' features (§1.2 step 7.5).

The file also holds a decoder (same sizes as the encoder) that inference never runs; its keys are
declared in `CODEC_UNUSED_KEYS` and skipped by the loader. The two VQ projections are weight-normed
Conv1d(k=1) upstream (`weight_g` / `weight_v` in the file); we hold the folded `weight`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, fold_weight_norm, load_strict, read_safetensors
from ..config import SemanticCodecConfig

VOCOS_KERNEL = 7  # embed and depthwise convs: kernel 7, "same" padding 3
LAYER_NORM_EPS = 1e-6

# keys of the codec file that inference never reads: RepCodec's decoder (architecture §2.3)
CODEC_UNUSED_KEYS: tuple[str, ...] = (r"decoder\..*",)


class ConvNeXtBlock(nn.Module):
    """x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x))))) on (B, C, T); exact (erf) GELU."""

    def __init__(self, dim: int, intermediate_dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, VOCOS_KERNEL, padding=VOCOS_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1.0))  # layer scale (upstream init 1 / num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))  # (B, T, C)
        return x + (y * self.gamma).transpose(1, 2)  # (B, C, T)


class VocosBackbone(nn.Module):
    """(B, C_in, T) -> (B, T, dim): embed conv, LayerNorm, ConvNeXt blocks, final LayerNorm."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, VOCOS_KERNEL, padding=VOCOS_KERNEL // 2)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)  # (B, dim, T)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))  # (B, T, dim)


class FactorizedVQ(nn.Module):
    """One factorized VQ (upstream `FactorizedVectorQuantize`, use_l2_normlize=True), channel-first."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        # weight-normed Conv1d(k=1) upstream; `weight` here is the folded g * v / ||v||
        self.in_project = nn.Conv1d(input_dim, codebook_dim, 1)
        self.out_project = nn.Conv1d(codebook_dim, input_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e (B, d, T) -> codes int64 (B, T): max cosine similarity to the codebook rows.

        Upstream L2-normalises the encodings and the rows, then takes argmax of the negated squared
        Euclidean distance |e|^2 - 2 e.c + |c|^2, in that order of operations; kept as is so
        near-ties resolve as upstream's do (argmin(dist) == argmax(-dist), first index on ties)."""
        e = F.normalize(z_e.transpose(1, 2), dim=-1)  # (B, T, d)
        c = F.normalize(self.codebook.weight, dim=-1)  # (K, d)
        dist = e.pow(2).sum(-1, keepdim=True) - 2 * (e @ c.t()) + c.pow(2).sum(-1)  # (B, T, K)
        return dist.argmin(dim=-1)  # (B, T)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, input_dim, T) -> (codes int64 (B, T), quantized (B, input_dim, T))."""
        z_e = self.in_project(z)  # (B, d, T)
        codes = self.nearest(z_e)
        z_q = self.codebook(codes).transpose(1, 2)  # (B, d, T): the raw (un-normalised) rows
        # upstream's straight-through z_e + (z_q - z_e): equal to z_q up to float rounding; kept so
        # `quantized` is bit-for-bit upstream's arithmetic
        z_q = z_e + (z_q - z_e)
        return codes, self.out_project(z_q)

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 (B, N) -> (B, input_dim, N) = out_project(codebook[codes])."""
        return self.out_project(self.codebook(codes).transpose(1, 2))


def vocos_stack(cfg: SemanticCodecConfig) -> nn.Sequential:
    """RepCodec's encoder / decoder: [VocosBackbone(hidden -> vocos_dim), Linear(vocos_dim, hidden)], (B, hidden,
    T) -> (B, T, hidden); keys `0.*` and `1.*` under the owner's attribute."""
    return nn.Sequential(
        VocosBackbone(cfg.hidden_size, cfg.vocos_dim, cfg.vocos_intermediate_dim, cfg.vocos_num_layers),
        nn.Linear(cfg.vocos_dim, cfg.hidden_size),
    )


class ResidualVQ(nn.Module):
    """Upstream's `ResidualVQ` container with num_quantizers = 1 (the official codec): keys `quantizers.0.*`.

    With one quantizer the residual loop is a single call and `quantized_out = 0 + z_q` (exact)."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList([FactorizedVQ(input_dim, codebook_size, codebook_dim)])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantizers[0](z)

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizers[0].vq2emb(codes)


class SemanticCodec(nn.Module):
    """RepCodec at inference: `encoder` = [VocosBackbone, Linear(vocos_dim, hidden)] and `quantizer`.

    Upstream's downsample_scale is 1 (no down/up convs) and its decoder is unused (not built)."""

    def __init__(self, cfg: SemanticCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = vocos_stack(cfg)
        self.quantizer = ResidualVQ(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)

    def quantize(self, semantic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream `RepCodec.quantize`.

        semantic : Tensor, shape = (B, T, hidden_size), normalised w2v-BERT layer-17 features
        returns  : codes int64 (B, T), quantized float (B, T, hidden_size)
        (upstream squeezes its stacked (1, B, T) codes to (B, T); for B = 1 it returns (1, T) too)
        """
        h = self.encoder(semantic.transpose(1, 2))  # (B, T, hidden)
        codes, quantized = self.quantizer(h.transpose(1, 2))  # (B, T), (B, hidden, T)
        return codes, quantized.transpose(1, 2)  # (B, T), (B, T, hidden)

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 (B, N) -> (B, N, hidden_size).

        Upstream calls `quantizer.vq2emb(codes.unsqueeze(1))` and transposes; its ResidualVQ indexes
        the quantizer axis on dim 0, which only works for B = 1 (architecture §2.3). Ours is per row."""
        return self.quantizer.vq2emb(codes).transpose(1, 2)


def weight_norm_keys(model: SemanticCodec) -> tuple[str, ...]:
    """Module prefixes whose `weight` is stored as `weight_g` / `weight_v` in the file."""
    return tuple(f"quantizer.quantizers.{i}.{p}" for i in range(len(model.quantizer.quantizers))
                 for p in ("in_project", "out_project"))


def load_codec(path: str | Path, cfg: SemanticCodecConfig) -> SemanticCodec:
    """SemanticCodec from `semantic_codec_model.safetensors` (weight-norm form), strictly, in eval mode.

    Every encoder / quantizer tensor must be present with its shape; decoder keys are ignored
    (`CODEC_UNUSED_KEYS`); anything else is an error naming the file and the key."""
    path = Path(path)
    state = read_safetensors(path)
    model = SemanticCodec(cfg)
    missing = [f"{p}.weight_{s}" for p in weight_norm_keys(model) for s in ("g", "v") if f"{p}.weight_{s}" not in state]
    if missing:
        raise CheckpointError(
            f"{path}: does not match the official layout for this config.yaml: "
            + "; ".join(f"missing tensor '{k}' (weight-norm pair)" for k in missing)
        )
    try:
        state = fold_weight_norm(state)
    except (CheckpointError, RuntimeError) as e:  # an unpaired or mis-shaped weight-norm tensor
        raise CheckpointError(f"{path}: {e}") from e
    load_strict(model, state, path, CODEC_UNUSED_KEYS)
    return model.eval()
