"""Audio I/O. (The torch-free front end — loading, resampling, fbank, log-mel — joins this module.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import InputError


def to_int16(wav: np.ndarray) -> np.ndarray:
    """Upstream's output scaling: clamp(32767 * wav, -32767, 32767), truncated toward zero to int16."""
    return np.clip(np.asarray(wav, dtype=np.float32) * 32767.0, -32767.0, 32767.0).astype(np.int16)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written atomically: a failed write leaves no file behind."""
    path = Path(path)
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.size == 0:
        raise InputError(f"{path}: expected a non-empty 1-D waveform, got shape {wav.shape}")
    tmp = path.with_name(path.name + ".part")
    try:
        sf.write(tmp, to_int16(wav), sample_rate, subtype="PCM_16", format="WAV")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
