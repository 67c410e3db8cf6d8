"""Every ONNX graph of a bundle, declared once as data.

Each `GraphSpec` names its inputs and outputs with their dynamic axes, builds the thin wrapper module
whose `forward` takes and returns flat named tensors, gives a trace example and the sizes its parity
check runs at, and states its tolerance and its export policy (what it may be lowered to, per target, behind
which gate: policy.py). Graph and I/O names exist only here and in the manifest.

    GPT (per segment)    gpt_speaker_conditioning, gpt_emotion_vector, gpt_decoder
    prompt (once)        semantic_encoder, semantic_codec, campplus, length_regulator
    acoustic (segment)   latent_projector, length_regulator, dit, bigvgan
    emotion from text    qwen_emotion (where the checkpoint has the model: `emotion_text_graph`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.export import Dim

from ..runtime.kv_cache import LEGACY_ROLES, cache_names
from .config import IndexTTS2Config, QwenConfig
from .modules import gqa
from .policy import (ACOUSTIC_SNR_MIN_DB, DECODER_LOGIT_REL_L2_MAX, DECODER_LOGIT_REL_L2_MAX_INT4, ENCODER_COSINE_MIN,
                     ExportPolicy, Gate, Precision, Target)

Axes = dict[int, str]


@dataclass
class Models:
    """The torch modules of one checkpoint that the graphs wrap (None: not loaded)."""

    cfg: IndexTTS2Config
    gpt: nn.Module | None = None
    semantic_encoder: nn.Module | None = None
    codec: nn.Module | None = None
    campplus: nn.Module | None = None
    gpt_layer: nn.Module | None = None
    length_regulator: nn.Module | None = None
    dit: nn.Module | None = None
    bigvgan: nn.Module | None = None
    qwen: nn.Module | None = None  # the emotion-from-text model (modules/qwen3.QwenLM)


# The decoder's KV-cache name patterns by role; the manifest records them (graphs["gpt_decoder"].kv_cache)
KV_CACHE = {"past": "past_{kind}_{layer}", "present": "present_{kind}_{layer}"}


# The decoder's other I/O by role (manifest roles). The shared-buffer decoder adds the mel codes it embeds
# itself and GroupQueryAttention's lengths: seqlens_k (rows,) int32 = tokens per row after the call - 1,
# total_sequence_length () int32 = their maximum + 1.
DECODER_ROLES = dict(LEGACY_ROLES)  # the names every concat decoder has had
SHARED_DECODER_ROLES = {**DECODER_ROLES, "codes": "mel_codes", "positions": "mel_positions",
                        "seqlens_k": "seqlens_k", "total_length": "total_sequence_length"}
# KV-cache layouts: "concat" returns past + new as presents (P + S); "shared" reads and writes one max-length
# buffer per layer that the runtime binds as both past and present.
DECODERS = ("concat", "shared")
DEFAULT_DECODER = "shared"
SHARED_KV_CACHE = {**KV_CACHE, "layout": "shared"}


def kv_names(role: str, layers: int) -> list[str]:
    """The decoder's cache names for `role` ("past" or "present") in graph order: past_key_0, past_value_0,
    past_key_1, ... (runtime.kv_cache.cache_names, which the runtime expands the manifest's patterns with)."""
    return cache_names(KV_CACHE[role], layers)


# --- wrappers: flat tensors in, flat tensors out ------------------------------------------------------


class SpeakerConditioning(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.gpt = m.gpt

    def forward(self, semantic):
        return self.gpt.speaker_latent(semantic)


class EmotionVector(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.gpt = m.gpt

    def forward(self, semantic):
        return self.gpt.emotion_vector(semantic)


class Decoder(nn.Module):
    """GPT body + final_norm + mel head with an explicit KV cache (prefill, steps and latent pass)."""

    def __init__(self, m: Models):
        super().__init__()
        self.gpt = m.gpt

    def forward(self, inputs_embeds, *past):
        logits, hidden, presents = self.gpt.decode(inputs_embeds, list(past))
        return (logits, hidden, *presents)


class SharedDecoder(nn.Module):
    """The second-generation decoder (modules/gqa.py): GroupQueryAttention over shared max-length KV
    buffers, mel codes embedded in the graph."""

    def __init__(self, m: Models):
        super().__init__()
        self.gpt = m.gpt

    def forward(self, inputs_embeds, mel_codes, mel_positions, seqlens_k, total_sequence_length, *caches):
        logits, hidden, caches = self.gpt.decode_shared(inputs_embeds, mel_codes, mel_positions, list(caches),
                                                        seqlens_k, total_sequence_length)
        return (logits, hidden, *caches)


class EmotionTextDecoder(nn.Module):
    """The emotion model's Qwen3 decoder call (modules/qwen3.py) over shared KV buffers."""

    def __init__(self, m: Models):
        super().__init__()
        self.qwen = m.qwen

    def forward(self, input_ids, position_ids, seqlens_k, total_sequence_length, *caches):
        logits, caches = self.qwen.decode_shared(input_ids, position_ids, list(caches), seqlens_k,
                                                 total_sequence_length)
        return (logits, *caches)


class SemanticEncoder(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.encoder = m.semantic_encoder

    def forward(self, input_features, attention_mask):
        return self.encoder(input_features, attention_mask)


class CodecQuantize(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.codec = m.codec

    def forward(self, semantic):
        codes, quantized = self.codec.quantize(semantic)
        return codes, quantized


class Campplus(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.campplus = m.campplus

    def forward(self, fbank):
        return self.campplus(fbank)


class LatentProjector(nn.Module):
    """Upstream: S_infer = vq2emb(codes) + gpt_layer(latent)."""

    def __init__(self, m: Models):
        super().__init__()
        self.gpt_layer, self.codec = m.gpt_layer, m.codec

    def forward(self, latent, codes):
        return self.codec.vq2emb(codes) + self.gpt_layer(latent)


class LengthRegulator(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.regulator = m.length_regulator

    def forward(self, content, length):
        return self.regulator(content, length)


class Estimator(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.dit = m.dit

    def forward(self, x, prompt_x, x_lens, t, style, cond):
        return self.dit(x, prompt_x, x_lens, t, style, cond)


class Vocoder(nn.Module):
    def __init__(self, m: Models):
        super().__init__()
        self.bigvgan = m.bigvgan

    def forward(self, mel):
        return self.bigvgan(mel).squeeze(1)  # (B, samples)


# --- specs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSpec:
    name: str  # file stem and manifest key
    inputs: dict[str, Axes]  # name -> {axis: symbol}; graph input order
    outputs: dict[str, Axes]  # name -> {axis: symbol}; graph output order (documentation for outputs)
    wrapper: Callable[[Models], nn.Module]
    example: Callable[[Models], tuple]  # trace inputs (non-degenerate sizes)
    cases: Callable[[Models], list[tuple]]  # parity inputs at several dynamic sizes
    atol: float  # max |onnx - torch| allowed in fp32 on CPU (exact for integer outputs)
    policy: ExportPolicy = field(default_factory=ExportPolicy)  # lower precisions and their gate (fp32 only)
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> (min, max) where needed
    varargs: int = 0  # > 0: inputs after the first `varargs` are one *args tuple (the KV cache)
    kv_cache: dict[str, str] = field(default_factory=dict)  # role -> name pattern of a KV cache (manifest kv_cache)
    roles: dict[str, str] = field(default_factory=dict)  # role -> I/O name the runtime addresses it by (manifest roles)
    translations: Callable[[], dict] | None = None  # custom ops -> ONNX (torch.onnx custom_translation_table)

    def dynamic_shapes(self) -> tuple:
        """torch.onnx's form: {axis: name} per input, a named Dim where a symbol has bounds."""
        dims = {s: Dim(s, min=lo, max=hi) for s, (lo, hi) in self.bounds.items()}
        axes = [{a: dims.get(s, s) for a, s in ax.items()} or None for ax in self.inputs.values()]
        n = self.varargs
        return (*axes[:n], tuple(axes[n:])) if n else tuple(axes)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _ints(seed: int, high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_gen(seed))


def _semantic(m: Models, batch: int, frames: int, seed: int) -> tuple:
    return (_randn(seed, batch, frames, m.cfg.gpt.semantic_dim),)


def _decoder_inputs(m: Models, batch: int, seq: int, past: int, seed: int) -> tuple:
    c = m.cfg.gpt
    kv = [_randn(seed + 1 + i, batch, c.heads, past, c.head_dim) for i in range(2 * c.layers)]
    return (_randn(seed, batch, seq, c.model_dim), *kv)


def _shared_decoder_inputs(m: Models, before: list[int], embeds: int, codes: int, max_len: int, seed: int) -> tuple:
    """One shared-buffer decoder call: row b holds before[b] tokens (random rows, zeros after them, as the
    runtime's buffers) and gets `embeds` host rows then `codes` mel codes at mel positions from `before`."""
    c, batch, new = m.cfg.gpt, len(before), embeds + codes
    caches = _filled_caches(2 * c.layers, before, c.heads, max_len, c.head_dim, seed)
    positions = torch.tensor([[p + j for j in range(codes)] for p in before], dtype=torch.int64).reshape(batch, codes)
    seqlens, total = _lengths(before, new)
    return (_randn(seed, batch, embeds, c.model_dim), _ints(seed + 1, c.number_mel_codes, batch, codes), positions,
            seqlens, total, *caches)


def _filled_caches(count: int, before: list[int], heads: int, max_len: int, head_dim: int,
                   seed: int) -> list[torch.Tensor]:
    """`count` shared KV buffers (B, heads, max_len, head_dim): row b's first before[b] positions random,
    zeros after them (as the runtime's buffers)."""
    caches = []
    for i in range(count):
        buf = torch.zeros(len(before), heads, max_len, head_dim)
        for b, p in enumerate(before):
            buf[b, :, :p] = _randn(seed + 10 + i * len(before) + b, heads, p, head_dim)
        caches.append(buf)
    return caches


def _lengths(before: list[int], new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupQueryAttention's seqlens_k (B,) int32 and total_sequence_length () after `new` tokens per row."""
    return (torch.tensor([p + new - 1 for p in before], dtype=torch.int32),
            torch.tensor(max(before) + new, dtype=torch.int32))


def _features(m: Models, batch: int, frames: int, seed: int, masked_tail: int = 0) -> tuple:
    """SeamlessM4T-like input: (B, T, 160) features and an int64 mask whose last frames may be 0."""
    mask = torch.ones(batch, frames, dtype=torch.int64)
    if masked_tail:
        mask[-1, frames - masked_tail:] = 0
    return (_randn(seed, batch, frames, 160), mask)


def _dit_inputs(m: Models, batch: int, frames: int, seed: int) -> tuple:
    s2 = m.cfg.s2mel
    n_mels = s2.dit.in_channels
    x_lens = torch.full((batch,), frames, dtype=torch.int64)
    t = torch.rand(batch, generator=_gen(seed))
    return (_randn(seed, batch, n_mels, frames), _randn(seed + 1, batch, n_mels, frames), x_lens, t,
            _randn(seed + 2, batch, s2.style_dim), _randn(seed + 3, batch, frames, s2.dit.content_dim))


def _regulator_inputs(m: Models, batch: int, t_in: int, t_out: int, seed: int) -> tuple:
    width = m.cfg.s2mel.length_regulator.in_channels
    return (_randn(seed, batch, t_in, width), torch.tensor(t_out, dtype=torch.int64))


def _projector_inputs(m: Models, batch: int, n: int, seed: int) -> tuple:
    return (_randn(seed, batch, n, m.cfg.s2mel.gpt_dim), _ints(seed, m.cfg.semantic_codec.codebook_size, batch, n))


def gpt_graphs(cfg: IndexTTS2Config, decoder: str = DEFAULT_DECODER) -> tuple[GraphSpec, ...]:
    """The three GPT graphs, the decoder in the `decoder` layout (DECODERS). Semantic frame counts stay
    <= 1024 (quirk 3: no padding mask upstream)."""
    return (
        GraphSpec(
            name="gpt_speaker_conditioning",
            inputs={"semantic": {0: "batch", 1: "frames"}},
            outputs={"speaker_latent": {0: "batch"}},
            wrapper=SpeakerConditioning,
            example=lambda m: _semantic(m, 2, 40, 0),
            cases=lambda m: [_semantic(m, 1, t, t) for t in (5, 38, 151, 750)] + [_semantic(m, 2, 17, 1)],
            atol=1e-4,
            # INT8 on CPU, fp16 on CUDA: a large MatMul stack whose embedding must stay near-identical; its error
            # reaches the codes, so greedy decoding has the last word
            policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                                defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                                gate=Gate("cosine", ENCODER_COSINE_MIN), probed=True),
        ),
        GraphSpec(
            name="gpt_emotion_vector",
            inputs={"semantic": {0: "batch", 1: "frames"}},
            outputs={"emotion_vector": {0: "batch"}},
            wrapper=EmotionVector,
            example=lambda m: _semantic(m, 2, 40, 0),
            cases=lambda m: [_semantic(m, 1, t, t) for t in (5, 38, 151, 750)] + [_semantic(m, 2, 17, 1)],
            atol=1e-4,
            # INT8 on CPU, fp16 on CUDA: a large MatMul stack whose embedding must stay near-identical; its error
            # reaches the codes, so greedy decoding has the last word
            policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                                defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                                gate=Gate("cosine", ENCODER_COSINE_MIN), probed=True),
        ),
        decoder_spec(cfg, decoder),
    )


def decoder_spec(cfg: IndexTTS2Config, layout: str = DEFAULT_DECODER) -> GraphSpec:
    """gpt_decoder in one of the KV-cache layouts (DECODERS); both hold the only copy of the GPT body and
    serve the prefill, the decode steps (batch = beams, or several requests) and the latent pass.

    concat: inputs_embeds (B, S, d) and the pasts (B, heads, P, hd) -> logits, hidden, presents (P + S);
            the runtime embeds mel codes itself (gpt_tables.npz).
    shared: host rows inputs_embeds (B, E, d) then mel codes (B, M) at mel positions, embedded in the
            graph; GroupQueryAttention over (B, heads, max_len, hd) buffers that the runtime binds as both
            past and present; row b's new tokens land at seqlens_k[b] + 1 - (E + M) .. seqlens_k[b]."""
    if layout not in DECODERS:
        raise ValueError(f"decoder layout {layout!r}: use one of {', '.join(DECODERS)}")
    layers = cfg.gpt.layers
    policy = _decoder_policy()
    if layout == "concat":
        return GraphSpec(
            name="gpt_decoder",
            inputs={"inputs_embeds": {0: "batch", 1: "seq"},
                    **{n: {0: "batch", 2: "past_seq"} for n in kv_names("past", layers)}},
            outputs={"logits": {0: "batch"}, "hidden_states": {0: "batch", 1: "seq"},
                     **{n: {0: "batch", 2: "total_seq"} for n in kv_names("present", layers)}},
            wrapper=Decoder,
            example=lambda m: _decoder_inputs(m, 2, 3, 4, 0),
            # prefill (past 0), single steps for 1 and 3 beams, a chunk, a long latent-pass-like call
            cases=lambda m: [_decoder_inputs(m, 1, 40, 0, 1), _decoder_inputs(m, 3, 1, 57, 2),
                             _decoder_inputs(m, 1, 1, 1, 3), _decoder_inputs(m, 2, 5, 9, 4),
                             _decoder_inputs(m, 1, 300, 0, 5)],
            atol=1e-4,
            policy=policy,
            varargs=1,
            kv_cache=dict(KV_CACHE),
            roles=dict(DECODER_ROLES),
        )
    return GraphSpec(
        name="gpt_decoder",
        inputs={"inputs_embeds": {0: "batch", 1: "embeds"}, "mel_codes": {0: "batch", 1: "codes"},
                "mel_positions": {0: "batch", 1: "codes"}, "seqlens_k": {0: "batch"}, "total_sequence_length": {},
                **{n: {0: "batch", 2: "max_len"} for n in kv_names("past", layers)}},
        outputs={"logits": {0: "batch"}, "hidden_states": {0: "batch", 1: "seq"},
                 **{n: {0: "batch", 2: "max_len"} for n in kv_names("present", layers)}},
        wrapper=SharedDecoder,
        example=lambda m: _shared_decoder_inputs(m, [4, 4], 3, 2, 16, 0),
        # ONNX Runtime runs S > 1 only with one row: prefill (E rows + the start code), single steps for
        # 3 beams of one request and for three requests of different lengths, a latent-pass chunk, a long
        # latent pass
        cases=lambda m: [_shared_decoder_inputs(m, [0], 40, 1, 64, 1), _shared_decoder_inputs(m, [57] * 3, 0, 1, 64, 2),
                         _shared_decoder_inputs(m, [9, 30, 57], 0, 1, 80, 3),
                         _shared_decoder_inputs(m, [9], 0, 5, 32, 4), _shared_decoder_inputs(m, [0], 300, 40, 352, 5)],
        atol=1e-4,
        policy=policy,
        varargs=5,
        kv_cache=dict(SHARED_KV_CACHE),
        roles=dict(SHARED_DECODER_ROLES),
        translations=gqa.translation_table,
    )


def _decoder_policy() -> ExportPolicy:
    # INT8 on CPU, fp16 on CUDA, 4-bit weights when asked (gpt_decoder=int4). The logit bound (looser for
    # 4-bit) screens, then greedy decoding must reproduce the fp32 codes. fp16 keeps the float I/O fp32
    # except the cache: the runtime feeds embeddings and reads logits as before while past/present live
    # in fp16 (half the memory and bandwidth per step)
    return ExportPolicy(allowed=(Precision.INT4, Precision.INT8, Precision.FP16, Precision.FP32),
                        defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                        gate=Gate("rel_l2", DECODER_LOGIT_REL_L2_MAX, ("logits",),
                                  thresholds={Precision.INT4: DECODER_LOGIT_REL_L2_MAX_INT4}),
                        probed=True, fp32_io=("inputs_embeds", "logits", "hidden_states"))


def acoustic_graphs(cfg: IndexTTS2Config) -> tuple[GraphSpec, ...]:
    """Prompt-side encoders and the per-segment acoustic graphs."""
    return (
        GraphSpec(
            name="semantic_encoder",
            inputs={"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"}},
            outputs={"semantic": {0: "batch", 1: "frames"}},
            wrapper=SemanticEncoder,
            example=lambda m: _features(m, 2, 24, 0, masked_tail=1),
            # 750 stacked frames = the 15 s prompt cap
            cases=lambda m: [_features(m, 1, 7, 1), _features(m, 1, 50, 2, masked_tail=1),
                             _features(m, 1, 151, 3), _features(m, 2, 37, 4, masked_tail=5),
                             _features(m, 1, 750, 5, masked_tail=1)],
            atol=1e-4,
            # INT8 on CPU, fp16 on CUDA: w2v-BERT is a large MatMul stack whose features must stay near-identical;
            # its error reaches the codes, so greedy decoding has the last word
            policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                                defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                                gate=Gate("cosine", ENCODER_COSINE_MIN), probed=True),
        ),
        GraphSpec(
            name="semantic_codec",
            inputs={"semantic": {0: "batch", 1: "frames"}},
            outputs={"codes": {0: "batch", 1: "frames"}, "quantized": {0: "batch", 1: "frames"}},
            wrapper=CodecQuantize,
            example=lambda m: _semantic_codec(m, 2, 24, 0),
            cases=lambda m: [_semantic_codec(m, 1, t, t) for t in (7, 50, 151, 750)],
            atol=1e-4,
            # the nearest-code search is a MatMul that INT8 would speed up, but a flipped code changes the prompt:
            # fp16 at most
            policy=ExportPolicy(allowed=(Precision.FP16, Precision.FP32), defaults={Target.CUDA: Precision.FP16},
                                gate=Gate("cosine", ENCODER_COSINE_MIN, ("quantized",))),
        ),
        GraphSpec(
            name="campplus",
            inputs={"fbank": {0: "batch", 1: "frames"}},
            outputs={"style": {0: "batch"}},
            wrapper=Campplus,
            example=lambda m: (_randn(0, 2, 230, 80),),
            cases=lambda m: [(_randn(t, 1, t, 80),) for t in (150, 237, 437, 1498)],
            atol=1e-4,
            # INT8/4-bit only act on MatMuls: a conv stack gains nothing from them
            policy=ExportPolicy(allowed=(Precision.FP16, Precision.FP32), defaults={Target.CUDA: Precision.FP16},
                                gate=Gate("cosine", ENCODER_COSINE_MIN)),
            bounds={"frames": (8, 100_000)},
        ),
        GraphSpec(
            name="length_regulator",
            inputs={"content": {0: "batch", 1: "frames_in"}, "length": {}},
            outputs={"condition": {0: "batch", 1: "frames_out"}},
            wrapper=LengthRegulator,
            example=lambda m: _regulator_inputs(m, 2, 20, 34, 0),
            # 750 -> 1292: the prompt condition of a 15 s prompt
            cases=lambda m: [_regulator_inputs(m, 1, a, b, a)
                             for a, b in ((13, 22), (50, 86), (7, 7), (151, 259), (750, 1292))],
            atol=1e-4,
            # INT8/4-bit only act on MatMuls: a conv stack gains nothing from them
            policy=ExportPolicy(allowed=(Precision.FP16, Precision.FP32), defaults={Target.CUDA: Precision.FP16},
                                gate=Gate("snr_db", ACOUSTIC_SNR_MIN_DB)),
        ),
        GraphSpec(
            name="latent_projector",
            inputs={"latent": {0: "batch", 1: "codes"}, "codes": {0: "batch", 1: "codes"}},
            outputs={"content": {0: "batch", 1: "codes"}},
            wrapper=LatentProjector,
            example=lambda m: _projector_inputs(m, 2, 12, 0),
            cases=lambda m: [_projector_inputs(m, 1, n, n) for n in (1, 37, 250)] + [_projector_inputs(m, 2, 12, 3)],
            atol=1e-4,
            policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                                defaults={Target.CUDA: Precision.FP16}, gate=Gate("snr_db", ACOUSTIC_SNR_MIN_DB)),
        ),
        GraphSpec(
            name="dit",
            inputs={"x": {0: "batch", 2: "frames"}, "prompt_x": {0: "batch", 2: "frames"}, "x_lens": {0: "batch"},
                    "t": {0: "batch"}, "style": {0: "batch"}, "cond": {0: "batch", 1: "frames"}},
            outputs={"velocity": {0: "batch", 2: "frames"}},
            wrapper=Estimator,
            example=lambda m: _dit_inputs(m, 2, 40, 0),
            # up to a 15 s prompt (1292 frames) plus a short target
            cases=lambda m: [_dit_inputs(m, 2, t, t) for t in (3, 17, 96, 157, 1335)] + [_dit_inputs(m, 1, 60, 1)],
            atol=1e-4,
            # INT8 on CPU (a large MatMul stack), fp16 on CUDA
            policy=ExportPolicy(allowed=(Precision.INT8, Precision.FP16, Precision.FP32),
                                defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                                gate=Gate("snr_db", ACOUSTIC_SNR_MIN_DB)),
            bounds={"frames": (3, 16384)},
        ),
        GraphSpec(
            name="bigvgan",
            inputs={"mel": {0: "batch", 2: "frames"}},
            outputs={"audio": {0: "batch", 1: "samples"}},
            wrapper=Vocoder,
            example=lambda m: (_randn(0, 2, 80, 20),),
            cases=lambda m: [(_randn(t, 1, 80, t),) for t in (5, 20, 33, 87)],
            # ~100 stacked convolutions with SnakeBeta: fp32 reassociation grows to ~2e-4 on a [-1, 1]
            # waveform with random weights (-70 dB); 5e-4 still catches any real difference
            atol=5e-4,
            # never INT8 or 4-bit: a conv stack gains nothing from them, and its SnakeBeta stacks fall to 14-18 dB
            # whatever the scheme (ort-notes §4.2)
            policy=ExportPolicy(allowed=(Precision.FP16, Precision.FP32), defaults={Target.CUDA: Precision.FP16},
                                gate=Gate("snr_db", ACOUSTIC_SNR_MIN_DB)),
        ),
    )


def _semantic_codec(m: Models, batch: int, frames: int, seed: int) -> tuple:
    return (_randn(seed, batch, frames, m.cfg.semantic_codec.hidden_size),)


# --- emotion from text ---------------------------------------------------------------------------------

EMOTION_TEXT_GRAPH = "qwen_emotion"
# The emotion decoder's I/O by role (manifest roles): token ids and their positions (both embedded and
# rotated in the graph), GroupQueryAttention's lengths as in the GPT's shared decoder, the logits.
EMOTION_TEXT_ROLES = {"codes": "input_ids", "positions": "position_ids", "seqlens_k": "seqlens_k",
                      "total_length": "total_sequence_length", "logits": "logits"}


def _qwen_inputs(q: QwenConfig, before: list[int], new: int, max_len: int, seed: int) -> tuple:
    """One emotion-decoder call: row b holds before[b] tokens (random rows, zeros after them, as the
    runtime's buffers) and gets `new` token ids at the positions that follow."""
    batch = len(before)
    caches = _filled_caches(2 * q.num_hidden_layers, before, q.num_key_value_heads, max_len, q.head_dim, seed)
    positions = torch.tensor([[p + j for j in range(new)] for p in before], dtype=torch.int64).reshape(batch, new)
    return (_ints(seed + 1, q.vocab_size, batch, new), positions, *_lengths(before, new), *caches)


def emotion_text_graph(q: QwenConfig) -> GraphSpec:
    """qwen_emotion: the emotion model's decoder with its KV cache in the GPT's shared layout (one
    max-length buffer per layer and kind, (B, kv_heads, max_len, head_dim), bound as past and present).
    Token ids and positions in, the last new position's logits out; the prompt is one call (one row:
    ONNX Runtime runs S > 1 only so), then one call per generated token."""
    layers = q.num_hidden_layers
    return GraphSpec(
        name=EMOTION_TEXT_GRAPH,
        inputs={"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"}, "seqlens_k": {0: "batch"},
                "total_sequence_length": {}, **{n: {0: "batch", 2: "max_len"} for n in kv_names("past", layers)}},
        outputs={"logits": {0: "batch"}, **{n: {0: "batch", 2: "max_len"} for n in kv_names("present", layers)}},
        wrapper=EmotionTextDecoder,
        example=lambda m: _qwen_inputs(q, [4, 4], 3, 16, 0),
        # a prompt, single steps of one row and of three rows at different lengths, a chunk, a long prompt
        cases=lambda m: [_qwen_inputs(q, [0], 40, 64, 1), _qwen_inputs(q, [57], 1, 64, 2),
                         _qwen_inputs(q, [9, 30, 57], 1, 80, 3), _qwen_inputs(q, [9], 5, 32, 4),
                         _qwen_inputs(q, [0], 300, 320, 5)],
        atol=1e-4,
        # as the GPT decoder: INT8 on CPU, fp16 (with an fp16 cache) on CUDA, 4-bit weights when asked, each
        # screened by the logits' relative error (no greedy probe: it decodes emotion answers, not codes)
        policy=ExportPolicy(allowed=(Precision.INT4, Precision.INT8, Precision.FP16, Precision.FP32),
                            defaults={Target.CPU: Precision.INT8, Target.CUDA: Precision.FP16},
                            gate=Gate("rel_l2", DECODER_LOGIT_REL_L2_MAX, ("logits",),
                                      thresholds={Precision.INT4: DECODER_LOGIT_REL_L2_MAX_INT4}),
                            fp32_io=("logits",)),
        varargs=4,
        kv_cache=dict(SHARED_KV_CACHE),
        roles=dict(EMOTION_TEXT_ROLES),
        translations=gqa.translation_table,
    )


def all_graphs(cfg: IndexTTS2Config, decoder: str = DEFAULT_DECODER) -> tuple[GraphSpec, ...]:
    return gpt_graphs(cfg, decoder) + acoustic_graphs(cfg)
