"""Mel filter banks computed at export time and shipped in the bundle (numpy only, no librosa).

The runtime's s2mel log-mel (runtime/audio.py `log_mel`) takes this bank as an input, as
whisper ships `mel_filters.npz`, so that librosa never runs at inference time.
"""

from __future__ import annotations

import numpy as np

# Slaney's auditory-toolbox mel scale (librosa's default, htk=False): linear below 1 kHz, log above.
SLANEY_F_SP = 200.0 / 3          # Hz per mel in the linear part
SLANEY_MIN_LOG_HZ = 1000.0
SLANEY_MIN_LOG_MEL = SLANEY_MIN_LOG_HZ / SLANEY_F_SP  # 15
SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(f) -> np.ndarray:
    """Hz -> Slaney mel (float64)."""
    f = np.asarray(f, dtype=np.float64)
    above = np.maximum(f, SLANEY_MIN_LOG_HZ)  # keeps log() finite where the linear branch is taken
    log_part = SLANEY_MIN_LOG_MEL + np.log(above / SLANEY_MIN_LOG_HZ) / SLANEY_LOGSTEP
    return np.where(f >= SLANEY_MIN_LOG_HZ, log_part, f / SLANEY_F_SP)


def mel_to_hz_slaney(m) -> np.ndarray:
    """Slaney mel -> Hz (float64), the inverse of hz_to_mel_slaney."""
    m = np.asarray(m, dtype=np.float64)
    above = np.maximum(m, SLANEY_MIN_LOG_MEL)
    log_part = SLANEY_MIN_LOG_HZ * np.exp(SLANEY_LOGSTEP * (above - SLANEY_MIN_LOG_MEL))
    return np.where(m >= SLANEY_MIN_LOG_MEL, log_part, m * SLANEY_F_SP)


def slaney_mel_filterbank(sr: int = 22050, n_fft: int = 1024, n_mels: int = 80, fmin: float = 0.0,
                          fmax: float | None = None) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax) with librosa's other
    defaults (htk=False: Slaney scale; norm="slaney": each triangle scaled by 2 / its Hz bandwidth).

    `fmax=None` means sr / 2, as in librosa; upstream passes None (-> 11 025 Hz) because its config holds
    the string "None" (quirk 6). Triangles have n_mels + 2 edges evenly spaced in mel and are evaluated
    on the linear FFT-bin frequencies. Returns float32 (librosa's dtype), shape = (n_mels, 1 + n_fft // 2)."""
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)                          # (n_bins,)
    edges_hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    width = np.diff(edges_hz)                                                    # (n_mels+1,)
    offset = edges_hz[:, None] - fft_hz[None, :]                                 # (n_mels+2, n_bins)
    rising = -offset[:-2] / width[:-1, None]
    falling = offset[2:] / width[1:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling))                          # (n_mels, n_bins)
    bank *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]                      # Slaney area norm
    return bank.astype(np.float32)
