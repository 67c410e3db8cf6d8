"""Loading a bundle: the manifest is read strictly and a damaged bundle is refused with a hint."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from indextts2_onnx.runtime import BundleError, IndexTTS2
from indextts2_onnx.runtime.cli import main


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(bundle, fn):
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_loads_and_reports_providers(tiny_bundle):
    tts = IndexTTS2(tiny_bundle)
    assert tts.providers == ["CPUExecutionProvider"]
    assert tts.manifest.format_version.startswith("1.")


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        IndexTTS2(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json: missing.*indextts2-onnx export"):
        IndexTTS2(tmp_path)


def test_unknown_major_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(format_version="2.0"))
    with pytest.raises(BundleError, match="format_version 2.0 is not supported.*re-export"):
        IndexTTS2(bundle_copy)


def test_unknown_manifest_keys_are_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["gpt"].update(flavour="spicy"))
    with pytest.raises(BundleError, match=r"unknown keys \['flavour'\]"):
        IndexTTS2(bundle_copy)


def test_truncated_and_missing_files_are_refused(bundle_copy):
    data = bundle_copy / "gpt_decoder.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"gpt_decoder\.onnx\.data has \d+ bytes, the manifest says \d+ \(truncated\?\)"):
        IndexTTS2(bundle_copy)
    data.unlink()
    with pytest.raises(BundleError, match=r"gpt_decoder\.onnx\.data is missing"):
        IndexTTS2(bundle_copy)


def test_corrupt_graph_is_refused(bundle_copy):
    g = bundle_copy / "gpt_emotion_vector.onnx"
    size = g.stat().st_size
    g.write_bytes(b"\x00" * size)  # same size, garbage content
    with pytest.raises(BundleError, match=r"gpt_emotion_vector\.onnx: sha256 differs from the manifest"):
        IndexTTS2(bundle_copy)
    with pytest.raises(BundleError, match=r"gpt_emotion_vector\.onnx: not a readable ONNX graph"):
        IndexTTS2(bundle_copy, verify=False)  # no checksum: the protobuf reader still refuses it


def test_graph_onnx_runtime_refuses_is_a_bundle_error(bundle_copy):
    """Well-formed protobuf, but not a model ONNX Runtime can load (checksum updated to match)."""
    g = bundle_copy / "gpt_emotion_vector.onnx"
    data = b"\x08\x01"  # ModelProto with ir_version 1 and nothing else
    g.write_bytes(data)
    _edit_manifest(bundle_copy, lambda d: d["files"]["gpt_emotion_vector.onnx"].update(
        size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(BundleError, match=r"gpt_emotion_vector\.onnx: ONNX Runtime cannot load it"):
        IndexTTS2(bundle_copy)


def test_info_check_verifies_checksums(bundle_copy, capsys):
    assert main(["info", str(bundle_copy), "--check"]) == 0
    assert "all sha256 checksums match" in capsys.readouterr().out
    t = bundle_copy / "speaker_matrix.npy"
    raw = bytearray(t.read_bytes())
    raw[-1] ^= 0xFF  # same size, one flipped byte
    t.write_bytes(bytes(raw))
    assert main(["info", str(bundle_copy), "--check"]) == 1
    assert "speaker_matrix.npy" in capsys.readouterr().err


def test_bundle_without_a_graph_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["graphs"].pop("dit"))
    with pytest.raises(BundleError, match="the bundle has no dit graph.*re-export"):
        IndexTTS2(bundle_copy)


def test_cuda_graph_on_cpu_loads_with_a_warning(bundle_copy, caplog):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["dit"].update(device="cuda", precision="fp16"))
    with caplog.at_level("WARNING"):
        IndexTTS2(bundle_copy, device="cpu")
    assert "dit was exported for cuda (fp16); it runs on cpu" in caplog.text
