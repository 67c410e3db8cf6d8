"""The shared-buffer decoder (GroupQueryAttention, KV buffers updated in place) against the concat decoder
of the same checkpoint: same codes, same latent, same audio; its manifest declarations and checks.

Every test in test_generate.py also runs on this layout (torch reference, beams, streamed codes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from indextts2_onnx.runtime import BundleError, IndexTTS2, Speaker
from indextts2_onnx.runtime.decoder_graph import SharedDecoder, SharedKV
from indextts2_onnx.runtime.gpt import CodeGenerator
from indextts2_onnx.runtime.pipeline import load_bundle


def random_speaker(seed: int) -> Speaker:
    rng = np.random.default_rng(seed)
    return Speaker(semantic=rng.standard_normal((1, 60, 32)), emotion_semantic=rng.standard_normal((1, 47, 32)),
                   style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, 12)),
                   prompt_condition=rng.standard_normal((1, 12, 32)))


@pytest.fixture(scope="module")
def both(tiny_concat_bundle, tiny_bundle):
    return IndexTTS2(tiny_concat_bundle, threads=1), IndexTTS2(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def shared_parts(tiny_bundle):
    return load_bundle(tiny_bundle, threads=1)


def test_manifest_declares_the_layout_and_roles(tiny_bundle, shared_parts):
    entry = json.loads((tiny_bundle / "manifest.json").read_text())["graphs"]["gpt_decoder"]
    assert entry["kv_cache"] == {"past": "past_{kind}_{layer}", "present": "present_{kind}_{layer}",
                                 "layout": "shared"}
    assert entry["roles"] == {"embeds": "inputs_embeds", "logits": "logits", "hidden": "hidden_states",
                              "codes": "mel_codes", "positions": "mel_positions", "seqlens_k": "seqlens_k",
                              "total_length": "total_sequence_length"}
    manifest, graphs, tables = shared_parts
    gen = CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt)
    assert isinstance(gen.calls, SharedDecoder) and gen.io.layout == "shared"
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(tiny_bundle / "gpt_decoder.onnx"), load_external_data=False).graph
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attention) == manifest.gpt.layers and {n.domain for n in attention} == {"com.microsoft"}


@pytest.mark.parametrize("kw", [dict(greedy=True), dict(num_beams=3, seed=5), dict(num_beams=1, seed=9),
                                dict(num_beams=3, seed=2, top_k=0, top_p=1.0)], ids=str)
def test_same_codes_and_latent_as_the_concat_decoder(both, kw):
    """Same checkpoint, same draws: identical codes (fp32 logits agree to ~1e-6 and these cases have no
    near-tie), latents within fp32 noise (atol 1e-4)."""
    concat, shared = both
    for case, ids in enumerate(([5, 6, 7, 8, 9, 10], [40, 41, 42, 2, 99])):
        spk = random_speaker(case)
        emovec = concat.emotion_vector(spk)
        a, la = concat.generate_codes(ids, spk, emovec, max_codes=90, min_codes=30, **kw)
        b, lb = shared.generate_codes(ids, spk, emovec, max_codes=90, min_codes=30, **kw)
        assert a.tolist() == b.tolist() and len(a) >= 30
        np.testing.assert_allclose(lb, la, atol=1e-4)


def test_latent_stream_equals_the_latent_pass(shared_parts):
    """The incremental latent (streaming) over shared buffers equals the whole pass (atol 1e-4)."""
    manifest, graphs, tables = shared_parts
    gen = CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt)
    spk = random_speaker(4)
    latent_rows = graphs["gpt_speaker_conditioning"].run({"semantic": spk.semantic})[0]
    prefix = gen.prefix(latent_rows, np.zeros((1, manifest.gpt.model_dim), np.float32))
    codes = np.random.default_rng(0).integers(0, manifest.acoustic.codebook_size, 47)
    whole = gen.latent(prefix, [5, 6, 7], codes)
    stream = gen.latent_stream(prefix, [5, 6, 7])
    parts = [stream.extend(codes[a:b]) for a, b in ((0, 1), (1, 11), (11, 11), (11, 47))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-4)


def test_synthesize_matches_the_concat_bundle(both, tmp_path):
    """End to end (3 beams, chunked stream and whole): the same audio from both layouts within the
    end-to-end tolerance (atol 1e-3 on samples in [-1, 1])."""
    concat, shared = both
    voice = (np.sin(np.arange(24000) / 11.0) * 0.3).astype(np.float32), 16000
    a = concat.synthesize("Hello there. A second sentence.", voice, seed=3, steps=3, max_codes=60)
    b = shared.synthesize("Hello there. A second sentence.", voice, seed=3, steps=3, max_codes=60)
    assert a.audio.shape == b.audio.shape and a.metrics.codes == b.metrics.codes
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-3)
    sa = np.concatenate([c.audio for c in concat.stream("Hello there.", voice, seed=3, steps=3, max_codes=60)])
    sb = np.concatenate([c.audio for c in shared.stream("Hello there.", voice, seed=3, steps=3, max_codes=60)])
    np.testing.assert_allclose(sb, sa, atol=1e-3)


def test_reorder_moves_filled_positions_in_place():
    """Beam reordering over shared buffers: same memory (the OrtValues keep pointing at it), rows moved
    over the filled positions only; a new row count tiles into new buffers."""
    kv = SharedKV.empty(2, 3, 2, 8, 4, np.float32)
    for b in kv.buffers:
        b[:, :, :5] = np.arange(3)[:, None, None, None] + 1
    kv.length = 5
    before = [b.ctypes.data for b in kv.buffers]
    kv.reorder(np.array([2, 0, 0]))
    assert [b.ctypes.data for b in kv.buffers] == before
    assert [int(kv.buffers[0][r, 0, 0, 0]) for r in range(3)] == [3, 1, 1]
    assert not kv.buffers[1][:, :, 5:].any()
    kv.reorder(np.array([1, 1, 1, 1]))
    assert kv.rows == 4 and [int(kv.buffers[0][r, 0, 4, 0]) for r in range(4)] == [1, 1, 1, 1]
    assert [v.data_ptr() for v in kv.values] == [b.ctypes.data for b in kv.buffers]


def test_a_shared_decoder_without_its_roles_is_refused(tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    del d["graphs"]["gpt_decoder"]["roles"]["seqlens_k"]
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r'roles names no seqlens_k input, which its shared cache layout needs'):
        IndexTTS2(bundle, verify=False)


def test_info_names_the_decoder_layout(tiny_concat_bundle, tiny_bundle, capsys):
    from indextts2_onnx.runtime.cli import main

    for bundle, layout in ((tiny_concat_bundle, "concat"), (tiny_bundle, "shared")):
        assert main(["info", str(bundle)]) == 0
        assert f"; decoder KV cache: {layout}\n" in capsys.readouterr().out
