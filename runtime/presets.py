"""Synthesis presets: named defaults shipped with the package (`presets/*.yaml`).

A call's explicit arguments win over the preset; the preset wins over nothing (every key is required).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from importlib import resources

import yaml

from .errors import InputError


@dataclass(frozen=True)
class Preset:
    num_beams: int
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float
    max_codes: int
    steps: int  # flow-matching (CFM) Euler steps
    cfg_rate: float  # classifier-free guidance rate

    def override(self, **values) -> "Preset":
        """This preset with every non-None value replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__package__).joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> Preset:
    if name not in preset_names():
        raise InputError(f"preset {name!r} does not exist", f"use one of {', '.join(preset_names())}")
    text = resources.files(__package__).joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    expected = {f.name for f in fields(Preset)}
    if set(data) != expected:
        raise InputError(f"preset {name!r}: keys {sorted(data)} differ from {sorted(expected)}")
    return Preset(**data)
