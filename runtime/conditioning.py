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
from .presets import LIMITS

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
    """The 8 emotion weights as float64 (8,), or InputError.

    Each weight must be a finite number >= 0 (`presets.LIMITS["emotion_weight"]`). Upstream checks
    nothing: a NaN or inf weight reaches its sampler as NaN probabilities and crashes (or, with alpha
    != 1, `int(nan)` raises), and a negative weight subtracts an emotion, which no emotion source
    produces (the WebUI's sliders and QwenEmotion give 0..1.2). Weights summing past 1 are kept, as
    upstream keeps them: the speaker's own emotion then enters with the negative weight 1 - sum."""
    try:
        w = np.asarray(vector, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputError(f"emotion vector: not a list of numbers ({e})",
                         f"one weight per emotion, in order: {', '.join(EMOTIONS)}") from e
    if w.shape != (len(EMOTIONS),):
        raise InputError(f"emotion vector: {w.shape[0]} values, needs {len(EMOTIONS)}",
                         f"one weight per emotion, in order: {', '.join(EMOTIONS)}")
    for name, value in zip(EMOTIONS, w):
        LIMITS["emotion_weight"].check(f"emotion vector: {name}", float(value))
    return w


def check_alpha(alpha) -> float:
    """emotion_alpha as a float, or InputError when it is not a finite number.

    Upstream's behaviour is kept wherever it is defined: with an emotion vector alpha is clamped to
    [0, 1] (`scale_vector`); with emotion audio it extrapolates (`merge`: alpha 2 moves twice as far
    from the speaker's emotion, alpha -1 away from the prompt's); without either it is ignored (forced
    to 1). NaN or inf is refused on every path: on the audio path upstream turns it into a NaN emotion
    vector that crashes its sampler; elsewhere it can only be a mistake."""
    return float(LIMITS["emotion_alpha"].check("emotion_alpha", alpha))


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
