"""The runtime's errors: one small hierarchy, each with the stage it came from and a hint."""

from __future__ import annotations


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
