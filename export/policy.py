"""Export policy as data: precisions, targets and failure modes as enums, the gates' thresholds, and
`ExportPolicy`, the part of each `GraphSpec` that says what the graph may be lowered to, what it is asked
for per target and the gate a lowered copy must pass against its fp32 original.

Only the standard library here: graphs.py states every spec's policy with these types without pulling in
ONNX Runtime, precision.py plans and runs the lowering from them, quantize.py measures the gates. The
enums are str-valued, so `--precision`, `--target` and the manifest keep their plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Precision(StrEnum):
    """A graph's number format, as `--precision` and the manifest spell it. Declared lowest first."""

    INT4 = "int4"  # weight-only 4-bit blocks (MatMulNBits) on MatMuls
    INT8 = "int8"  # dynamic INT8, per-channel S8 weights, MatMul only
    FP16 = "fp16"  # fp16 weights and compute
    FP32 = "fp32"  # the export itself, parity-checked against torch


PRECISIONS: tuple[Precision, ...] = tuple(Precision)  # lowest first


class Target(StrEnum):
    """What a bundle is exported for (`--target`), and the device a precision is meant for (`GraphEntry.device`)."""

    ANY = "any"  # every graph fp32: the reference bundle, runs on every provider
    CPU = "cpu"
    CUDA = "cuda"


class OnFail(StrEnum):
    """What a failed gate does (`precision.lower`)."""

    FALLBACK = "fallback"  # try the next higher precision of the target's chain
    ERROR = "error"  # raise PrecisionError (`--strict`)
    KEEP = "keep"  # ship the failed graph with the failure on record (`--keep-failed`: random-weight speed only)


# --- thresholds -------------------------------------------------------------------------------------------

# GPT decoder logits, relative L2 vs fp32: dynamic INT8 measured 1.3 % on GPT-shaped random weights, fp16
# 0.03 %, 4-bit MatMulNBits 8-10 % (ort-notes §3.6, §4.1); 5 % admits INT8/fp16 and rejects 4-bit outright.
DECODER_LOGIT_REL_L2_MAX = 0.05
# 4-bit weights: 8-15 % logit error is their nature (ort-notes §4.1; tiny random GPT 15 %), so the logit bound
# only catches a broken graph and greedy agreement decides.
DECODER_LOGIT_REL_L2_MAX_INT4 = 0.25
# Greedy codes: the converted decoder must reproduce every reference code (first divergence at the end).
# Anything less changes the utterance; INT8 on real weights kept only 26 % (peers.md) at 1 % logit error.
GREEDY_AGREEMENT_MIN = 1.0
# DiT velocity / BigVGAN waveform SNR vs fp32: fp16 BigVGAN measured 40.9 dB, every INT8 variant <= 18 dB
# (ort-notes §4.2); 30 dB sits between them with ~10 dB margin on either side.
ACOUSTIC_SNR_MIN_DB = 30.0
# Encoder embeddings (speaker/emotion/semantic): cosine per batch row. fp16 is ~1 - 1e-6; INT8 encoders
# flipped greedy decoding downstream (peers.md), so only near-identity passes.
ENCODER_COSINE_MIN = 0.999


# --- per graph --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """How close a lowered graph must stay to its fp32 original on the graph's parity cases
    (`quantize.gate_graph`)."""

    metric: str  # "rel_l2" (at most the threshold), "cosine" or "snr_db" (at least): quantize.METRICS
    threshold: float
    outputs: tuple[str, ...] = ()  # the outputs it is measured on; empty: every float output
    thresholds: dict[Precision, float] = field(default_factory=dict)  # another bound for these precisions

    def threshold_for(self, precision: Precision | None) -> float:
        return self.thresholds.get(precision, self.threshold)


@dataclass(frozen=True)
class ExportPolicy:
    """What one graph may ship in and how a lowered copy earns its place. The default is fp32 only."""

    allowed: tuple[Precision, ...] = (Precision.FP32,)  # lowest first, fp32 last
    defaults: dict[Target, Precision] = field(default_factory=dict)  # asked for per target when --precision
    # does not say (missing: fp32; target any is fp32 throughout)
    gate: Gate | None = None  # needed as soon as anything below fp32 is allowed
    probed: bool = False  # its error reaches the GPT's codes: greedy decoding gates it too (precision.GreedyProbe)
    fp32_io: tuple[str, ...] | None = None  # fp16 copies keep these float inputs/outputs fp32 (None: all of them)

    def __post_init__(self):
        assert self.allowed and self.allowed[-1] == Precision.FP32, self.allowed
        assert list(self.allowed) == sorted(self.allowed, key=PRECISIONS.index), self.allowed
        assert Target.ANY not in self.defaults and set(self.defaults.values()) <= set(self.allowed), self.defaults
        assert self.gate is not None or self.allowed == (Precision.FP32,), "a lowered graph needs a gate"

    def default(self, target: Target) -> Precision:
        """The precision asked for on `target` when --precision does not name this graph."""
        return self.defaults.get(target, Precision.FP32)
