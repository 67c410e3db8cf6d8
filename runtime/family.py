"""Which model a bundle holds, IndexTTS2 ("2.0") or IndexTTS-2.5 ("2.5"), and what that changes, as data.

The two share the GPT-2 body, the emotion path, the DiT and BigVGAN (architecture.md); 2.5 differs where a
`Family` says so (spec indextts25.md):

                      2.0                                   2.5
    text              SentencePiece, zh/en routed itself    tiktoken, `lang` given: en zh ja es ar zhen
    speaker rows      Conformer + Perceiver (32) + speed    CAMPPlus style projected (1) + two zero rows
    codes             50 Hz, then a second "latent" pass    25 Hz, no latent pass
    content           vq2emb(codes) + gpt_layer(latent)     codec decoder(codes): 2 frames of 50 Hz per code
    target frames     int(N * 1.72), float32                int(2N * 1.72 * duration_factor), float64
    prompt condition  regulator(codec-quantised features)   regulator(the un-quantised features)

`IndexTTS2` picks its family from the manifest once; options a family does not have are refused with a
hint (`check_lang`, `check_duration_factor`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .presets import LIMITS


@dataclass(frozen=True)
class Family:
    name: str  # the manifest's `family`
    title: str  # how messages name it
    graphs: tuple[str, ...]  # the graphs a bundle of this family holds
    languages: tuple[str, ...]  # the `lang` values it accepts
    default_lang: str | None  # the language of lang=None (None: the caller must say)
    codes_per_second: float  # a code is 1 / this seconds of audio
    latent_pass: bool  # a second GPT pass gives the acoustic stage per-code latents

    def check_lang(self, lang: str | None) -> str:
        """`lang` as this family's language code, or InputError naming what it accepts."""
        if lang is None:
            if self.default_lang is None:
                raise InputError(f"lang: an {self.title} bundle needs the text's language",
                                 f"pass lang, one of {', '.join(self.languages)}")
            return self.default_lang
        if not isinstance(lang, str) or lang.lower() not in self.languages:
            other = "" if self.name == "2.5" else "; other languages need an IndexTTS-2.5 bundle"
            raise InputError(f"lang: {lang!r} is not a language of this {self.title} bundle{other}",
                             f"use one of {', '.join(self.languages)}")
        return lang.lower()

    def check_duration_factor(self, factor) -> float:
        """The duration factor as a float (LIMITS), 1.0 only for 2.0: its length comes from the codes alone."""
        factor = float(LIMITS["duration_factor"].check("duration_factor", factor))
        if self.name == "2.0" and factor != 1.0:
            raise InputError(f"duration_factor: {factor:g} needs an IndexTTS-2.5 bundle; this one is {self.title}",
                             "leave duration_factor at 1.0, or export an IndexTTS-2.5 checkpoint")
        return factor


GRAPHS_20 = ("gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "semantic_codec",
             "campplus", "length_regulator", "latent_projector", "dit", "bigvgan")
GRAPHS_25 = ("gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "campplus", "length_regulator",
             "codec_decoder", "dit", "bigvgan")

FAMILIES: dict[str, Family] = {
    # 2.0's front end routes Chinese and English by itself: "zh", "en" and "zhen" all mean that one path
    "2.0": Family("2.0", "IndexTTS2 (2.0)", GRAPHS_20, ("zhen", "zh", "en"), "zhen", 50.0, True),
    # upstream's infer takes lang as a required argument: no default here either
    "2.5": Family("2.5", "IndexTTS-2.5", GRAPHS_25, ("en", "zh", "ja", "es", "ar", "zhen"), None, 25.0, False),
}
