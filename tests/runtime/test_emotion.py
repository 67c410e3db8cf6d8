"""emotion_vector: upstream's three ways of conditioning on emotion, against torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from indextts2_onnx.runtime import IndexTTS2, InputError  # noqa: E402
from test_generate import random_speaker  # noqa: E402

ATOL = 1e-4  # fp32, ONNX graph vs torch module


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle)


def E(gpt, features: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return gpt.emotion_vector(torch.from_numpy(features))


def test_no_emotion_input_uses_the_speakers_emotion_features(tts, tiny_gpt):
    spk = random_speaker(0)
    np.testing.assert_allclose(tts.emotion_vector(spk), E(tiny_gpt, spk.emotion_semantic).numpy(), atol=ATOL)
    # alpha is forced to 1 without an emotion prompt (upstream)
    np.testing.assert_allclose(tts.emotion_vector(spk, alpha=0.2), tts.emotion_vector(spk), atol=0)


def test_emotion_prompt_is_mixed_with_alpha(tts, tiny_gpt):
    spk, emo = random_speaker(0), random_speaker(1)
    base, target = E(tiny_gpt, spk.semantic), E(tiny_gpt, emo.emotion_semantic)
    for alpha in (0.0, 0.35, 1.0):
        want = tiny_gpt.merge_emotion(base, target, alpha).numpy()
        np.testing.assert_allclose(tts.emotion_vector(spk, emotion_audio=emo, alpha=alpha), want, atol=ATOL)


def test_emotion_vector_uses_nearest_matrix_rows(tts, tiny_gpt, tiny_checkpoint):
    spk = random_speaker(2)
    emo_m = torch.load(tiny_checkpoint / "feat2.pt", weights_only=True)
    spk_m = torch.load(tiny_checkpoint / "feat1.pt", weights_only=True)
    sizes = tts.manifest.emo_num
    w = [0.1, 0.0, 0.3, 0.0, 0.0, 0.2, 0.0, 0.05]
    # upstream infer_v2: nearest row per group by cosine to the style, weighted sum, plus the rest
    style = torch.from_numpy(spk.style)
    rows = [int(torch.argmax(F.cosine_similarity(style, m, dim=1))) for m in torch.split(spk_m, sizes)]
    mat = sum(wi * m[r] for wi, m, r in zip(w, torch.split(emo_m, sizes), rows))
    want = (mat.unsqueeze(0) + (1 - sum(w)) * E(tiny_gpt, spk.emotion_semantic)).numpy()
    np.testing.assert_allclose(tts.emotion_vector(spk, vector=w), want, atol=ATOL)
    # emotion audio is ignored when a vector is given
    np.testing.assert_array_equal(tts.emotion_vector(spk, vector=w, emotion_audio=random_speaker(5)),
                                  tts.emotion_vector(spk, vector=w))


def test_vector_scaling_by_alpha_truncates_to_four_decimals(tts):
    spk = random_speaker(2)
    w = [0.33333, 0, 0, 0, 0, 0, 0, 0.77777]
    scaled = [int(x * 0.5 * 1e4) / 1e4 for x in w]  # upstream: clamp(alpha, 0, 1), 4 decimals
    np.testing.assert_allclose(tts.emotion_vector(spk, vector=w, alpha=0.5),
                               tts.emotion_vector(spk, vector=scaled), atol=0)


def test_random_rows_are_seeded(tts):
    spk = random_speaker(3)
    w = [0.2] * 4 + [0.0] * 4
    a = tts.emotion_vector(spk, vector=w, random_rows=True, seed=1)
    assert np.array_equal(a, tts.emotion_vector(spk, vector=w, random_rows=True, seed=1))
    others = [tts.emotion_vector(spk, vector=w, random_rows=True, seed=s) for s in range(2, 8)]
    assert any(not np.allclose(a, o) for o in others)


@pytest.mark.parametrize("bad", [[0.1] * 7, [0.1] * 9, [float("nan")] + [0.0] * 7, "calm", [[0.1, 0.2]]])
def test_bad_emotion_vector_is_a_clear_error(tts, bad):
    with pytest.raises(InputError, match="emotion vector"):
        tts.emotion_vector(random_speaker(0), vector=bad)
