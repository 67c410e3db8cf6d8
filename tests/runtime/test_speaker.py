"""Speaker: built from arrays, validated, saved and loaded."""

from __future__ import annotations

import numpy as np
import pytest

from indextts2_onnx.runtime import InputError, Speaker


def arrays(seed=0, frames=12):
    rng = np.random.default_rng(seed)
    return dict(semantic=rng.standard_normal((1, 30, 32)), emotion_semantic=rng.standard_normal((1, 28, 32)),
                style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, frames)),
                prompt_condition=rng.standard_normal((1, frames, 32)))


def test_save_load_round_trip(tmp_path):
    spk = Speaker(**arrays())
    spk.save(tmp_path / "voice.npz")
    back = Speaker.load(tmp_path / "voice.npz")
    for name, value in arrays().items():
        got = getattr(back, name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, value.astype(np.float32))
    assert not list(tmp_path.glob("*.part"))


def test_wrong_shapes_and_values_are_refused():
    with pytest.raises(InputError, match=r"Speaker\.style: expected shape with 2 axes"):
        Speaker(**(arrays() | {"style": np.zeros(48)}))
    with pytest.raises(InputError, match=r"Speaker\.semantic: expected shape .* batch 1"):
        Speaker(**(arrays() | {"semantic": np.zeros((2, 30, 32))}))
    with pytest.raises(InputError, match="NaN"):
        Speaker(**(arrays() | {"semantic": np.full((1, 30, 32), np.nan)}))
    with pytest.raises(InputError, match="ref_mel has 12 frames but prompt_condition has 13"):
        Speaker(**(arrays() | {"prompt_condition": np.zeros((1, 13, 32))}))
    with pytest.raises(InputError, match="too short"):
        Speaker(**(arrays() | {"semantic": np.zeros((1, 0, 32))}))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no such speaker file"):
        Speaker.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz: not a speaker .npz"):
        Speaker.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", semantic=np.zeros((1, 3, 4)))
    with pytest.raises(InputError, match="a speaker file holds exactly"):
        Speaker.load(tmp_path / "partial.npz")
