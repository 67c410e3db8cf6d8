"""Every ONNX graph of an IndexTTS-2.5 bundle, declared once as data (indextts25 spec §7).

2.5 keeps most of 2.0's graphs unchanged in structure and reuses their specs from graphs.py; it drops
`gpt_speaker_conditioning` (CAMPPlus style feeds the GPT instead), `semantic_codec` (the prompt condition is
the un-quantised w2v-BERT features) and `latent_projector` (no GPT latent pass), and adds `codec_decoder`
(EnhancedCodec.decode: 25 Hz codes -> 50 Hz features), which feeds the length regulator.

    GPT (per segment)    gpt_emotion_vector, gpt_decoder
    prompt (once)        semantic_encoder, campplus, length_regulator
    acoustic (segment)   codec_decoder, length_regulator, dit, bigvgan

`Models.codec` holds the EnhancedCodec (modules/enhanced_codec.py) for a 2.5 checkpoint.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from .config import IndexTTS2Config
from .graphs import (DEFAULT_DECODER, GraphSpec, Models, _ints, _regulator_inputs, acoustic_graphs, decoder_spec,
                     gpt_graphs)
from .policy import ACOUSTIC_SNR_MIN_DB, ExportPolicy, Gate, Precision, Target

# 2.5's target length: int(2N * 1.72 * duration_factor) 50 Hz-derived frames per N codes (indextts25 spec §4)
TARGET_FRAMES_PER_FEATURE = 1.72


class CodecDecoder(nn.Module):
    """Upstream: S_infer = semantic_codec.decode(codes), (B, N) -> (B, 2N, hidden)."""

    def __init__(self, m: Models):
        super().__init__()
        self.codec = m.codec

    def forward(self, codes):
        return self.codec.decode(codes)


def _codes(m: Models, batch: int, n: int, seed: int) -> tuple:
    """codes int64 (batch, n), each in [0, codebook_size)."""
    return (_ints(seed, m.cfg.semantic_codec.codebook_size, batch, n),)


def _target_regulator_inputs(m: Models, batch: int, codes: int, duration_factor: float, seed: int) -> tuple:
    """The length regulator on a target: 2N codec features -> int(2N * 1.72 * duration_factor) frames."""
    frames = 2 * codes
    return _regulator_inputs(m, batch, frames, int(frames * TARGET_FRAMES_PER_FEATURE * duration_factor), seed)


def codec_decoder_spec() -> GraphSpec:
    return GraphSpec(
        name="codec_decoder",
        inputs={"codes": {0: "batch", 1: "codes"}},
        outputs={"features": {0: "batch", 1: "frames"}},  # frames = 2 * codes
        wrapper=CodecDecoder,
        example=lambda m: _codes(m, 2, 12, 0),
        # one code, a few, an odd count, 400 codes (16 s at 25 Hz), and batch 2
        cases=lambda m: [_codes(m, 1, n, n) for n in (1, 5, 37, 400)] + [_codes(m, 2, 23, 3)],
        # 1e-4 like the other float graphs; measured (fp32, random weights, every case): <= 2.2e-6 at the
        # tiny config, <= 1e-5 at official size (spec §4: 1-2e-6 with the legacy exporter)
        atol=1e-4,
        # like latent_projector: the Vocos MatMuls may go INT8, fp16 on CUDA; its features only reach the
        # acoustic side (no code depends on them), so the SNR gate of the acoustic graphs applies
        policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                            defaults={Target.CUDA: Precision.FP16}, gate=Gate("snr_db", ACOUSTIC_SNR_MIN_DB)),
    )


def _length_regulator_25(spec: GraphSpec) -> GraphSpec:
    """2.0's length_regulator spec with 2.5's target lengths added to its parity cases.

    2.5 feeds it two kinds of content of the same `in_channels` width: the prompt's un-quantised w2v-BERT
    features (750 -> 1292 for a 15 s prompt, as 2.0) and a target's 2N codec features stretched to
    int(2N * 1.72 * df). The graph has no frame bound (frames_in, frames_out and `length` are free); 2.5
    reaches 3000 -> int(3000 * 1.72 * 2) = 10320 frames at the 1500-code cap and df = 2.

    The cases stop at 1376 frames out because the fp32 parity error grows with the frame count: GroupNorm
    (1, C) exports as InstanceNormalization over all C x T values, and ONNX Runtime's statistics drift
    from torch's (torch stays within 3e-6 of fp64). Official-size random weights, max |onnx - torch|:
    2.6e-5 at 1292 frames, 7e-5 at 2580, 1.2e-4 at 3440, 2e-4 at 5160, 6.2e-4 at 10320 (outputs up to
    ~4, so ~1.5e-4 relative): past ~2.6k frames the shared 1e-4 atol would fail on numerics alone. Added:
    37 codes at df = 1, 200 codes at df = 2, and 500 codes at df = 0.5 (fewer frames out than in, which
    2.0 never had)."""
    cases_20 = spec.cases

    def cases(m: Models) -> list[tuple]:
        return cases_20(m) + [_target_regulator_inputs(m, 1, 37, 1.0, 37),
                              _target_regulator_inputs(m, 1, 200, 2.0, 200),
                              _target_regulator_inputs(m, 1, 500, 0.5, 500)]

    return dataclasses.replace(spec, cases=cases)


def graphs_25(cfg: IndexTTS2Config, decoder: str = DEFAULT_DECODER) -> tuple[GraphSpec, ...]:
    """The IndexTTS-2.5 graph set, in bundle order. The GPT decoder comes in the `decoder` layout
    (graphs.DECODERS); every graph but codec_decoder is 2.0's spec."""
    gpt = {s.name: s for s in gpt_graphs(cfg, decoder)}
    acoustic = {s.name: s for s in acoustic_graphs(cfg)}
    # dit keeps 2.0's frame bound (3, 16384): 2.5 reaches about 1291 + 3.44 * 1500 * 2 = 11.6k frames
    # (prompt + target at df = 2), still inside it (spec §5); upstream's RoPE table is 16384 long too
    return (
        gpt["gpt_emotion_vector"],
        decoder_spec(cfg, decoder),
        acoustic["semantic_encoder"],
        acoustic["campplus"],
        _length_regulator_25(acoustic["length_regulator"]),
        codec_decoder_spec(),
        acoustic["dit"],
        acoustic["bigvgan"],
    )

