"""Synthesis presets and the accepted range of every numeric option, in one place.

Presets are named defaults shipped with the package (`presets/*.yaml`). A call's explicit arguments win
over the preset; the preset wins over nothing (every key is required). `LIMITS` is the policy: each
option's bounds, checked where a value enters the runtime (`Preset`, `SamplingOptions`, `IndexTTS2`'s
methods, the CLI), so a bad value fails with one `InputError` before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from importlib import resources

import numpy as np
import yaml

from .errors import InputError

UPSTREAM_MAX_CODES = 1500  # upstream infer()'s max_mel_tokens: codes per segment (60 s at 25 Hz)


def is_int(x) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x) -> bool:
    """A Python or numpy int or float, not a bool (NaN and inf included: `Bound.check` refuses them)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # a Python int too large for a float
        return False


@dataclass(frozen=True)
class Bound:
    """The accepted values of one numeric option: finite, `lo <= v <= hi` (`lo < v` when `open_lo`),
    integral when `integer`. `note` says what the special values mean; it becomes the error's hint."""

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False
    open_lo: bool = False
    note: str = ""

    def describe(self, hi: float | None = None) -> str:
        """'an integer in 1..16', 'a finite number in (0, 1]', 'a finite number >= 0', ..."""
        hi = self.hi if hi is None else hi
        kind = "an integer" if self.integer else "a finite number"
        if self.integer and math.isfinite(self.lo) and math.isfinite(hi):
            return f"{kind} in {self.lo:g}..{hi:g}"
        if math.isfinite(self.lo) and math.isfinite(hi):
            return f"{kind} in {'(' if self.open_lo else '['}{self.lo:g}, {hi:g}]"
        if math.isfinite(self.lo):
            return f"{kind} {'>' if self.open_lo else '>='} {self.lo:g}"
        if math.isfinite(hi):
            return f"{kind} <= {hi:g}"
        return kind

    def accepts(self, value, hi: float | None = None) -> bool:
        hi = self.hi if hi is None else hi
        if not (is_int(value) if self.integer else is_real(value) and _finite(value)):
            return False
        return (self.lo < value if self.open_lo else self.lo <= value) and value <= hi

    def check(self, name: str, value, hi: float | None = None):
        """`value` when accepted, else InputError("name=value: must be <description>", note).

        hi: an upper bound known only at call time (max_codes: the checkpoint's max_mel_tokens)."""
        if not self.accepts(value, hi):
            raise InputError(f"{name}={value!r}: must be {self.describe(hi)}", self.note)
        return value


# The policy. Upstream defaults are inside every range; bounds beyond upstream's own checks only refuse
# values that would crash, hang or silently produce garbage.
LIMITS: dict[str, Bound] = {
    "num_beams": Bound(1, 16, integer=True, note="upstream uses 3; every beam is one more KV-cache row"),
    "top_k": Bound(0, integer=True, note="0 switches top-k off"),
    "top_p": Bound(0, 1, open_lo=True, note="1 switches top-p off; for the single best code use greedy"),
    "temperature": Bound(0, open_lo=True, note="for the single best code use greedy"),
    "repetition_penalty": Bound(0, open_lo=True, note="1 switches it off; upstream uses 10"),
    "length_penalty": Bound(note="0 is upstream's"),
    "max_codes": Bound(1, integer=True,
                       note="at most the checkpoint's max_mel_tokens, the size of its mel position table"),
    "min_codes": Bound(0, integer=True, note="at most max_codes"),
    "max_tokens_per_segment": Bound(1, integer=True, note="upstream uses 120; below about 20 segments get very short"),
    "first_chunk_codes": Bound(1, integer=True, note="codes in the first streamed chunk"),
    "chunk_codes": Bound(1, integer=True, note="codes in the largest streamed chunk"),
    "overlap_codes": Bound(0, integer=True, note="codes of left context each later streamed chunk re-decodes"),
    "chunk_prompt_frames": Bound(16, integer=True, note="voice-prompt mel frames that condition a streamed chunk"),
    "steps": Bound(1, 1000, integer=True, note="flow-matching steps; upstream uses 25"),
    "cfg_rate": Bound(0, note="0 switches classifier-free guidance off; upstream uses 0.7"),
    "duration_factor": Bound(0.5, 2.0, note="IndexTTS-2.5 only: mel frames per code x this (upstream's web UI "
                                            "range); 2 keeps the longest segment inside the DiT's 16384 frames"),
    "threads": Bound(1, 256, integer=True, note="leave it unset for ONNX Runtime's default, the physical cores"),
    "seed": Bound(0, integer=True, note="leave it unset for a random seed"),
    "emotion_alpha": Bound(note="with an emotion vector it is clamped to [0, 1]; with emotion audio "
                                "it extrapolates past 1 and below 0, as upstream"),
    "emotion_weight": Bound(0, note="one weight per emotion: happy, angry, sad, afraid, disgusted, "
                                    "melancholic, surprised, calm"),
}


def check_optional(name: str, value, hi: float | None = None):
    """`value` checked against LIMITS[name] unless it is None (None means "the default")."""
    return None if value is None else LIMITS[name].check(name, value, hi)


def resolve_max_codes(requested: int | None, default: int, max_mel_tokens: int) -> int:
    """Codes per segment: an explicit value must fit the checkpoint's position table (1..max_mel_tokens);
    the default (a preset's, or upstream's 1500) is lowered to it, so the defaults never fail on a valid
    checkpoint with a smaller table."""
    if requested is None:
        return min(int(default), int(max_mel_tokens))
    return int(LIMITS["max_codes"].check("max_codes", requested, max_mel_tokens))


@dataclass(frozen=True)
class Preset:
    num_beams: int
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float
    max_codes: int  # the default; IndexTTS2 lowers it to the checkpoint's max_mel_tokens
    steps: int  # flow-matching (CFM) Euler steps
    cfg_rate: float  # classifier-free guidance rate

    def __post_init__(self) -> None:
        for f in fields(self):
            LIMITS[f.name].check(f.name, getattr(self, f.name))

    def override(self, **values) -> "Preset":
        """This preset with every non-None value replaced (InputError for a value out of LIMITS)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__package__).joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> Preset:
    """The named preset (InputError for a name that is not shipped). Read once: a Preset is frozen."""
    if not isinstance(name, str) or name not in preset_names():
        raise InputError(f"preset {name!r} does not exist", f"use one of {', '.join(preset_names())}")
    return _read_preset(name)


@lru_cache(maxsize=None)
def _read_preset(name: str) -> Preset:
    text = resources.files(__package__).joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    expected = {f.name for f in fields(Preset)}
    if set(data) != expected:
        raise InputError(f"preset {name!r}: keys {sorted(data)} differ from {sorted(expected)}")
    return Preset(**data)


# Upstream infer()'s values: the defaults of every stage method and of SamplingOptions, read from the one
# place they are written (presets/default.yaml).
DEFAULT_PRESET = load_preset("default")
