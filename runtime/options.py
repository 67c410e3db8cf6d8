"""`SynthesisOptions`: every per-call option of `IndexTTS2.synthesize` / `stream`, as one frozen value.

Options in, results out (whisper's `DecodingOptions`): a call takes a `SynthesisOptions` (or keyword
overrides of single fields) and nothing about the call is stored on the `IndexTTS2` object, so one
instance can serve many threads.

Where the defaults live: fields left as None take the named preset's value (`presets/*.yaml`; `default`
is upstream `infer()`'s), and `max_codes` is then lowered to the checkpoint's `max_mel_tokens`. The other
defaults are the field defaults below. Every value is checked against `presets.LIMITS` when the options
are built, so a bad option fails before any work, with one InputError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

from .chunked import ChunkPlan
from .conditioning import check_alpha, check_vector
from .errors import InputError
from .presets import LIMITS, check_optional, load_preset, resolve_max_codes
from .sampling import SamplingOptions

AudioSource = Union[str, Path, tuple]  # a file soundfile reads, or (samples, sample_rate)

# The fields a preset supplies when they are left as None.
PRESET_FIELDS = ("num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "steps", "cfg_rate")


@dataclass(frozen=True)
class SynthesisOptions:
    """How to speak one text. Frozen: derive variants with `with_overrides(...)` (or `dataclasses.replace`).

    The chunk fields say where `stream()` cuts a segment's codes for the chunked acoustic path
    (chunked.ChunkPlan: the first chunk small for a short time to first audio, later ones doubling up to
    `chunk_codes`, each re-decoding `overlap_codes` codes of left context that are cross-faded);
    `synthesize()` decodes each segment whole."""

    # named defaults for every field below left as None: "default" (upstream), "fast", "high_quality"
    preset: str = "default"

    # code sampling (HF semantics; presets.LIMITS has the ranges); greedy: no draw, argmax / beam search
    greedy: bool = False
    num_beams: Optional[int] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    temperature: Optional[float] = None
    repetition_penalty: Optional[float] = None

    # codes per text segment: max_codes None = the preset's (1500), lowered to the checkpoint's max_mel_tokens;
    # min_codes: no stop before this many (fixes the length, e.g. for benchmarks)
    max_codes: Optional[int] = None
    min_codes: int = 0

    # flow matching: Euler steps and classifier-free guidance rate
    steps: Optional[int] = None
    cfg_rate: Optional[float] = None

    # one seed makes the whole call reproducible; None draws a fresh one
    seed: Optional[int] = None

    # emotion (IndexTTS2.emotion_vector): a prompt (file, (samples, sr) or Speaker) weighted by
    # emotion_alpha, or 8 weights (happy, angry, sad, afraid, disgusted, melancholic, surprised, calm)
    emotion_audio: Any = None
    emotion_alpha: float = 1.0
    emotion_vector: Optional[tuple] = None
    # emotion from text (upstream's use_emo_text / emo_text): the bundle's emotion model reads
    # `emotion_text`, or the text to speak when it is None, and its 8 weights replace emotion_audio and
    # emotion_vector (as upstream) on the vector path, scaled by emotion_alpha. emotion_text alone,
    # without use_emotion_text, is refused (upstream would silently ignore it).
    use_emotion_text: bool = False
    emotion_text: Optional[str] = None

    # text segmentation: BPE tokens per segment, as upstream (120)
    max_tokens_per_segment: int = 120

    # the text's language: IndexTTS-2.5 bundles need one of en, zh, ja, es, ar, zhen (upstream's `lang`);
    # 2.0 bundles speak zh/en only (None, "zh", "en" or "zhen": one front end) (family.Family.check_lang)
    lang: Optional[str] = None
    # IndexTTS-2.5 only: mel frames per code x this (0.5..2; 1 = upstream's default); 2.0 accepts only 1
    duration_factor: float = 1.0

    # streaming (stream() only): codes in the first chunk, the largest chunk, and codes of left context
    # each later chunk re-decodes (measured with tools/stream_quality.py; README "Streaming")
    chunked: bool = True  # False: stream() yields one chunk per segment, each decoded whole (as synthesize)
    first_chunk_codes: int = ChunkPlan.first_chunk_codes
    chunk_codes: int = ChunkPlan.chunk_codes
    overlap_codes: int = ChunkPlan.overlap_codes
    # the last N mel frames of the voice prompt condition each chunk's DiT (None: all of it, as upstream);
    # fewer frames, less time to first audio (chunked.prompt_tail), at a quality cost to measure on real weights
    chunk_prompt_frames: Optional[int] = None

    def __post_init__(self) -> None:
        """Every field checked once, here (InputError naming it); the emotion vector stored as a tuple."""
        load_preset(self.preset)  # InputError for an unknown preset
        for name in PRESET_FIELDS + ("max_codes", "seed"):
            check_optional(name, getattr(self, name))
        LIMITS["min_codes"].check("min_codes", self.min_codes, self.max_codes)
        self.sampling()  # greedy is a bool, the sampling fields fit together
        check_alpha(self.emotion_alpha)
        if self.emotion_vector is not None:
            object.__setattr__(self, "emotion_vector", tuple(float(w) for w in check_vector(self.emotion_vector)))
        if not isinstance(self.use_emotion_text, bool):
            raise InputError(f"use_emotion_text must be a bool, got {self.use_emotion_text!r}")
        if self.emotion_text is not None:
            if not isinstance(self.emotion_text, str) or not self.emotion_text.strip():
                raise InputError(f"emotion_text must be a non-empty string, got {self.emotion_text!r}",
                                 "describe the emotion, e.g. 'a little sad, tired'")
            if not self.use_emotion_text:
                raise InputError("emotion_text is set but use_emotion_text is False",
                                 "set use_emotion_text=True to read the emotion from it (upstream ignores "
                                 "emo_text without use_emo_text)")
        for name in ("max_tokens_per_segment", "first_chunk_codes", "chunk_codes", "overlap_codes"):
            LIMITS[name].check(name, getattr(self, name))
        check_optional("chunk_prompt_frames", self.chunk_prompt_frames)
        if self.lang is not None and not isinstance(self.lang, str):
            raise InputError(f"lang must be a language code such as 'en', got {self.lang!r}")
        LIMITS["duration_factor"].check("duration_factor", self.duration_factor)
        if not isinstance(self.chunked, bool):
            raise InputError(f"chunked must be a bool, got {self.chunked!r}")
        self.chunk_plan()

    def chunk_plan(self) -> ChunkPlan:
        """Where stream() cuts each segment's codes (InputError when the three chunk fields disagree)."""
        try:
            return ChunkPlan(first_chunk_codes=self.first_chunk_codes, chunk_codes=self.chunk_codes,
                             overlap_codes=self.overlap_codes)
        except ValueError as e:
            raise InputError(f"chunk sizes: {e}", "e.g. first_chunk_codes=25, chunk_codes=100, "
                             "overlap_codes=10") from e

    def with_overrides(self, **overrides) -> SynthesisOptions:
        """These options with some fields replaced (checked again); an unknown name is a TypeError."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown synthesis option(s): {', '.join(unknown)}")
        return replace(self, **overrides) if overrides else self

    def resolve(self, max_mel_tokens: int) -> SynthesisOptions:
        """These options with the preset's values in every None field and max_codes fitted to a
        checkpoint whose mel position table holds `max_mel_tokens` (an explicit larger max_codes is an
        InputError). `seed` and the emotion inputs stay as given (None is meaningful there)."""
        max_codes = resolve_max_codes(self.max_codes, load_preset(self.preset).max_codes, max_mel_tokens)
        LIMITS["min_codes"].check("min_codes", self.min_codes, max_codes)
        return replace(self, **self._filled(), max_codes=max_codes)

    def _filled(self) -> dict:
        """PRESET_FIELDS with the preset's value wherever this field is None."""
        p = load_preset(self.preset)
        return {name: getattr(p, name) if getattr(self, name) is None else getattr(self, name)
                for name in PRESET_FIELDS}

    def sampling(self) -> SamplingOptions:
        """The code sampler's options (None fields: the preset's; one beam when greedy)."""
        v = self._filled()
        return SamplingOptions(greedy=self.greedy, num_beams=1 if self.greedy else v["num_beams"], top_k=v["top_k"],
                               top_p=v["top_p"], temperature=v["temperature"],
                               repetition_penalty=v["repetition_penalty"])


# 0.x `stream` / `synthesize` took these positionally after `speaker`; a third positional argument that is
# not a SynthesisOptions starts this list, so old calls keep working.
POSITIONAL_0X = ("emotion_audio", "emotion_alpha", "emotion_vector", "seed", "steps", "cfg_rate", "greedy",
                 "num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "max_codes",
                 "max_tokens_per_segment", "preset")


def call_options(options, args: tuple, overrides: dict) -> SynthesisOptions:
    """The options of one `synthesize` / `stream` call: `options` (or the defaults) with the keyword
    overrides applied, or, for a 0.x call, the positional arguments in their 0.x order (POSITIONAL_0X).
    A bad value is an InputError; a misuse of the signature (too many positionals, one option given twice,
    an unknown name) a TypeError, as Python itself would raise."""
    if options is not None and not isinstance(options, SynthesisOptions):
        options, args = None, (options, *args)
    elif args:
        raise TypeError("after a SynthesisOptions, options are given by keyword")
    if len(args) > len(POSITIONAL_0X):
        raise TypeError(f"at most {len(POSITIONAL_0X) + 3} positional arguments, got {len(args) + 3}")
    positional = dict(zip(POSITIONAL_0X, args))
    twice = sorted(set(positional) & set(overrides))
    if twice:
        raise TypeError(f"option(s) given twice: {', '.join(twice)}")
    return (options or SynthesisOptions()).with_overrides(**positional, **overrides)
