"""IndexTTS-2.5 semantic codec (`codec.pth`): upstream's EnhancedCodec, decode path only.

EnhancedCodec (upstream `indextts/codec/models.py`) is the MaskGCT RepCodec of 2.0 (modules/codec.py) with
downsample_scale = 2: a stride-2 `down` conv before the encoder halves 50 Hz features to 25 Hz codes, and
an `up` path after the decoder doubles them back (indextts25 spec §4). Inference only runs `decode`:

    codes (B, N) -> quantizer.vq2emb -> (B, hidden, N)     raw codebook row, then the out_project 1x1 conv
                 -> decoder          -> (B, N, hidden)     VocosBackbone + Linear(vocos_dim, hidden)
                 -> up               -> (B, 2N, hidden)    nearest x2 along time, Conv1d(hidden, hidden, k3, p1)

Attribute names equal the file's keys: `quantizer.quantizers.0.*`, `decoder.{0,1}.*`, `up.*`. The file
also holds `encoder.*` and `down.*` (the quantize path, dead at inference); they are declared extras
(`ENHANCED_CODEC_UNUSED_KEYS`), accepted and ignored. The quantizer is the 2.0 factorized VQ, so it
carries its `in_project` too (loaded, never run by `decode`). Upstream's loader keeps random init for a
missing or mis-shaped key; ours refuses (`load_enhanced_codec`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, fold_weight_norm, load_strict, read_state_dict
from ..config import SemanticCodecConfig
from .codec import ResidualVQ, vocos_stack

# upstream's class default; the 2.5 config.yaml has no `downsample_scale` key (indextts25 spec §1)
DOWNSAMPLE_SCALE = 2
UP_KERNEL = 3  # `up` = Conv1d(hidden, hidden, 3, stride 1, padding 1): keeps the 2N frames

# keys of codec.pth that `decode` never reads: the encoder and the stride-2 down conv before it
ENHANCED_CODEC_UNUSED_KEYS: tuple[str, ...] = (r"encoder\..*", r"down\..*")
# the file wraps its state dict: {"model": state_dict} (upstream `load_checkpoint`)
CODEC_FILE_WRAPPER = "model"


class EnhancedCodec(nn.Module):
    """`quantizer` (one factorized VQ), `decoder` = [VocosBackbone, Linear(vocos_dim, hidden)], `up`."""

    def __init__(self, cfg: SemanticCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = vocos_stack(cfg)
        self.quantizer = ResidualVQ(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)
        self.up = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, UP_KERNEL, padding=UP_KERNEL // 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Upstream `EnhancedCodec.decode`.

        codes   : int64, shape = (B, N), values in [0, codebook_size): 25 Hz semantic codes
        returns : float, shape = (B, 2N, hidden_size): 50 Hz features for the length regulator

        Upstream lifts (B, N) to (1, B, N) and sums the one quantizer's vq2emb onto 0.0 (exact); ours
        calls the quantizer on (B, N) directly, so every batch size works."""
        x = self.quantizer.vq2emb(codes)  # (B, hidden, N)
        x = self.decoder(x)  # (B, N, hidden)
        x = F.interpolate(x.transpose(1, 2), scale_factor=DOWNSAMPLE_SCALE, mode="nearest")  # (B, hidden, 2N)
        return self.up(x).transpose(1, 2)  # (B, 2N, hidden)


def weight_norm_prefixes(model: EnhancedCodec) -> tuple[str, ...]:
    """Module prefixes whose `weight` is stored as `weight_g` / `weight_v` in the file."""
    return tuple(f"quantizer.quantizers.{i}.{p}" for i in range(len(model.quantizer.quantizers))
                 for p in ("in_project", "out_project"))


def _check_weight_norm_pairs(model: EnhancedCodec, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every weight-norm pair present with torch's dim=0 shapes: v = weight's shape, g = (out, 1, 1).

    Checked on the file's own keys, before folding, so an error names the tensor the file lacks."""
    expected = model.state_dict()
    problems = []
    for prefix in weight_norm_prefixes(model):
        w = tuple(expected[f"{prefix}.weight"].shape)  # (out, in, 1)
        for key, shape in ((f"{prefix}.weight_g", (w[0],) + (1,) * (len(w) - 1)), (f"{prefix}.weight_v", w)):
            if key not in state:
                problems.append(f"missing tensor '{key}' (expected shape {list(shape)}; weight-norm pair)")
            elif tuple(state[key].shape) != shape:
                problems.append(f"tensor '{key}' has shape {list(state[key].shape)}, expected {list(shape)}")
    if problems:
        raise CheckpointError(f"{path}: does not match the official layout for this config.yaml: "
                              + "; ".join(problems))


def load_enhanced_codec(path: str | Path, cfg: SemanticCodecConfig) -> EnhancedCodec:
    """EnhancedCodec from `codec.pth` ({"model": state_dict}, weight-norm form), strictly, in eval mode.

    Every decode-path tensor (quantizer, decoder, up) must be present with its shape; `encoder.*` and
    `down.*` are ignored (`ENHANCED_CODEC_UNUSED_KEYS`); anything else is an error naming the file and
    the key."""
    path = Path(path)
    state = read_state_dict(path, wrapper=CODEC_FILE_WRAPPER)
    model = EnhancedCodec(cfg)
    _check_weight_norm_pairs(model, state, path)
    try:
        state = fold_weight_norm(state)
    except (CheckpointError, RuntimeError) as e:  # an unpaired or mis-shaped pair outside the decode path
        raise CheckpointError(f"{path}: {e}") from e
    load_strict(model, state, path, ENHANCED_CODEC_UNUSED_KEYS)
    return model.eval()
