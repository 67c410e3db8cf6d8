"""Turn the text answer of upstream's emotion-from-text model (QwenEmotion) into 8 emotion scores.

Upstream IndexTTS2 (`indextts/infer_v2.py`, `QwenEmotion.inference` / `convert` / `normalize_content`)
asks a Qwen3 fine-tune to classify a text and parses its answer, normally JSON such as
`{"高兴": 0.8, "悲伤": 0.1}`, into the emotion vector. This module reproduces that parsing without torch
or transformers, so the same answer gives the same vector here, in the same order:

1. `json.loads(answer)`; when that is not JSON, a regex over `key: number` pairs (values through float()).
2. If the lower-cased emotion text contains a melancholic word, the values of 悲伤 (sad) and 低落
   (melancholic) are swapped (missing = 0.0). Upstream does this BEFORE the label normalisation of 3.
3. Label-only answers: a JSON string naming an emotion (Chinese key, or English name in any case, spaces
   around it ignored), or such a label under `emotion`, `emotion_label`, `label`, `情感`, `情绪`, becomes
   that emotion = 1.0 when the answer has no Chinese score key; a score key whose value is a label is
   rewritten (its own name -> 1.0; another emotion's name -> 0.0 here and 1.0 there).
4. Only the Chinese keys are scores (English names count only as label values); missing keys are 0.0;
   each value is clamped to [0.0, 1.2].
5. If every value is <= 0, calm (自然) = 1.0.

Upstream raises on some answers (a regex number float() rejects, a non-numeric score, a melancholic swap
on an answer that is not a JSON object, ...). This parser never raises: such an answer, or one that names
no emotion at all, gives calm 1.0 with `parsed=False` so the caller can warn.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

EMOTIONS_CN: tuple[str, ...] = ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
EMOTIONS_EN: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
MELANCHOLIC_WORDS: tuple[str, ...] = ("低落", "melancholy", "melancholic", "depression", "depressed", "gloomy")
SCORE_MIN, SCORE_MAX = 0.0, 1.2

LABEL_KEYS: tuple[str, ...] = ("emotion", "emotion_label", "label", "情感", "情绪")  # upstream's order
_SAD, _MELANCHOLIC, _CALM = "悲伤", "低落", "自然"
_PAIR = re.compile(r'([^\s":.,]+?)"?\s*:\s*([\d.]+)')  # upstream's fallback regex, verbatim
_EN_TO_CN = dict(zip(EMOTIONS_EN, EMOTIONS_CN))


@dataclass(frozen=True)
class ParsedEmotion:
    """The 8 scores in `EMOTIONS_CN` order, each in [SCORE_MIN, SCORE_MAX], never all zero.

    `parsed` is False when upstream would have raised on this answer, or when the answer (after label
    normalisation, before the melancholic swap) holds none of the 8 Chinese emotion keys (garbage, `{}`,
    English-only score keys, an unknown label); the vector is then calm 1.0, which is what upstream
    returns in the no-key case. An answer whose emotion keys are all 0 is parsed (calm 1.0 by rule 5).
    """

    vector: tuple[float, ...]
    parsed: bool


_UNPARSED = ParsedEmotion(tuple(1.0 if k == _CALM else 0.0 for k in EMOTIONS_CN), parsed=False)


def _decode(answer: str) -> tuple[bool, Any]:
    """(ok, content): the JSON value, else upstream's regex pairs; ok False where upstream raises."""
    try:
        return True, json.loads(answer)
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError):  # over-long integer literal, very deep nesting: not JSONDecodeError
        return False, None
    try:
        return True, {m.group(1): float(m.group(2)) for m in _PAIR.finditer(answer)}
    except ValueError:  # "1.2.3", ".", "0.5." match [\d.]+ but float() rejects them; upstream raises
        return False, None


def _is_melancholic(emotion_text: str) -> bool:
    lowered = emotion_text.lower()
    return any(word in lowered for word in MELANCHOLIC_WORDS)


def _swap_melancholic(content: Any) -> tuple[bool, Any]:
    """(ok, content) with 悲伤 and 低落 exchanged; ok False for a non-object (upstream: no `.get`)."""
    if not isinstance(content, dict):
        return False, None
    swapped = dict(content)
    swapped[_SAD], swapped[_MELANCHOLIC] = content.get(_MELANCHOLIC, 0.0), content.get(_SAD, 0.0)
    return True, swapped


def _label_key(value: Any) -> str | None:
    """The Chinese key a label names ("悲伤", " Sad ", "SAD" -> "悲伤"), else None."""
    if not isinstance(value, str):
        return None
    label = value.strip()
    if label in EMOTIONS_CN:
        return label
    return _EN_TO_CN.get(label.lower())


def _normalise_labels(content: Any) -> dict[Any, Any]:
    """A new dict with label-only answers turned into scores (see module docstring, step 3)."""
    scores: dict[Any, Any] = dict(content) if isinstance(content, dict) else {}
    named = _label_key(content)
    for key in LABEL_KEYS:
        if named is not None:
            break
        named = _label_key(scores.get(key))
    if named is not None and not any(key in scores for key in EMOTIONS_CN):
        scores[named] = 1.0
    for key in EMOTIONS_CN:  # in vector order, mutating as it goes, as upstream does
        named = _label_key(scores.get(key))
        if named is not None:
            scores[key] = 1.0 if named == key else 0.0
            scores[named] = 1.0
    return scores


def _clamp(value: Any) -> float | None:
    """A score in [SCORE_MIN, SCORE_MAX]; None for a non-number (upstream's min() raises TypeError).

    Comparisons as upstream's `max(0.0, min(1.2, value))`, so bools count as 0/1, integers of any size
    work, +inf -> 1.2, -inf -> 0.0, and NaN -> 1.2 (min(1.2, nan) keeps 1.2): never non-finite.
    """
    if not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and math.isnan(value):
        return SCORE_MAX
    return float(max(SCORE_MIN, min(SCORE_MAX, value)))


def _vector(scores: dict[Any, Any]) -> tuple[float, ...] | None:
    """The clamped scores in vector order with the all-zero -> calm rule; None if one is non-numeric."""
    values = [_clamp(scores.get(key, 0.0)) for key in EMOTIONS_CN]
    if any(value is None for value in values):
        return None
    if all(value <= 0.0 for value in values):
        return _UNPARSED.vector
    return tuple(values)


def parse_emotion_answer(answer: str, emotion_text: str) -> ParsedEmotion:
    """Upstream's emotion vector for the model's `answer` (text after the last `</think>`).

    `emotion_text` is the text that was classified; it only decides the melancholic swap. Never raises;
    see `ParsedEmotion` for what `parsed=False` means.
    """
    if not isinstance(answer, str) or not isinstance(emotion_text, str):
        return _UNPARSED
    ok, content = _decode(answer)
    if not ok:
        return _UNPARSED
    names_emotion = any(key in _normalise_labels(content) for key in EMOTIONS_CN)
    if _is_melancholic(emotion_text):
        ok, content = _swap_melancholic(content)
        if not ok:
            return _UNPARSED
    vector = _vector(_normalise_labels(content))
    if vector is None or not names_emotion:
        return _UNPARSED
    return ParsedEmotion(vector, parsed=True)
