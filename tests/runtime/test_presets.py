"""Presets ship with the package; explicit arguments override them."""

from __future__ import annotations

import pytest

from indextts2_onnx.runtime import InputError
from indextts2_onnx.runtime.presets import load_preset, preset_names


def test_shipped_presets():
    assert preset_names() == ["default", "fast", "high_quality"]
    d = load_preset("default")  # upstream infer()'s values
    assert (d.num_beams, d.top_k, d.top_p, d.temperature, d.repetition_penalty, d.max_codes, d.steps, d.cfg_rate) == \
        (3, 30, 0.8, 0.8, 10.0, 1500, 25, 0.7)
    assert load_preset("fast").steps < d.steps < load_preset("high_quality").steps


def test_override_and_unknown_preset():
    assert load_preset("default").override(steps=5, top_k=None).steps == 5
    assert load_preset("default").override(steps=5, top_k=None).top_k == 30
    with pytest.raises(InputError, match="preset 'turbo' does not exist.*default, fast, high_quality"):
        load_preset("turbo")
