"""Conditioning for the GPT: the emotion vector, as upstream mixes it (upstream-quirks 13).

    no emotion input   -> E(speaker.emotion_semantic)                      (alpha forced to 1)
    emotion speaker    -> base + alpha * (E(emotion.emotion_semantic) - base),  base = E(speaker.semantic)
    8-value vector w   -> sum_g w_g * emo_matrix_g[row_g] + (1 - sum w) * E(speaker.emotion_semantic)
                          row_g: the speaker-matrix row of group g closest (cosine) to the style, or random

where E is the emotion graph (upstream `get_emovec`). With a vector, the emotion audio is ignored and
each weight is first scaled by alpha clamped to [0, 1], truncated to 4 decimals, as upstream does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

EMOTIONS = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")


@dataclass(frozen=True)
class EmotionMatrices:
    """`feat2.pt` / `feat1.pt` split into the 8 emotion groups of config `emo_num`."""

    emotion: list[np.ndarray]  # per group (rows_g, d)
    speaker: list[np.ndarray]  # per group (rows_g, style_dim)

    @staticmethod
    def split(emo_matrix: np.ndarray, spk_matrix: np.ndarray, emo_num: list[int]) -> "EmotionMatrices":
        cuts = np.cumsum(emo_num)[:-1]
        return EmotionMatrices(list(np.split(emo_matrix, cuts)), list(np.split(spk_matrix, cuts)))


def merge(base: np.ndarray, emotion: np.ndarray, alpha: float) -> np.ndarray:
    """Upstream `merge_emovec`: move from the speaker's own emotion toward the emotion prompt's."""
    return base + alpha * (emotion - base)


def check_vector(vector) -> np.ndarray:
    try:
        w = np.asarray(vector, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputError(f"emotion vector: not a list of numbers ({e})") from e
    if w.shape != (len(EMOTIONS),) or not np.all(np.isfinite(w)):
        raise InputError(
            f"emotion vector: needs {len(EMOTIONS)} finite numbers, got {w.shape[0]} values",
            f"one weight per emotion, in order: {', '.join(EMOTIONS)}",
        )
    return w


def scale_vector(w: np.ndarray, alpha: float) -> np.ndarray:
    """Upstream scales a given vector by alpha (only when alpha != 1): clamp to [0, 1], keep 4 decimals."""
    if alpha == 1.0:
        return w
    a = min(max(alpha, 0.0), 1.0)
    return np.array([int(x * a * 10000) / 10000 for x in w])


def pick_rows(matrices: EmotionMatrices, style: np.ndarray, random_rows: bool,
              rng: np.random.Generator) -> list[int]:
    """Per emotion group: a random row, or the speaker-matrix row with the highest cosine to the style."""
    rows = []
    for spk in matrices.speaker:
        if random_rows:
            rows.append(int(rng.integers(0, spk.shape[0])))
            continue
        s = style.reshape(-1)
        cos = spk @ s / (np.maximum(np.linalg.norm(spk, axis=1), 1e-8) * max(np.linalg.norm(s), 1e-8))
        rows.append(int(np.argmax(cos)))
    return rows


def vector_emovec(w: np.ndarray, rows: list[int], matrices: EmotionMatrices, own: np.ndarray) -> np.ndarray:
    """sum_g w_g * emo_matrix_g[row_g] + (1 - sum w) * own  -> (1, d)."""
    mix = sum(wg * m[r] for wg, m, r in zip(w, matrices.emotion, rows))
    return (mix[None, :] + (1.0 - w.sum()) * own).astype(np.float32)
