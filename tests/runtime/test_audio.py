"""Parity tests for the torch-free audio front end (runtime/audio.py, export/filterbanks.py).

References: small torch implementations of the documented upstream algorithms written here (torchaudio
has no build for our torch: its `Resample` sinc kernel, `compliance.kaldi.fbank`, and the s2mel
`mel_spectrogram`), transformers' SeamlessM4TFeatureExtractor and mel_filter_bank, and soxr itself.
Signals are synthetic and generated here."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from indextts2_onnx.runtime import InputError
from indextts2_onnx.runtime import audio as fa

soxr = pytest.importorskip("soxr")


def speech_like(n: int, sr: int, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 110-220 Hz f0 under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase + k) / k for k in range(1, 30) if k * 190 < sr / 2)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2 / 4
    x = 0.3 * envelope * voiced + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


# ------------------------------------------------------------------------------ torch references

def torch_resample(x: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """torchaudio.transforms.Resample (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), written from
    its documented algorithm: gcd-reduced polyphase Hann-windowed sinc kernel (float64, stored float32),
    applied with conv1d of stride orig, length ceil(new * n / orig) taken on a float32 tensor."""
    import torch

    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    cutoff = min(orig, new) * 0.99
    width = math.ceil(6 * orig / cutoff)
    offsets = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    phases = torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new
    arg = ((phases + offsets) * cutoff).clamp(-6, 6)
    hann = torch.cos(arg * math.pi / 12) ** 2
    kernel = torch.special.sinc(arg) * hann * (cutoff / orig)
    kernel = kernel.to(torch.float32)[:, None, :]                      # (new, 1, K)
    wav = torch.from_numpy(x)[None, None]
    wav = torch.nn.functional.pad(wav, (width, width + orig))
    out = torch.nn.functional.conv1d(wav, kernel, stride=orig)        # (1, new, blocks)
    out = out.transpose(1, 2).reshape(-1)
    n_out = int(torch.ceil(torch.as_tensor(new * x.shape[-1] / orig)))
    return out[:n_out].numpy()


def torch_kaldi_fbank(x: np.ndarray) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank(x[None], num_mel_bins=80, dither=0, sample_frequency=16000),
    documented defaults, in float32 torch: snip_edges framing, DC removal, replicate-pad pre-emphasis,
    povey window, rfft 512, power, Kaldi mel bins (256 FFT bins + zero column), log(max(., eps))."""
    import torch

    wav = torch.from_numpy(x)
    frames = wav.unfold(0, 400, 160)                                   # (F, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.nn.functional.pad(frames[None], (1, 0), mode="replicate")[0][:, :-1]
    frames = frames - 0.97 * prev
    frames = frames * torch.hann_window(400, periodic=False).pow(0.85)
    frames = torch.nn.functional.pad(frames, (0, 112))
    power = torch.fft.rfft(frames).abs().pow(2)                        # (F, 257)

    def mel(f):
        return 1127.0 * torch.log(1.0 + f / 700.0)

    lo, hi = mel(torch.tensor(20.0)), mel(torch.tensor(8000.0))
    delta = (hi - lo) / 81
    b = torch.arange(80, dtype=torch.float32)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    m = mel(31.25 * torch.arange(256, dtype=torch.float32))[None]
    bank = torch.clamp(torch.minimum((m - left) / (center - left), (right - m) / (right - center)), min=0)
    bank = torch.nn.functional.pad(bank, (0, 1))                       # (80, 257)
    eps = torch.tensor(torch.finfo(torch.float32).eps)
    return torch.maximum(power @ bank.T, eps).log().numpy()


def torch_log_mel(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """IndexTTS2 s2mel mel_spectrogram(center=False): reflect pad 384, torch.stft with a periodic Hann
    window, sqrt(|X|^2 + 1e-9), mel basis, log(clamp(., 1e-5))."""
    import torch

    y = torch.nn.functional.pad(torch.from_numpy(x)[None, None], (384, 384), mode="reflect")[0]
    spec = torch.stft(y, 1024, hop_length=256, win_length=1024, window=torch.hann_window(1024),
                      center=False, normalized=False, onesided=True, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    return torch.log(torch.clamp(torch.from_numpy(basis) @ mag, min=1e-5)).numpy()


def transformers_slaney(sr=22050, n_fft=1024, n_mels=80, fmax=None) -> np.ndarray:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    bank = audio_utils.mel_filter_bank(num_frequency_bins=1 + n_fft // 2, num_mel_filters=n_mels,
                                       min_frequency=0.0, max_frequency=fmax or sr / 2, sampling_rate=sr,
                                       norm="slaney", mel_scale="slaney")
    return bank.T                                                      # librosa layout (n_mels, bins)


# ------------------------------------------------------------------------------------ resampling

@pytest.mark.parametrize("sr_in,sr_out", [(22050, 16000), (44100, 22050), (16000, 22050), (24000, 16000)])
@pytest.mark.parametrize("seconds", [0.37, 2.0])
def test_resample_sinc_matches_torchaudio_algorithm(sr_in, sr_out, seconds):
    pytest.importorskip("torch")
    x = speech_like(int(seconds * sr_in) + 3, sr_in)                  # odd-ish lengths
    got, ref = fa.resample_sinc(x, sr_in, sr_out), torch_resample(x, sr_in, sr_out)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 2e-5


def test_resample_sinc_length_follows_torchaudio_float32_ceil():
    """ceil(320 n / 441) is taken in float32 upstream: for long inputs it can be one short of the exact
    ceiling; both implementations must agree on it."""
    pytest.importorskip("torch")
    n = next(n for n in range(200_000, 201_000) if (320 * n) % 441 == 1)
    x = speech_like(n, 22050, seed=3)
    got, ref = fa.resample_sinc(x, 22050, 16000), torch_resample(x, 22050, 16000)
    assert got.shape == ref.shape == (320 * n // 441,)                # exact ceiling would be one more
    assert np.abs(got - ref).max() <= 2e-5


def test_resample_identity_and_soxr_length():
    x = speech_like(22050 + 7, 22050)
    assert np.array_equal(fa.resample_sinc(x, 22050, 22050), x)
    assert np.array_equal(fa.resample_soxr(x, 22050, 22050), x)
    y = fa.resample_soxr(x, 22050, 16000)
    assert y.dtype == np.float32 and y.shape == (math.ceil(x.size * 16000 / 22050),)
    direct = soxr.resample(x, 22050, 16000, "HQ")
    k = min(direct.size, y.size)
    assert np.array_equal(y[:k], direct[:k])


def test_speaker_and_emotion_waveforms_cap_after_resampling():
    x = speech_like(16 * 44100 + 11, 44100, seed=1)                   # 16 s > the 15 s cap
    a22, a16 = fa.speaker_waveforms(x, 44100)
    assert a22.shape == (15 * 22050,) and a16.shape == (15 * 16000,)
    assert np.array_equal(a22, fa.resample_soxr(x, 44100, 22050)[: 15 * 22050])
    assert np.array_equal(a16, fa.resample_sinc(a22, 22050, 16000))
    emo = fa.emotion_waveform(x, 44100)
    assert emo.shape == (15 * 16000,)
    assert np.array_equal(emo, fa.resample_soxr(x, 44100, 16000)[: 15 * 16000])
    assert not np.array_equal(emo, a16)                               # quirk 5: two different resamplers
    short = speech_like(22050 * 2 + 5, 22050)
    s22, s16 = fa.speaker_waveforms(short, 22050)
    assert np.array_equal(s22, short) and s16.shape == (math.ceil(320 * short.size / 441),)


# ------------------------------------------------------------------------------------- fbank / features

@pytest.mark.parametrize("n", [400, 16000, 16000 + 161, 3 * 16000 + 77])
def test_kaldi_fbank_matches_torchaudio_algorithm(n):
    pytest.importorskip("torch")
    x = speech_like(n, 16000, seed=n)
    got, ref = fa.kaldi_fbank(x), torch_kaldi_fbank(x)
    assert got.dtype == np.float32 and got.shape == ref.shape == (1 + (n - 400) // 160, 80)
    assert np.abs(got - ref).max() <= 1e-3                            # log values


@pytest.mark.parametrize("n", [8240, 8400, 16000, 3 * 16000 + 77])   # F = 50, 51, 99, 300
def test_seamless_features_match_transformers(n):
    transformers = pytest.importorskip("transformers")
    x = speech_like(n, 16000, seed=n)
    ref = transformers.SeamlessM4TFeatureExtractor(padding_value=1.0)(x, sampling_rate=16000,
                                                                      return_tensors="np")
    feats, mask = fa.seamless_features(x)
    frames = 1 + (n - 400) // 160
    assert feats.dtype == np.float32 and feats.shape == ref["input_features"].shape
    assert feats.shape == (1, math.ceil(frames / 2), 160)
    assert mask.dtype == np.int64 and np.array_equal(mask, ref["attention_mask"])
    assert mask[0, -1] == (frames % 2 == 0)                           # odd F: last row is half padding
    assert np.abs(feats - ref["input_features"]).max() <= 1e-4


def test_kaldi_mel_filterbank_matches_transformers_kaldi_bank():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ref = audio_utils.mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=20,
                                      max_frequency=8000, sampling_rate=16000, norm=None,
                                      mel_scale="kaldi", triangularize_in_mel_space=True)
    assert np.abs(fa.kaldi_mel_filterbank() - ref.T).max() <= 1e-12


def test_short_audio_is_an_input_error():
    with pytest.raises(InputError):
        fa.kaldi_fbank(np.zeros(399, np.float32))
    with pytest.raises(InputError):
        fa.seamless_features(np.zeros(559, np.float32))               # one frame: ddof=1 variance is NaN
    with pytest.raises(InputError):
        fa.log_mel(np.zeros(384, np.float32), np.zeros((80, 513), np.float32))


# --------------------------------------------------------------------------------- s2mel log-mel

def test_slaney_filterbank_matches_transformers():
    pytest.importorskip("torch")  # indextts2_onnx.export needs the export extra
    from indextts2_onnx.export.filterbanks import slaney_mel_filterbank

    bank = slaney_mel_filterbank()
    ref = transformers_slaney()
    assert bank.dtype == np.float32 and bank.shape == ref.shape == (80, 513)
    assert np.abs(bank - ref).max() <= 1e-6
    assert np.abs(slaney_mel_filterbank(fmax=8000) - transformers_slaney(fmax=8000)).max() <= 1e-6
    assert np.abs(slaney_mel_filterbank(16000, 512, 64) - transformers_slaney(16000, 512, 64)).max() <= 1e-6


@pytest.mark.parametrize("n", [385, 1024, 22050 + 131, 3 * 22050 + 255])
def test_log_mel_matches_torch(n):
    pytest.importorskip("torch")
    basis = transformers_slaney().astype(np.float32)
    x = speech_like(n, 22050, seed=n)
    got, ref = fa.log_mel(x, basis), torch_log_mel(x, basis)
    assert got.dtype == np.float32 and got.shape == ref.shape == (1, 80, n // 256)
    assert np.abs(got - ref).max() <= 1e-4


# ---------------------------------------------------------------------------------------- loading

def test_load_audio_files_round_trip(tmp_path):
    left, right = speech_like(8000, 16000, 1), speech_like(8000, 16000, 2)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    audio, sr = fa.load_audio(stereo)
    assert sr == 16000 and audio.dtype == np.float32 and audio.shape == (8000,)
    assert np.abs(audio - (left + right) / 2).max() <= 1 / 32768      # librosa-style channel mean

    for name, subtype, tol in [("a.flac", "PCM_24", 2 ** -23), ("b.wav", "PCM_U8", 2 ** -7),
                               ("c.wav", "PCM_24", 2 ** -23), ("d.flac", "PCM_16", 2 ** -15)]:
        sf.write(tmp_path / name, left, 22050, subtype=subtype)
        audio, sr = fa.load_audio(str(tmp_path / name))
        assert sr == 22050 and audio.shape == left.shape and np.abs(audio - left).max() <= tol, name


@pytest.mark.parametrize("name,subtype", [("e.ogg", "VORBIS"), ("f.mp3", "MPEG_LAYER_III")])
def test_load_audio_lossy_files(tmp_path, name, subtype):
    if subtype not in sf.available_subtypes(name.split(".")[-1].upper()):
        pytest.skip(f"this libsndfile cannot write {subtype}")
    x = speech_like(22050, 22050)
    sf.write(tmp_path / name, x, 22050, subtype=subtype)
    audio, sr = fa.load_audio(tmp_path / name)
    assert sr == 22050 and audio.dtype == np.float32 and abs(audio.size - x.size) <= 2048
    k = min(audio.size, x.size) - 2000
    assert np.corrcoef(audio[1000:k], x[1000:k])[0, 1] > 0.99


def test_load_audio_tuples():
    x = speech_like(1000, 24000)
    audio, sr = fa.load_audio((x.astype(np.float64), 24000))
    assert sr == 24000 and audio.dtype == np.float32 and np.array_equal(audio, x)
    pcm = (x * 32767).astype(np.int16)
    audio, _ = fa.load_audio((np.stack([pcm, pcm], axis=1), 24000))
    assert np.allclose(audio, pcm / 32768.0)
    for bad in [(np.zeros(0, np.float32), 16000), (x, 0), (x, "16k"), (x,), (np.full(10, np.nan), 16000)]:
        with pytest.raises(InputError):
            fa.load_audio(bad)


def test_load_audio_bad_files(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(InputError, match="nope.wav"):
        fa.load_audio(missing)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(InputError, match="notes.wav"):
        fa.load_audio(text)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(InputError, match="empty.wav"):
        fa.load_audio(empty)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(InputError, match="folder"):
        fa.load_audio(folder)


def test_front_end_runs_without_torch(tmp_path):
    """The whole front end, from a file to every feature, with torch and transformers unimportable."""
    wav = tmp_path / "prompt.wav"
    sf.write(wav, speech_like(3 * 44100 + 9, 44100), 44100, subtype="PCM_16")
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "librosa", "torchaudio"):
                    raise ImportError("front end imported " + name)
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from indextts2_onnx.runtime import audio as fa
        audio, sr = fa.load_audio({str(wav)!r})
        a22, a16 = fa.speaker_waveforms(audio, sr)
        feats, mask = fa.seamless_features(a16)
        fbank = fa.kaldi_fbank(a16)
        mel = fa.log_mel(a22, np.full((80, 513), 1e-3, np.float32))
        emo, emo_mask = fa.seamless_features(fa.emotion_waveform(audio, sr))
        print(a22.size, a16.size, feats.shape, fbank.shape, mel.shape, emo.shape)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n22 = 3 * 22050 + 5                                               # ceil((3 * 44100 + 9) / 2)
    n16 = math.ceil(320 * n22 / 441)
    frames = 1 + (n16 - 400) // 160
    assert out.stdout.split()[:2] == [str(n22), str(n16)]
    assert f"(1, {math.ceil(frames / 2)}, 160)" in out.stdout and f"({frames}, 80)" in out.stdout
    assert f"(1, 80, {n22 // 256})" in out.stdout
