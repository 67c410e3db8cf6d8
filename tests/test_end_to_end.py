"""End to end: the runtime pipeline reproduces a torch reference pipeline on the tiny checkpoint.

One synthetic voice prompt (a 3 s stereo 24 kHz WAV, so the mono mixdown and both resamplers run) and
one text go through the whole runtime, file to waveform, with greedy decoding and caller-given CFM noise:

    prepare_speaker -> emotion_vector -> generate_codes(greedy) -> decode_mel(noise) -> vocode

The reference is built only from the torch modules (`load_models`) fed with the numpy front-end features
of the same file; the front end itself has its own parity tests (tests/runtime/test_audio*.py), so here it
is shared and everything after it is independent: torch encoders, the KV-cache-free greedy reference
(`export.reference`), `cfm_reference` and the torch BigVGAN. Every stage is compared, so a failure
names the first stage that drifts. That the runtime side runs without importing torch is covered by
tests/runtime/test_torch_free.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from indextts2_onnx.export import reference  # noqa: E402
from indextts2_onnx.export.bundle import load_models  # noqa: E402
from indextts2_onnx.export.checkpoint import CheckpointPaths  # noqa: E402
from indextts2_onnx.export.config import load_config  # noqa: E402
from indextts2_onnx.export.modules.s2mel import cfm_reference  # noqa: E402
from indextts2_onnx.runtime import IndexTTS2  # noqa: E402
from indextts2_onnx.runtime.audio import (  # noqa: E402
    emotion_waveform, kaldi_fbank, load_audio, log_mel, seamless_features, speaker_waveforms)
from indextts2_onnx.runtime.s2mel import target_frames  # noqa: E402

TEXT = "HELLO WORLD, THIS IS A TEST."
MAX_CODES = 80
STEPS = 4
CFG_RATE = 0.7
PENALTY = 10.0  # upstream's repetition penalty, the runtime's default
NOISE_SEED = 1234


def write_voice(path, sr: int = 24_000, seconds: float = 3.0) -> None:
    """A voice-like stereo prompt: a gliding harmonic series under a syllable-rate envelope."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = (0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)) * np.minimum(1.0, 10 * t) * np.minimum(1.0, 10 * (seconds - t))
    noise = np.random.default_rng(0).standard_normal(t.shape) * 0.01
    mono = 0.25 * envelope * voice + noise
    stereo = np.stack([mono, 0.8 * mono + 0.02 * np.sin(2 * np.pi * 300 * t)], axis=1)
    sf.write(str(path), stereo.astype(np.float32), sr, subtype="PCM_16")


def min_margin(gpt, latent, emovec, ids, codes, logits) -> float:
    """Smallest gap between the best and second-best penalised score over the reference's steps."""
    seen = reference.decode_prefix(gpt, latent, emovec, ids)[1]
    gaps = []
    for code, step_logits in zip(codes, logits):
        top = torch.topk(reference.repetition_penalty(step_logits, seen, PENALTY), 2).values
        gaps.append(float(top[0] - top[1]))
        seen.append(code)
    return min(gaps)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "prompt.wav"
    write_voice(path)
    return path


@pytest.fixture(scope="module")
def runtime_run(tiny_bundle, voice):
    """The runtime side: file -> waveform, through the public API only."""
    tts = IndexTTS2(tiny_bundle)
    ids = tts.tokenize(TEXT)[0]
    spk = tts.prepare_speaker(voice)
    emovec = tts.emotion_vector(spk)
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=True, max_codes=MAX_CODES)
    assert codes.shape[0] > 0, "the tiny GPT stopped at once: pick another text"
    shape = (1, tts.manifest.acoustic.n_mels, spk.ref_mel.shape[2] + target_frames(codes.shape[0]))
    noise = np.random.default_rng(NOISE_SEED).standard_normal(shape, dtype=np.float32)
    mel = tts.decode_mel(codes, latent, spk, steps=STEPS, cfg_rate=CFG_RATE, noise=noise)
    wav = tts.vocode(mel)
    return dict(ids=ids, spk=spk, emovec=emovec, codes=codes, latent=latent, noise=noise, mel=mel, wav=wav,
                filterbank=np.load(tiny_bundle / tts.manifest.tables["mel_filterbank"]))


@pytest.fixture(scope="module")
def torch_run(tiny_checkpoint, voice, runtime_run):
    """The reference side: numpy front-end features of the same file, then torch modules only.

    Only the text ids and the CFM noise are taken from the runtime run (both are inputs, not results)."""
    cfg = load_config(tiny_checkpoint / "config.yaml")
    m = load_models(CheckpointPaths.of(tiny_checkpoint, cfg), cfg, lambda msg: None)
    ids = runtime_run["ids"]
    wav, sr = load_audio(voice)
    audio_22k, audio_16k = speaker_waveforms(wav, sr)
    features, mask = seamless_features(audio_16k)
    emo_features, emo_mask = seamless_features(emotion_waveform(wav, sr))
    fbank = kaldi_fbank(audio_16k)
    fbank = fbank - fbank.mean(axis=0, keepdims=True)  # upstream: fbank minus its time mean
    ref_mel = torch.from_numpy(log_mel(audio_22k, runtime_run["filterbank"]).astype(np.float32))
    n_ref = ref_mel.shape[2]
    with torch.no_grad():
        semantic = m.semantic_encoder(torch.from_numpy(features), torch.from_numpy(mask).long())
        _, s_ref = m.codec.quantize(semantic)
        emotion = m.semantic_encoder(torch.from_numpy(emo_features), torch.from_numpy(emo_mask).long())
        style = m.campplus(torch.from_numpy(fbank.astype(np.float32))[None])
        prompt_condition = m.length_regulator(s_ref, torch.tensor(n_ref))
        speaker_latent = m.gpt.speaker_latent(semantic)
        emovec = m.gpt.emotion_vector(emotion)
    out, logits = reference.greedy_codes(m.gpt, speaker_latent, emovec, ids, MAX_CODES, PENALTY, return_logits=True)
    margin = min_margin(m.gpt, speaker_latent, emovec, ids, out, logits)
    stop = m.gpt.cfg.stop_mel_token
    codes = out[: out.index(stop)] if stop in out else out
    assert codes, "the tiny GPT stopped at once: pick another text"
    latent = reference.latent(m.gpt, speaker_latent, emovec, ids, codes)
    frames = target_frames(len(codes))
    noise = torch.from_numpy(runtime_run["noise"])
    with torch.no_grad():
        content = m.codec.vq2emb(torch.tensor(codes)[None]) + m.gpt_layer(latent)
        cond = m.length_regulator(content, torch.tensor(frames))
        mu = torch.cat([prompt_condition, cond], dim=1)
        assert noise.shape[2] == mu.shape[1], "the runtime drew noise for another length: codes differ"
        mel = cfm_reference(m.dit, mu, torch.tensor([mu.shape[1]]), ref_mel, style, noise,
                            steps=STEPS, cfg_rate=CFG_RATE)[..., n_ref:]
        out_wav = m.bigvgan(mel)[0, 0]
    return dict(semantic=semantic.numpy(), emotion_semantic=emotion.numpy(), style=style.numpy(),
                ref_mel=ref_mel.numpy(), prompt_condition=prompt_condition.numpy(), emovec=emovec.numpy(),
                margin=margin, codes=codes, latent=latent.numpy(), mel=mel.numpy(), wav=out_wav.numpy())


def test_speaker_matches_torch(runtime_run, torch_run):
    spk = runtime_run["spk"]
    np.testing.assert_array_equal(spk.ref_mel, torch_run["ref_mel"])  # the same numpy front end
    for name in ("semantic", "emotion_semantic", "style", "prompt_condition"):
        ours, ref = getattr(spk, name), torch_run[name]
        assert ours.shape == ref.shape, name
        # fp32 ONNX vs torch; the codec's argmax keeps prompt_condition exact-ish unless a code flips
        np.testing.assert_allclose(ours, ref, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(runtime_run["emovec"], torch_run["emovec"], atol=1e-4)


def test_greedy_codes_match_token_for_token(runtime_run, torch_run):
    # fp32 ONNX and torch differ by ~1e-6: a step whose top two penalised scores are closer than this
    # could flip without any bug, so first check the case has no such near-tie.
    assert torch_run["margin"] > 1e-4, "near-tie in the reference: pick another text or prompt"
    assert len(torch_run["codes"]) >= 5  # a real sequence, not an immediate stop
    assert runtime_run["codes"].tolist() == torch_run["codes"]


def test_latent_matches_torch(runtime_run, torch_run):
    assert runtime_run["latent"].shape == torch_run["latent"].shape
    np.testing.assert_allclose(runtime_run["latent"], torch_run["latent"], atol=1e-4)  # fp32, ONNX vs torch


def test_mel_matches_torch(runtime_run, torch_run):
    mel = runtime_run["mel"]
    assert mel.shape == torch_run["mel"].shape == (1, 80, target_frames(len(torch_run["codes"])))
    # fp32 differences from every earlier stage, carried through 4 Euler steps of the DiT with CFG
    np.testing.assert_allclose(mel, torch_run["mel"], atol=1e-3)


def test_waveform_matches_torch(runtime_run, torch_run):
    wav = runtime_run["wav"]
    assert wav.shape == torch_run["wav"].shape == (256 * runtime_run["mel"].shape[2],)
    assert wav.dtype == np.float32 and np.abs(wav).max() <= 1.0
    # the mel's fp32 differences after the vocoder (its own graph tolerance is 5e-4 on identical input)
    np.testing.assert_allclose(wav, torch_run["wav"], atol=1e-3)
