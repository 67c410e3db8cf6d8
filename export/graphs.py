"""The ONNX graphs of the GPT slice, declared once as data.

Each `GraphSpec` names its inputs and outputs with their dynamic axes, builds the thin wrapper module
whose `forward` takes and returns flat named tensors, gives a trace example and the sizes its parity
check runs at, and states its tolerance. Graph and I/O names exist only here and in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import GPTConfig
from .modules.gpt import UnifiedVoice

Axes = dict[int, str]


def kv_names(prefix: str, layers: int) -> list[str]:
    """Per-layer cache names in graph order: {prefix}_key_0, {prefix}_value_0, {prefix}_key_1, ..."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


class SpeakerConditioning(nn.Module):
    def __init__(self, gpt: UnifiedVoice):
        super().__init__()
        self.gpt = gpt

    def forward(self, semantic):
        return self.gpt.speaker_latent(semantic)


class EmotionVector(nn.Module):
    def __init__(self, gpt: UnifiedVoice):
        super().__init__()
        self.gpt = gpt

    def forward(self, semantic):
        return self.gpt.emotion_vector(semantic)


class Decoder(nn.Module):
    """GPT body + final_norm + mel head with an explicit KV cache (prefill, steps and latent pass)."""

    def __init__(self, gpt: UnifiedVoice):
        super().__init__()
        self.gpt = gpt

    def forward(self, inputs_embeds, *past):
        logits, hidden, presents = self.gpt.decode(inputs_embeds, list(past))
        return (logits, hidden, *presents)


@dataclass(frozen=True)
class GraphSpec:
    name: str  # file stem and manifest key
    inputs: dict[str, Axes]  # name -> {axis: symbol}; graph input order
    outputs: dict[str, Axes]  # name -> {axis: symbol}; graph output order
    wrapper: Callable[[UnifiedVoice], nn.Module]
    example: Callable[[GPTConfig], tuple]  # trace inputs (non-degenerate sizes)
    cases: Callable[[GPTConfig], list[tuple]]  # parity inputs at several dynamic sizes
    atol: float  # max |onnx - torch| allowed in fp32 on CPU
    rtol: float = 0.0

    def dynamic_shapes(self) -> tuple:
        """torch.onnx's nested form: varargs (the KV cache) become one inner tuple."""
        axes = list(self.inputs.values())
        if self.name != "gpt_decoder":
            return tuple(axes)
        return (axes[0], tuple(axes[1:]))


def _semantic(cfg: GPTConfig, batch: int, frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, cfg.semantic_dim, generator=g)


def _decoder_inputs(cfg: GPTConfig, batch: int, seq: int, past: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, cfg.model_dim, generator=g)
    kv = [torch.randn(batch, cfg.heads, past, cfg.head_dim, generator=g) for _ in range(2 * cfg.layers)]
    return (x, *kv)


def _decoder_io(layers: int) -> tuple[dict, dict]:
    kv_in = {n: {0: "batch", 2: "past_seq"} for n in kv_names("past", layers)}
    kv_out = {n: {0: "batch", 2: "total_seq"} for n in kv_names("present", layers)}
    inputs = {"inputs_embeds": {0: "batch", 1: "seq"}, **kv_in}
    outputs = {"logits": {0: "batch"}, "hidden_states": {0: "batch", 1: "seq"}, **kv_out}
    return inputs, outputs


def gpt_graphs(cfg: GPTConfig) -> tuple[GraphSpec, ...]:
    """The three GPT graphs. Semantic frame counts stay <= 1024 (quirk 3: no padding mask upstream)."""
    dec_in, dec_out = _decoder_io(cfg.layers)
    return (
        GraphSpec(
            name="gpt_speaker_conditioning",
            inputs={"semantic": {0: "batch", 1: "frames"}},
            outputs={"speaker_latent": {0: "batch"}},
            wrapper=SpeakerConditioning,
            example=lambda c: (_semantic(c, 2, 40, 0),),
            cases=lambda c: [(_semantic(c, 1, t, t),) for t in (5, 38, 151, 750)] + [(_semantic(c, 2, 17, 1),)],
            atol=1e-4,
        ),
        GraphSpec(
            name="gpt_emotion_vector",
            inputs={"semantic": {0: "batch", 1: "frames"}},
            outputs={"emotion_vector": {0: "batch"}},
            wrapper=EmotionVector,
            example=lambda c: (_semantic(c, 2, 40, 0),),
            cases=lambda c: [(_semantic(c, 1, t, t),) for t in (5, 38, 151, 750)] + [(_semantic(c, 2, 17, 1),)],
            atol=1e-4,
        ),
        GraphSpec(
            name="gpt_decoder",
            inputs=dec_in,
            outputs=dec_out,
            wrapper=Decoder,
            example=lambda c: _decoder_inputs(c, 2, 3, 4, 0),
            # prefill (past 0), single steps for 1 and 3 beams, a long latent-pass-like call
            cases=lambda c: [
                _decoder_inputs(c, 1, 40, 0, 1),
                _decoder_inputs(c, 3, 1, 57, 2),
                _decoder_inputs(c, 1, 1, 1, 3),
                _decoder_inputs(c, 2, 5, 9, 4),
                _decoder_inputs(c, 1, 300, 0, 5),
            ],
            atol=1e-4,
        ),
    )
