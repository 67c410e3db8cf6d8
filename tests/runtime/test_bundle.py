"""Loading a bundle: the manifest is read strictly and a damaged bundle is refused with a hint."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from indextts2_onnx.runtime import BundleError, IndexTTS2, Speaker
from indextts2_onnx.runtime.cli import main
from indextts2_onnx.runtime.kv_cache import LEGACY_KV_CACHE, decoder_io
from indextts2_onnx.runtime.manifest import load_manifest


@pytest.fixture()
def bundle_copy(tiny_concat_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_concat_bundle, dst)
    return dst


def _edit_manifest(bundle, fn):
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_loads_and_reports_providers(tiny_concat_bundle):
    tts = IndexTTS2(tiny_concat_bundle)
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


# --- the decoder's KV cache, addressed by role -------------------------------------------------------------


def _greedy(bundle) -> tuple[np.ndarray, np.ndarray]:
    """Greedy codes and latent of a fixed random Speaker: what the decoder's I/O names must not change."""
    rng = np.random.default_rng(0)
    spk = Speaker(semantic=rng.standard_normal((1, 50, 32)), emotion_semantic=rng.standard_normal((1, 40, 32)),
                  style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, 12)),
                  prompt_condition=rng.standard_normal((1, 12, 32)))
    tts = IndexTTS2(bundle)
    return tts.generate_codes([5, 6, 7, 8], spk, tts.emotion_vector(spk), greedy=True, max_codes=30, min_codes=30)


def test_manifest_declares_the_decoder_cache(tiny_concat_bundle):
    m = load_manifest(tiny_concat_bundle)
    entry = m.graphs["gpt_decoder"]
    assert entry.kv_cache == {"past": "past_{kind}_{layer}", "present": "present_{kind}_{layer}"}
    assert all(g.kv_cache == {} for name, g in m.graphs.items() if name not in ("gpt_decoder", "qwen_emotion"))
    assert m.graphs["qwen_emotion"].kv_cache == {**entry.kv_cache, "layout": "shared"}  # the emotion model's
    io = decoder_io(entry, m.gpt)
    assert sorted(entry.inputs) == sorted([io.embeds, *io.past]) and len(io.past) == 2 * m.gpt.layers
    assert set(io.present) <= set(entry.outputs)


def test_bundle_without_kv_cache_loads_with_the_legacy_names(bundle_copy, tiny_concat_bundle):
    """A bundle exported before the manifest declared the cache (format 1.1, no kv_cache keys, and no
    emotion model: that came with 1.5)."""
    def old(d):
        d["format_version"] = "1.1"
        d["graphs"].pop(d.pop("emotion_text")["graph"])
        for g in d["graphs"].values():
            g.pop("kv_cache")
    _edit_manifest(bundle_copy, old)
    assert load_manifest(bundle_copy).graphs["gpt_decoder"].kv_cache == {}
    assert LEGACY_KV_CACHE == load_manifest(tiny_concat_bundle).graphs["gpt_decoder"].kv_cache  # what was exported
    codes, latent = _greedy(bundle_copy)
    ref_codes, ref_latent = _greedy(tiny_concat_bundle)
    assert codes.tolist() == ref_codes.tolist()
    np.testing.assert_array_equal(latent, ref_latent)


@pytest.mark.parametrize("kv_cache, message", [
    ({"past": "past_{kind}", "present": "present_{kind}_{layer}"}, r"kv_cache must be \{\} or \{\"past\""),
    ({"past": "past_{kind}_{layer}_{head}", "present": "present_{kind}_{layer}"}, r"kv_cache must be \{\} or"),
    ({"past": "kv_{kind}_{layer}", "present": "kv_{kind}_{layer}"}, r"kv_cache must be \{\} or"),
    ({"past": "past_{kind}_{layer}"}, r"kv_cache must be \{\} or"),
    ({"past": 3, "present": "present_{kind}_{layer}"}, r'kv_cache\["past"\] must be a string, got 3'),
    ("past_{kind}_{layer}", r'kv_cache must be an object, got "past_'),
])
def test_bad_kv_cache_is_refused_naming_the_field(bundle_copy, kv_cache, message):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["gpt_decoder"].update(kv_cache=kv_cache))
    with pytest.raises(BundleError, match=r'manifest\.json: graphs\["gpt_decoder"\]\.' + message):
        IndexTTS2(bundle_copy)


def test_declared_past_missing_from_the_graph_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["gpt_decoder"].update(
        kv_cache={"past": "cache_{kind}_{layer}", "present": "present_{kind}_{layer}"}))
    with pytest.raises(BundleError, match=r'gpt_decoder\.onnx: no input cache_key_0 \(the past layer 0 key; '
                                          r'gpt\.layers \d+, graphs\["gpt_decoder"\]\.kv_cache .*re-export'):
        IndexTTS2(bundle_copy)


def test_cache_io_is_found_by_name_in_any_order(bundle_copy, tiny_concat_bundle):
    """A decoder whose cache inputs and outputs have other names and another order, declared in the
    manifest, decodes exactly as the exported one: nothing is addressed by position."""
    onnx = pytest.importorskip("onnx")
    path = bundle_copy / "gpt_decoder.onnx"
    model = onnx.load(str(path), load_external_data=False)  # the weights stay in gpt_decoder.onnx.data
    m, new = load_manifest(bundle_copy), {"past": "in.{layer}.{kind}", "present": "out.{layer}.{kind}"}
    entry = m.graphs["gpt_decoder"]
    old, io = decoder_io(entry, m.gpt), decoder_io(replace(entry, kv_cache=new), m.gpt)
    names = dict(zip(old.past + old.present, io.past + io.present))
    g = model.graph
    for node in g.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in (*g.input, *g.output, *g.value_info):
        value.name = names.get(value.name, value.name)
    inputs, outputs = list(g.input)[::-1], list(g.output)[::-1]  # pasts last layer first, embeddings last
    del g.input[:], g.output[:]
    g.input.extend(inputs)
    g.output.extend(outputs)
    onnx.save(model, str(path))
    data = path.read_bytes()

    def declare(d):
        d["graphs"]["gpt_decoder"].update(kv_cache=new, inputs=[v.name for v in inputs],
                                          outputs=[v.name for v in outputs])
        d["files"]["gpt_decoder.onnx"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _edit_manifest(bundle_copy, declare)
    assert load_manifest(bundle_copy).graphs["gpt_decoder"].inputs[0] == io.past[-1]
    codes, latent = _greedy(bundle_copy)
    ref_codes, ref_latent = _greedy(tiny_concat_bundle)
    assert codes.tolist() == ref_codes.tolist()
    np.testing.assert_allclose(latent, ref_latent, atol=1e-6, rtol=0)


def test_emotion_graph_without_a_shared_cache_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["qwen_emotion"].update(kv_cache={}))
    with pytest.raises(BundleError, match=r'qwen_emotion: the manifest declares no shared KV cache for it '
                                          r'\(kv_cache \{\}; .*re-export the bundle'):
        IndexTTS2(bundle_copy)
    IndexTTS2(bundle_copy, emotion_text=False)  # the TTS itself does not need it
