"""WAV output: upstream's int16 scaling, and no partial file on failure."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from indextts2_onnx.runtime import InputError
from indextts2_onnx.runtime.audio import to_int16, write_wav


def test_int16_scaling_matches_upstream():
    wav = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 0.99999], np.float32)
    # upstream: clamp(32767 * wav, -32767, 32767) then int16 (truncation toward zero)
    assert to_int16(wav).tolist() == [0, 16383, -16383, 32767, -32767, 32767, -32767, 32766]


def test_write_wav_round_trip(tmp_path):
    wav = np.sin(np.linspace(0, 100, 22050)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", wav, 22050)
    data, sr = sf.read(tmp_path / "a.wav", dtype="int16")
    assert sr == 22050 and data.tolist() == to_int16(wav).tolist()
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="non-empty 1-D waveform"):
        write_wav(tmp_path / "b.wav", np.zeros((2, 3)), 22050)
    with pytest.raises(InputError, match="missing_dir does not exist"):
        write_wav(tmp_path / "missing_dir" / "c.wav", np.zeros(10), 22050)
    assert list(tmp_path.iterdir()) == []
