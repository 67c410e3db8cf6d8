"""The runtime's errors: one small hierarchy, each with the stage it came from and a hint."""

from __future__ import annotations

import numpy as np


class IndexTTS2Error(Exception):
    """Base class. `stage` names the pipeline stage, `hint` says what to do about it."""

    stage = "runtime"

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(f"[{self.stage}] {message}" + (f" ({hint})" if hint else ""))


class BundleError(IndexTTS2Error):
    """The model bundle is missing, truncated, corrupt or of an unknown format version."""

    stage = "bundle"


class InputError(IndexTTS2Error, ValueError):
    """An argument (text, speaker, emotion, option) is unusable."""

    stage = "input"


class GenerationError(IndexTTS2Error):
    """Code generation could not produce a usable result."""

    stage = "generation"


# The output guard: every stage's result is checked for NaN / inf, so a broken graph (damaged weights, an
# fp16 overflow) stops with an error naming the stage instead of writing noise or silence.
GUARD_HINT = ("the bundle may be damaged or too low in precision for this input: check it with "
              "`indextts2-onnx info BUNDLE --check`, or use an fp32 bundle (export --target any)")


def non_finite(stage: str) -> GenerationError:
    """The output guard's error: GenerationError("<stage> produced NaN or infinite values")."""
    return GenerationError(f"{stage} produced NaN or infinite values", GUARD_HINT)


def require_finite(stage: str, array: np.ndarray) -> np.ndarray:
    """`array` when every value is finite, else the output guard's GenerationError naming `stage`."""
    if not np.all(np.isfinite(array)):
        raise non_finite(stage)
    return array
