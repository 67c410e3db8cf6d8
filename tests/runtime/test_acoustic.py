"""The acoustic runtime stages against the torch modules: prompt encoding, mel decoding, vocoder."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from indextts2_onnx.export.bundle import load_models  # noqa: E402
from indextts2_onnx.export.checkpoint import CheckpointPaths  # noqa: E402
from indextts2_onnx.export.config import load_config  # noqa: E402
from indextts2_onnx.export.modules.s2mel import cfm_reference  # noqa: E402
from indextts2_onnx.runtime import IndexTTS2, InputError, Speaker  # noqa: E402
from indextts2_onnx.runtime.s2mel import target_frames  # noqa: E402


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle)


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    cfg = load_config(tiny_checkpoint / "config.yaml")
    return load_models(CheckpointPaths.of(tiny_checkpoint, cfg), cfg, lambda msg: None)


def prompt_inputs(seed: int, frames: int = 75, mel_frames: int = 129):
    rng = np.random.default_rng(seed)
    mask = np.ones((1, frames), np.int64)
    mask[0, -1] = 0  # an odd fbank frame count leaves the last stacked frame masked (quirk 8)
    return dict(features=rng.standard_normal((1, frames, 160)).astype(np.float32), mask=mask,
                emotion_features=rng.standard_normal((1, frames - 4, 160)).astype(np.float32),
                emotion_mask=np.ones((1, frames - 4), np.int64),
                fbank=rng.standard_normal((2 * frames, 80)).astype(np.float32) * 3 + 1,
                ref_mel=rng.standard_normal((1, 80, mel_frames)).astype(np.float32))


def test_speaker_from_features_matches_torch(tts, models):
    x = prompt_inputs(0)
    spk = tts.speaker_from_features(**x)
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    with torch.no_grad():
        semantic = models.semantic_encoder(t["features"], t["mask"])
        _, s_ref = models.codec.quantize(semantic)
        emotion = models.semantic_encoder(t["emotion_features"], t["emotion_mask"])
        fbank = t["fbank"] - t["fbank"].mean(0, keepdim=True)  # upstream: fbank minus its time mean
        style = models.campplus(fbank[None])
        condition = models.length_regulator(s_ref, torch.tensor(x["ref_mel"].shape[2]))
    # fp32 ONNX vs torch; the codec's argmax makes S_ref exact unless a code flips (then this fails loudly)
    np.testing.assert_allclose(spk.semantic, semantic.numpy(), atol=1e-4)
    np.testing.assert_allclose(spk.emotion_semantic, emotion.numpy(), atol=1e-4)
    np.testing.assert_allclose(spk.style, style.numpy(), atol=1e-4)
    np.testing.assert_allclose(spk.prompt_condition, condition.numpy(), atol=1e-4)
    assert spk.prompt_condition.shape[1] == x["ref_mel"].shape[2]


def random_segment(tts, seed: int, n: int = 23):
    rng = np.random.default_rng(seed)
    a = tts.manifest.acoustic
    codes = rng.integers(0, a.codebook_size, n)
    latent = rng.standard_normal((1, n, tts.manifest.gpt.model_dim)).astype(np.float32)
    f = 40
    spk = Speaker(semantic=rng.standard_normal((1, 30, a.semantic_dim)),
                  emotion_semantic=rng.standard_normal((1, 30, a.semantic_dim)),
                  style=rng.standard_normal((1, a.style_dim)), ref_mel=rng.standard_normal((1, a.n_mels, f)),
                  prompt_condition=rng.standard_normal((1, f, a.content_dim)))
    noise = rng.standard_normal((1, a.n_mels, f + target_frames(n))).astype(np.float32)
    return codes, latent, spk, noise


@pytest.mark.parametrize("n, steps, cfg_rate", [(23, 6, 0.7), (7, 3, 0.0), (50, 2, 0.5)])
def test_decode_mel_matches_torch_cfm_with_given_noise(tts, models, n, steps, cfg_rate):
    codes, latent, spk, noise = random_segment(tts, n, n)
    mel = tts.decode_mel(codes, latent, spk, steps=steps, cfg_rate=cfg_rate, noise=noise)
    frames = target_frames(n)
    assert mel.shape == (1, 80, frames) and frames == int(n * 1.72)
    with torch.no_grad():
        content = models.codec.vq2emb(torch.from_numpy(codes)[None]) + models.gpt_layer(torch.from_numpy(latent))
        cond = models.length_regulator(content, torch.tensor(frames))
        mu = torch.cat([torch.from_numpy(spk.prompt_condition), cond], dim=1)
        total = mu.shape[1]
        ref = cfm_reference(models.dit, mu, torch.tensor([total]), torch.from_numpy(spk.ref_mel),
                            torch.from_numpy(spk.style), torch.from_numpy(noise), steps=steps, cfg_rate=cfg_rate)
    # fp32 graph vs torch through `steps` Euler steps: errors add up a little per step
    np.testing.assert_allclose(mel, ref[:, :, spk.ref_mel.shape[2]:].numpy(), atol=5e-4)


def test_decode_mel_is_seeded(tts):
    codes, latent, spk, _ = random_segment(tts, 3)
    a = tts.decode_mel(codes, latent, spk, steps=2, seed=4)
    assert np.array_equal(a, tts.decode_mel(codes, latent, spk, steps=2, seed=4))
    assert not np.allclose(a, tts.decode_mel(codes, latent, spk, steps=2, seed=5))


@pytest.mark.parametrize("frames", [5, 33, 87])
def test_vocode_matches_torch(tts, models, frames):
    mel = np.random.default_rng(frames).standard_normal((1, 80, frames)).astype(np.float32)
    wav = tts.vocode(mel)
    with torch.no_grad():
        ref = models.bigvgan(torch.from_numpy(mel))[0, 0].numpy()
    assert wav.shape == (256 * frames,) and wav.dtype == np.float32
    assert np.abs(wav).max() <= 1.0
    np.testing.assert_allclose(wav, ref, atol=5e-4)  # the vocoder graph's export tolerance (test_graphs)


def test_bad_acoustic_inputs_are_clear_errors(tts):
    codes, latent, spk, noise = random_segment(tts, 1)
    with pytest.raises(InputError, match="codes: empty"):
        tts.decode_mel(codes[:0], latent[:, :0], spk)
    with pytest.raises(InputError, match="codes: ids must lie"):
        tts.decode_mel(codes + 10_000, latent, spk)
    with pytest.raises(InputError, match="latent: expected shape"):
        tts.decode_mel(codes, latent[:, :3], spk)
    with pytest.raises(InputError, match="noise: expected shape"):
        tts.decode_mel(codes, latent, spk, noise=noise[:, :, :-1])
    with pytest.raises(InputError, match="steps=0"):
        tts.decode_mel(codes, latent, spk, steps=0)
    with pytest.raises(InputError, match="mel: expected shape"):
        tts.vocode(np.zeros((1, 79, 10), np.float32))
    x = prompt_inputs(1)
    with pytest.raises(InputError, match="speaker features: no valid frames"):
        tts.speaker_from_features(**(x | {"mask": np.zeros_like(x["mask"])}))
