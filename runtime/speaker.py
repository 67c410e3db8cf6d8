"""`Speaker`: everything IndexTTS2 takes from a voice prompt, as plain numpy arrays.

Built once per prompt (by `IndexTTS2.prepare_speaker`, or by keyword from arrays) and reused for every
segment and call; `save`/`load` keep it in one `.npz` so a voice can be prepared once and shipped.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .audio import atomic_write
from .errors import InputError
from .manifest import AcousticDims, GPTDims

# Upstream passes the feature width (1024) as the Conformer length: frames past it would be masked.
MAX_SEMANTIC_FRAMES = 1024

def check_semantic_frames(name: str, features: np.ndarray) -> np.ndarray:
    """Semantic features (1, T, D) with T <= MAX_SEMANTIC_FRAMES, else InputError naming them."""
    if features.shape[1] > MAX_SEMANTIC_FRAMES:
        raise InputError(f"{name}: {features.shape[1]} frames, at most {MAX_SEMANTIC_FRAMES} are supported",
                         "cut the voice prompt to 15 s, as upstream does")
    return features


# The axis of each array whose size the bundle fixes: (array, axis, what it is, dims group, dims field).
WIDTHS = (
    ("semantic", 2, "feature width", "gpt", "semantic_dim"),
    ("emotion_semantic", 2, "feature width", "gpt", "semantic_dim"),
    ("style", 1, "style width", "acoustic", "style_dim"),
    ("ref_mel", 1, "mel bands", "acoustic", "n_mels"),
    ("prompt_condition", 2, "content width", "acoustic", "content_dim"),
)


@dataclass(frozen=True)
class Speaker:
    semantic: np.ndarray  # (1, T, semantic_dim) speaker-path w2v-BERT features, normalised
    emotion_semantic: np.ndarray  # (1, T', semantic_dim) emotion-path features of the same audio
    style: np.ndarray  # (1, style_dim) CAMPPlus embedding
    ref_mel: np.ndarray  # (1, n_mels, F) prompt log-mel frames
    prompt_condition: np.ndarray  # (1, F, C) length-regulated prompt content

    def __post_init__(self) -> None:
        ndims = {"semantic": 3, "emotion_semantic": 3, "style": 2, "ref_mel": 3, "prompt_condition": 3}
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                arr = np.ascontiguousarray(value, dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise InputError(f"Speaker.{f.name}: not a numeric array ({e})") from e
            if arr.ndim != ndims[f.name] or arr.shape[0] != 1:
                raise InputError(
                    f"Speaker.{f.name}: expected shape with {ndims[f.name]} axes and batch 1, got {arr.shape}",
                    "build the Speaker with IndexTTS2.prepare_speaker, or pass arrays as documented",
                )
            if not np.all(np.isfinite(arr)):
                raise InputError(f"Speaker.{f.name}: contains NaN or infinite values")
            object.__setattr__(self, f.name, arr)
        for name in ("semantic", "emotion_semantic"):
            if getattr(self, name).shape[1] == 0:
                raise InputError(f"Speaker.{name}: has no frames", "the voice prompt is too short")
        if self.ref_mel.shape[2] != self.prompt_condition.shape[1]:
            raise InputError(
                f"Speaker: ref_mel has {self.ref_mel.shape[2]} frames but prompt_condition has "
                f"{self.prompt_condition.shape[1]}; they must describe the same prompt"
            )

    def check(self, gpt: GPTDims, acoustic: AcousticDims) -> "Speaker":
        """This Speaker if every array fits a bundle's dims, else InputError naming the array.

        A Speaker is plain arrays (built by hand, or loaded from a file prepared with another bundle), so
        the widths are checked against the bundle that uses it: semantic widths = the GPT's semantic_dim,
        style = style_dim, ref_mel bands = n_mels, prompt_condition = content_dim; the semantic features
        hold at most MAX_SEMANTIC_FRAMES frames (upstream's Conformer length)."""
        dims = {"gpt": gpt, "acoustic": acoustic}
        for name, axis, what, group, field_name in WIDTHS:
            have, want = getattr(self, name).shape[axis], getattr(dims[group], field_name)
            if have != want:
                raise InputError(f"Speaker.{name}: {what} {have}, this bundle's is {want}",
                                 "prepare the speaker with the bundle that uses it")
        for name in ("semantic", "emotion_semantic"):
            check_semantic_frames(f"Speaker.{name}", getattr(self, name))
        return self

    def save(self, path: str | Path) -> None:
        """Write the five arrays to one `.npz`, atomically (`audio.atomic_write`: a unique temporary
        file renamed into place; a failed write leaves no file). Errors are InputErrors naming the path."""
        arrays = {f_.name: getattr(self, f_.name) for f_ in fields(self)}
        atomic_write(path, lambda f: np.savez(f, **arrays), "speaker file")

    @staticmethod
    def load(path: str | Path) -> "Speaker":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such speaker file", "create one with Speaker.save") from e
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: not a speaker .npz ({e})", "create one with Speaker.save") from e
        expected = {f.name for f in fields(Speaker)}
        if set(arrays) != expected:
            raise InputError(
                f"{path}: holds {sorted(arrays)}, a speaker file holds exactly {sorted(expected)}",
                "create it with Speaker.save",
            )
        try:
            return Speaker(**arrays)
        except InputError as e:
            raise InputError(f"{path}: {e.message}", e.hint or "create it with Speaker.save") from e
