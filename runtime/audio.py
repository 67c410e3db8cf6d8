"""Torch-free audio: loading, the two resamplers, Kaldi fbank, SeamlessM4T features, s2mel log-mel, WAV output.

Each function reproduces one upstream step (spec: architecture.md §3.1-§3.4, upstream-quirks.md 5-8) with
numpy, soundfile and soxr only:

    speaker prompt  -> load_audio -> speaker_waveforms -> audio_22k -> log_mel            (ref_mel, prompt)
                                                       -> audio_16k -> seamless_features  (w2v-BERT input)
                                                                    -> kaldi_fbank        (CAMPPlus input)
    emotion prompt  -> load_audio -> emotion_waveform  -> audio_16k -> seamless_features

The s2mel mel filter bank is not built here: the bundle ships it (export/filterbanks.py), as whisper ships
its mel filters, so that librosa is never needed at run time.
"""

from __future__ import annotations

import math
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Union

import numpy as np
import soundfile as sf

from .errors import InputError

# ---- rates and the prompt cap (infer_v2.py:340-352, 454-456, 508) ----
SPEAKER_SR = 22050          # librosa.load default: the speaker prompt and the s2mel / BigVGAN rate
SEMANTIC_SR = 16000         # w2v-BERT, CAMPPlus and the emotion prompt
MAX_PROMPT_SECONDS = 15     # upstream cuts *after* resampling: 15 * target_sr samples

# ---- input caps (checked from the file header, before decoding) ----
MAX_AUDIO_BYTES = 64 * 2**20  # 64 MiB: 6 min of 16-bit stereo 44.1 kHz WAV; a prompt needs 15 s
MAX_AUDIO_SECONDS = 600       # 10 min: a longer file is almost surely not a voice prompt
READ_SECONDS = MAX_PROMPT_SECONDS + 1  # decoded at most: the 15 s upstream keeps, plus a second of
                                       # context so the resamplers see the same samples up to the cut

# ---- torchaudio.transforms.Resample defaults (speaker path 22050 -> 16000, quirk 5) ----
SINC_WIDTH = 6              # lowpass_filter_width (zero crossings each side)
SINC_ROLLOFF = 0.99

# ---- Kaldi fbank: torchaudio.compliance.kaldi.fbank defaults, also SeamlessM4TFeatureExtractor ----
FBANK_FRAME = 400           # 25 ms at 16 kHz
FBANK_HOP = 160             # 10 ms
FBANK_NFFT = 512            # round_to_power_of_two(400)
FBANK_MELS = 80
FBANK_LOW_HZ = 20.0
FBANK_HIGH_HZ = 8000.0      # high_freq 0 -> Nyquist
PREEMPHASIS = 0.97
POVEY_POWER = 0.85          # povey window = symmetric Hann ** 0.85
CAMPPLUS_MIN_FRAMES = 8     # CAMPPlus (runtime/prompt.py) needs 8 fbank frames: the shortest prompt is 95 ms
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.1920928955078125e-07: log floor in both extractors

# ---- SeamlessM4TFeatureExtractor, w2v-bert-2.0 preprocessor_config.json ----
INT16_SCALE = 32768.0       # "Kaldi compliance": features are taken on int16-scaled audio
SEAMLESS_STRIDE = 2         # pairs of 10 ms frames stacked -> 160 dims, 50 Hz
SEAMLESS_PAD_VALUE = 1.0    # padding_value 1 (the class default 0.0 is overridden by the config)
SEAMLESS_NORM_EPS = 1e-7

# ---- s2mel mel spectrogram (indextts/s2mel/modules/audio.py, quirk 6) ----
MEL_NFFT = 1024             # = win_length
MEL_HOP = 256
MEL_PAD = (MEL_NFFT - MEL_HOP) // 2  # 384, reflect, both sides; then center=False
MEL_MAG_EPS = 1e-9          # |X| = sqrt(re^2 + im^2 + 1e-9)
MEL_LOG_FLOOR = 1e-5        # log(clamp(x, min=1e-5))

AudioSource = Union[str, Path, tuple]


# ------------------------------------------------------------------------------------------------ loading

def load_audio(source: AudioSource, max_seconds: float | None = READ_SECONDS) -> tuple[np.ndarray, int]:
    """Read a file soundfile can decode (wav, flac, ogg, mp3, ...) or take an `(array, sample_rate)` tuple.

    Returns `(audio float32, shape = (n,), sample_rate)`: mono by averaging the channels, as librosa.load
    does; integer arrays are scaled to [-1, 1) as soundfile scales integer PCM. Only the first
    `max_seconds` are decoded (None: all): upstream keeps 15 s after resampling, and the resamplers give
    the same samples up to that cut from 16 s as from the whole file. A file larger than
    MAX_AUDIO_BYTES or, by its header, longer than MAX_AUDIO_SECONDS is refused before decoding.
    Raises InputError naming the file for a missing, unreadable, oversized or empty source."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise InputError(f"audio tuple has {len(source)} items", "pass (array, sample_rate)")
        audio, sr = source
        sr = _check_rate(sr, "audio array")
        audio = np.asarray(audio)
        if max_seconds is not None:
            audio = audio[: int(math.ceil(max_seconds * sr))]
        return _to_mono(_as_float(audio), "audio array"), sr
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"audio: expected a file path or (samples, sample_rate), got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: audio file not found", "check the path")
    frames = _checked_frames(path, max_seconds)
    try:
        audio, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)  # (frames, channels)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError by backend
        raise InputError(f"{path}: not a readable audio file ({e})",
                         "use wav, flac, ogg or mp3") from e
    return _to_mono(audio, str(path)), _check_rate(sr, str(path))


def _checked_frames(path: Path, max_seconds: float | None) -> int:
    """Frames to decode from `path` (-1: all), after the size and duration caps (InputError naming it)."""
    size = path.stat().st_size
    if size > MAX_AUDIO_BYTES:
        raise InputError(f"{path}: {size / 2**20:.3g} MiB, larger than the {MAX_AUDIO_BYTES / 2**20:.3g} MiB "
                         "accepted for a voice prompt", f"cut it to the {MAX_PROMPT_SECONDS} s the model uses")
    try:
        info = sf.info(str(path))
    except Exception as e:  # as in load_audio
        raise InputError(f"{path}: not a readable audio file ({e})", "use wav, flac, ogg or mp3") from e
    known = info.samplerate > 0 and 0 <= info.frames < 2**62  # pipes and some streams report no length
    if known and info.frames > MAX_AUDIO_SECONDS * info.samplerate:
        raise InputError(f"{path}: {info.frames / info.samplerate:.0f} s long, longer than the "
                         f"{MAX_AUDIO_SECONDS} s accepted for a voice prompt",
                         f"cut it to the {MAX_PROMPT_SECONDS} s the model uses")
    if max_seconds is None or info.samplerate <= 0:
        return -1
    return int(math.ceil(max_seconds * info.samplerate))


def _as_float(audio: np.ndarray) -> np.ndarray:
    """float32 audio; integer PCM is divided by 2**(bits-1) like soundfile's integer -> float read."""
    if np.issubdtype(audio.dtype, np.integer):
        return (audio / float(-np.iinfo(audio.dtype).min)).astype(np.float32)
    return audio.astype(np.float32, copy=False)


def _to_mono(audio: np.ndarray, name: str) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32 channel mean; empty or non-finite audio is an InputError."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)  # librosa.to_mono: float32 mean over channels
    if audio.ndim != 1:
        raise InputError(f"{name}: expected (samples,) or (samples, channels) audio, got shape {audio.shape}")
    if audio.size == 0:
        raise InputError(f"{name}: audio is empty", "use a prompt of at least a second of speech")
    if not np.all(np.isfinite(audio)):
        raise InputError(f"{name}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(audio)


def _check_rate(sr, name: str) -> int:
    """A positive integer sample rate, else InputError."""
    try:
        ok = int(sr) == sr and sr > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}: invalid sample rate {sr!r}", "pass a positive integer rate in Hz")
    return int(sr)


# --------------------------------------------------------------------------------------------- resampling

def resample_soxr(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """librosa.resample(res_type="soxr_hq"), which librosa.load uses: soxr HQ, then librosa's `fix=True`
    (zero-pad or cut to ceil(n * sr_out / sr_in)). Identity when the rates are equal (librosa skips it)."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    import soxr  # the runtime's only resampling dependency; imported here so loading stays import-light

    y = soxr.resample(x, sr_in, sr_out, "HQ")
    n_out = int(math.ceil(x.shape[-1] * float(sr_out) / sr_in))
    y = y[:n_out] if y.shape[-1] >= n_out else np.pad(y, (0, n_out - y.shape[-1]))
    return np.asarray(y, dtype=np.float32)


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """torchaudio's sinc_interp_hann polyphase kernel for gcd-reduced rates.

    Row i (one output phase, time offset -i/new) holds a Hann-windowed sinc, cut off at
    rolloff * min(orig, new), sampled at input offsets (-width .. width+orig-1)/orig.
    Returns (kernel float32, shape = (new, 2*width + orig), width); float64 maths, float32 storage as
    transforms.Resample keeps it."""
    base = min(orig, new) * SINC_ROLLOFF
    width = math.ceil(SINC_WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig            # (K,)
    t = (-np.arange(new, dtype=np.float64) / new)[:, None] + idx[None, :]      # (new, K)
    t = np.clip(t * base, -SINC_WIDTH, SINC_WIDTH)
    window = np.cos(t * np.pi / SINC_WIDTH / 2) ** 2
    t = t * np.pi
    safe = np.where(t == 0, 1.0, t)
    sinc = np.where(t == 0, 1.0, np.sin(safe) / safe)
    return (sinc * window * (base / orig)).astype(np.float32), width


def resample_sinc(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """torchaudio.transforms.Resample(sr_in, sr_out) (sinc_interp_hann, width 6, rolloff 0.99) in numpy.

    The input is zero-padded by (width, width + orig) and cut into hops of `orig` samples; each hop yields
    `new` outputs, one per kernel row. Output length is torchaudio's ceil(new * n / orig) evaluated in
    float32 (torch.as_tensor of a Python float), so for long inputs it is, rarely, one sample shorter than
    the exact ceiling, exactly as upstream. Identity when the rates are equal."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    g = math.gcd(int(sr_in), int(sr_out))
    orig, new = int(sr_in) // g, int(sr_out) // g
    kernel, width = _sinc_kernel(orig, new)                                   # (new, K)
    n = x.shape[-1]
    padded = np.pad(x.astype(np.float64), (width, width + orig))
    blocks = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]  # (n//orig+1, K)
    y = (blocks @ kernel.T.astype(np.float64)).reshape(-1)                    # (blocks*new,)
    n_out = int(np.ceil(np.float32(new * n / orig)))
    return y[:n_out].astype(np.float32)


def speaker_waveforms(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's speaker-prompt chain: soxr HQ to 22 050 Hz, cut to 15 s (after resampling, as
    `librosa.load` then slicing does), then torchaudio's sinc resampler 22 050 -> 16 000.

    Returns (audio_22k float32, shape = (N22,), N22 <= 330750; audio_16k float32, shape = (N16,))."""
    audio_22k = resample_soxr(audio, sr, SPEAKER_SR)[: MAX_PROMPT_SECONDS * SPEAKER_SR]
    return audio_22k, resample_sinc(audio_22k, SPEAKER_SR, SEMANTIC_SR)


def emotion_waveform(audio: np.ndarray, sr: int) -> np.ndarray:
    """Upstream's emotion-prompt chain: soxr HQ straight to 16 kHz, cut to 15 s (quirk 5: a different
    resampler from the speaker path). Returns float32, shape = (N16e,), N16e <= 240000."""
    return resample_soxr(audio, sr, SEMANTIC_SR)[: MAX_PROMPT_SECONDS * SEMANTIC_SR]


# ------------------------------------------------------------------------------------ Kaldi-style fbank

def _kaldi_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@lru_cache(maxsize=4)
def kaldi_mel_filterbank(n_mels: int = FBANK_MELS, n_fft: int = FBANK_NFFT, sr: int = SEMANTIC_SR,
                         low_hz: float = FBANK_LOW_HZ, high_hz: float = FBANK_HIGH_HZ) -> np.ndarray:
    """Kaldi mel triangles, unnormalised, built in mel space (mel = 1127 ln(1 + f/700)), n_mels + 2 edges
    evenly spaced in mel between low_hz and high_hz. Shape (n_mels, n_fft//2 + 1), float64; the Nyquist
    column is zero. Same bank as torchaudio's get_mel_banks (plus its zero column) and transformers'
    mel_filter_bank(mel_scale="kaldi", triangularize_in_mel_space=True, norm=None)."""
    edges = np.linspace(_kaldi_mel(low_hz), _kaldi_mel(high_hz), n_mels + 2)   # (n_mels+2,)
    bins = _kaldi_mel(np.arange(n_fft // 2 + 1) * (sr / n_fft))               # (n_fft//2+1,)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None] - left) / (center - left)
    down = (right - bins[None]) / (right - center)
    bank = np.maximum(0.0, np.minimum(up, down))
    bank[:, -1] = 0.0  # Kaldi uses n_fft/2 bins; the Nyquist bin never enters
    return bank


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(n,) -> (1 + (n - size)//hop, size) read-only view; snip_edges / center=False framing."""
    return np.lib.stride_tricks.sliding_window_view(x, size)[::hop]


def _kaldi_power_spectrum(x: np.ndarray) -> np.ndarray:
    """Kaldi frame processing in float64: 400-sample frames every 160, DC removed per frame,
    pre-emphasis with the first sample replicated (b[0] *= 0.03), povey window, zero-padded to 512,
    power spectrum. (F, 257) for F = 1 + (n - 400)//160."""
    frames = _frames(x.astype(np.float64), FBANK_FRAME, FBANK_HOP)            # (F, 400)
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1 - PREEMPHASIS),
                             frames[:, 1:] - PREEMPHASIS * frames[:, :-1]], axis=1)
    povey = np.hanning(FBANK_FRAME) ** POVEY_POWER                            # symmetric Hann
    spec = np.fft.rfft(frames * povey, n=FBANK_NFFT)                          # (F, 257)
    return spec.real ** 2 + spec.imag ** 2


def _check_frames(x: np.ndarray, name: str, min_frames: int = 1) -> np.ndarray:
    """x as float32 (n,) when it holds `min_frames` 25 ms frames, else InputError naming the source."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    need = FBANK_FRAME + (min_frames - 1) * FBANK_HOP
    if x.size < need:
        raise InputError(f"{name}: too short: {x.size} samples at 16 kHz, need at least {need}",
                         "use a longer prompt: a few seconds of speech")
    return x


def kaldi_fbank(audio_16k: np.ndarray, name: str = "kaldi_fbank", min_frames: int = 1) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank(audio[None], num_mel_bins=80, dither=0, sample_frequency=16000)
    with every other default (quirk 7): float audio in [-1, 1] (not int16-scaled), snip_edges, povey,
    pre-emphasis 0.97, DC removal, FFT 512, power, 20 Hz - 8 kHz, log with a float32-eps floor.

    Returns float32, shape = (F, 80), F = 1 + (N - 400)//160. The time-mean subtraction upstream applies
    before CAMPPlus is *not* done here (runtime/prompt.py does it). Fewer than `min_frames` frames is an
    InputError naming the input `name` (a voice prompt asks for CAMPPLUS_MIN_FRAMES)."""
    x = _check_frames(audio_16k, name, min_frames)
    mel = _kaldi_power_spectrum(x) @ kaldi_mel_filterbank().T                 # (F, 80)
    return np.log(np.maximum(mel, FLOAT32_EPS)).astype(np.float32)


# ------------------------------------------------------------------------------ SeamlessM4T (w2v-BERT)

def seamless_features(audio_16k: np.ndarray, name: str = "seamless_features") -> tuple[np.ndarray, np.ndarray]:
    """transformers SeamlessM4TFeatureExtractor with w2v-bert-2.0's config (quirk 8, spec §3.4).

    Kaldi log-mel of the int16-scaled audio (same frame processing and Kaldi-scale mel triangles as
    kaldi_fbank, kept in float64 where transformers rounds the spectrum to complex64), per-bin
    (x - mean) / sqrt(var(ddof=1) + 1e-7) over time, pad to an even frame count with 1.0 (mask 0), stack
    frame pairs. Needs at least 2 frames (560 samples): with one frame the ddof=1 variance is NaN.

    Returns (input_features float32, shape = (1, Ts, 160); attention_mask int64, shape = (1, Ts)),
    Ts = ceil(F / 2); for odd F the last row is half padding with mask 0. `name` labels a too-short input."""
    x = _check_frames(audio_16k, name, min_frames=2)
    power = _kaldi_power_spectrum(x.astype(np.float64) * INT16_SCALE)         # (F, 257)
    feats = np.log(np.maximum(power @ kaldi_mel_filterbank().T, FLOAT32_EPS)).astype(np.float32)  # (F, 80)
    f64 = feats.astype(np.float64)
    feats = (f64 - f64.mean(axis=0)) / np.sqrt(f64.var(axis=0, ddof=1) + SEAMLESS_NORM_EPS)
    n = feats.shape[0]
    pad = (-n) % SEAMLESS_STRIDE
    feats = np.concatenate([feats, np.full((pad, feats.shape[1]), SEAMLESS_PAD_VALUE)], axis=0)
    mask = np.concatenate([np.ones(n, np.int64), np.zeros(pad, np.int64)])
    stacked = feats.reshape(1, -1, SEAMLESS_STRIDE * FBANK_MELS)               # (1, Ts, 160)
    return stacked.astype(np.float32), mask[SEAMLESS_STRIDE - 1::SEAMLESS_STRIDE][None]  # (1, Ts)


# ------------------------------------------------------------------------------------ s2mel log-mel

def log_mel(audio_22k: np.ndarray, filterbank: np.ndarray, name: str = "log_mel") -> np.ndarray:
    """s2mel `mel_spectrogram` (quirk 6): reflect-pad 384 both sides, 1024-sample frames every 256
    (center=False), periodic Hann 1024, |X| = sqrt(re^2 + im^2 + 1e-9), mel projection, log(max(x, 1e-5)).

    filterbank : float, shape = (80, 513): the Slaney bank librosa.filters.mel(sr=22050, n_fft=1024,
        n_mels=80, fmin=0, fmax=None) that the bundle ships (export/filterbanks.py).
    Returns float32, shape = (1, 80, N // 256). `name` labels a too-short input."""
    x = np.asarray(audio_22k, dtype=np.float32).reshape(-1)
    if x.size <= MEL_PAD:
        raise InputError(f"{name}: too short: {x.size} samples at 22.05 kHz, need more than {MEL_PAD}",
                         "use a longer prompt: a few seconds of speech")
    filterbank = np.asarray(filterbank)
    if filterbank.shape != (filterbank.shape[0], MEL_NFFT // 2 + 1):
        raise InputError(f"log_mel: filterbank shape {filterbank.shape}",
                         f"expected (n_mels, {MEL_NFFT // 2 + 1}) from the bundle")
    padded = np.pad(x.astype(np.float64), MEL_PAD, mode="reflect")
    frames = _frames(padded, MEL_NFFT, MEL_HOP)                              # (T, 1024)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_NFFT) / MEL_NFFT)    # periodic
    spec = np.fft.rfft(frames * hann)                                        # (T, 513)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + MEL_MAG_EPS)
    mel = filterbank.astype(np.float64) @ mag.T                              # (80, T)
    return np.log(np.maximum(mel, MEL_LOG_FLOOR)).astype(np.float32)[None]   # (1, 80, T)


# ---- checks ----

SILENCE_PEAK = 1e-4  # about -80 dBFS: a prompt this quiet carries no voice to clone


def require_voice(audio: np.ndarray, name: str) -> np.ndarray:
    """Refuse a silent prompt: upstream would clone silence into garbage without a word of warning."""
    if audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise InputError(f"{name}: the audio is silent (peak below {SILENCE_PEAK:g})",
                         "use a recording of a voice")
    return audio


# ---- output ----


def to_int16(wav: np.ndarray) -> np.ndarray:
    """Upstream's output scaling: clamp(32767 * wav, -32767, 32767), truncated toward zero to int16."""
    return np.clip(np.asarray(wav, dtype=np.float32) * 32767.0, -32767.0, 32767.0).astype(np.int16)


def _create_unique(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty `<name>.<random>.part` in `folder`, opened for writing -> (fd, path).

    O_CREAT | O_EXCL, as `tempfile.mkstemp` does, so nothing that already exists at the name (a file, a
    planted symlink) is ever opened; unlike mkstemp the mode is 0o666 less the umask, the permissions a
    plain open() gives, so the renamed output is as readable as any other new file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f"{name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


def check_output_path(path: str | Path) -> Path:
    """`path` if a file can be written there, else InputError: its folder exists and is writable (a
    temporary file is created and removed there) and the path itself is not a folder. Called before any
    synthesis work, so a bad --out fails in a second instead of after minutes of generation."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder", "give a file name, e.g. out.wav")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{path}: the folder {folder} {what}", "create it or choose another output path")
    try:
        fd, tmp = _create_unique(folder, path.name)
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        raise InputError(f"{path}: cannot write in {folder} ({e.strerror or e})",
                         "choose a writable folder") from e
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], what: str) -> None:
    """Write `path` through `write(file)` atomically: into a temporary file unique to this call
    (`<name>.<random>.part` in the same folder, `_create_unique`), then renamed over `path`. Readers see the old
    file or the whole new one; a failed write leaves nothing; two writers never share a temporary file,
    and a symlink planted at a predictable name cannot redirect the write. OSError and soundfile errors
    become InputError naming the path; `what` names the kind of file in the message."""
    path = Path(check_output_path(path))
    tmp = None
    try:
        fd, tmp = _create_unique(path.parent, path.name)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise InputError(f"{path}: cannot write the {what} ({e})") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written atomically (`atomic_write`): a failed write leaves no file behind."""
    path = Path(path)
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.size == 0:
        raise InputError(f"{path}: expected a non-empty 1-D waveform, got shape {wav.shape}")
    pcm = to_int16(wav)
    atomic_write(path, lambda f: sf.write(f, pcm, sample_rate, subtype="PCM_16", format="WAV"), "WAV file")


def synthetic_voice(seconds: float, sr: int) -> np.ndarray:
    """A deterministic voice-like mono prompt for demos and benchmarks, where no real voice is at hand: a
    15-harmonic buzz gliding around 120 Hz under a 4 Hz syllable envelope, faded in and out, over a little
    noise. float32, peak about 0.8."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.5 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    buzz = sum(np.sin(k * phase) / k for k in range(1, 16))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
    noise = np.random.default_rng(0).standard_normal(t.shape) * 0.01
    return (0.25 * syllables * fade * buzz + noise).astype(np.float32)
