"""What a synthesis call returns, as values: `Metrics`, `AudioChunk` (from `stream`) and `SynthesisResult`
(from `synthesize`). Each call builds its own, so concurrent calls never see each other's numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """Timings of one call, in seconds of wall clock, summed over the text segments done so far.

    prompt_s      : speaker preparation and the emotion vector
    emotion_text_s: of prompt_s, the emotion model's answer (emotion from text; 0 otherwise)
    conditioning_s: speaker latents and the GPT prefix, per segment
    decode_s      : code generation (the GPT decode loop); ms_per_code = decode_s / codes
    latent_s      : the GPT latent pass over the codes
    mel_s, vocoder_s: flow-matching mel decoding and BigVGAN
    total_s       : from the call's start to this point (time the consumer of `stream` spends between
                    chunks included); ttfa_s: from the call's start to the first chunk (time to first audio)
    audio_s, rtf  : seconds of audio produced (silent gaps excluded) and total_s / audio_s
    """

    prompt_s: float = 0.0
    emotion_text_s: float = 0.0
    conditioning_s: float = 0.0
    decode_s: float = 0.0
    latent_s: float = 0.0
    mel_s: float = 0.0
    vocoder_s: float = 0.0
    total_s: float = 0.0
    ttfa_s: float = 0.0
    codes: int = 0
    audio_s: float = 0.0

    @property
    def ms_per_code(self) -> float:
        return 1000 * self.decode_s / max(self.codes, 1)

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s if self.audio_s else float("inf")

    def as_dict(self) -> dict[str, float]:
        """Every field plus ms_per_code and rtf, for JSON and logs."""
        return {**asdict(self), "ms_per_code": self.ms_per_code, "rtf": self.rtf}


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare .audio yourself
class AudioChunk:
    """One piece of `stream()`'s output.

    audio      : float32 mono waveform in [-1, 1]
    sample_rate: Hz (the bundle's, 22050 for the official model)
    segment    : index of the text segment it belongs to (IndexTTS2.tokenize's order)
    index      : position of this chunk in the whole call, from 0
    final      : True only on the call's last chunk
    metrics    : the call so far, this chunk included (the last chunk's are the call's)

    Iterates as (sample_rate, audio), so 0.x code `for sr, wav in tts.stream(...)` keeps working."""

    audio: np.ndarray = field(repr=False)
    sample_rate: int
    segment: int
    index: int
    final: bool
    metrics: Metrics

    def __iter__(self) -> Iterator:
        return iter((self.sample_rate, self.audio))


@dataclass(frozen=True, eq=False)
class SynthesisResult:
    """`synthesize()`'s output: the whole text as one waveform (segments joined with 200 ms of silence).

    Iterates as (sample_rate, audio), so 0.x code `sr, wav = tts.synthesize(...)` keeps working."""

    audio: np.ndarray = field(repr=False)
    sample_rate: int
    metrics: Metrics

    def __iter__(self) -> Iterator:
        return iter((self.sample_rate, self.audio))
