"""`export_bundle` on an IndexTTS-2.5 folder: the 2.5 graph set, the 2.5 tables, the tokenizer, the manifest,
and lowering it for a target (the greedy probe's 2.5 path).

One tiny export per session (`tiny25_bundle`, conftest.py); everything here reads it.

Measured on the tiny 2.5 bundle when these tests were written (ORT CPU): cpu lowering keeps gpt_decoder fp32
(int8 greedy agreement 0.76) and ships gpt_emotion_vector, semantic_encoder (greedy 1.0) and dit (33 dB) in
int8, in about a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from indextts2_onnx.export import precision as p
from indextts2_onnx.export.bundle import bundle_graphs, emotion_config, lower_bundle
from indextts2_onnx.export.checkpoint import TIKTOKEN_FILE, CheckpointPaths, load_gpt
from indextts2_onnx.export.config import load_config
from indextts2_onnx.runtime.errors import BundleError
from indextts2_onnx.runtime.manifest import FORMAT_VERSION, MANIFEST, Manifest, load_manifest, verify_checksums

GRAPHS_25 = ("gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "campplus", "length_regulator",
             "codec_decoder", "dit", "bigvgan")


@pytest.fixture(scope="module")
def manifest(tiny25_bundle) -> Manifest:
    return load_manifest(tiny25_bundle)


@pytest.fixture(scope="module")
def cfg25(tiny25_checkpoint):
    return load_config(tiny25_checkpoint / "config.yaml")


def test_manifest_says_25(manifest, cfg25):
    assert manifest.family == "2.5" and manifest.format_version == FORMAT_VERSION == "1.5"
    assert manifest.emotion_text is not None and manifest.emotion_text.graph == "qwen_emotion"
    assert manifest.target == "any"
    g = manifest.gpt
    assert g.condition_num_latent == 1  # the one projected speaker row
    assert (g.number_text_tokens, g.model_dim, g.number_mel_codes) == (
        cfg25.gpt.number_text_tokens, cfg25.gpt.model_dim, cfg25.gpt.number_mel_codes)
    assert manifest.config == cfg25.raw  # as published: version 2.0, absolute paths (for reference only)


def test_graphs_are_the_25_set_each_parity_checked(manifest, tiny25_bundle, cfg25):
    # the emotion-from-text decoder last: the checkpoint has the emotion model folder
    assert tuple(manifest.graphs) == (*GRAPHS_25, "qwen_emotion") == tuple(
        s.name for s in bundle_graphs(cfg25, qwen=emotion_config(manifest)))
    for name, entry in manifest.graphs.items():
        assert (tiny25_bundle / entry.file).is_file(), name
        parity = entry.parity
        assert parity["max_abs_diff"] <= parity["atol"] and len(parity["cases"]) > 0, name
        assert entry.precision == "fp32"
    assert manifest.graphs["gpt_decoder"].kv_cache.get("layout") == "shared"


def test_tables_and_tokenizer(manifest, tiny25_bundle, tiny25_checkpoint, cfg25):
    assert manifest.tables["tokenizer"] == TIKTOKEN_FILE
    assert (tiny25_bundle / TIKTOKEN_FILE).read_bytes() == (tiny25_checkpoint / TIKTOKEN_FILE).read_bytes()
    assert not (tiny25_bundle / "bpe.model").exists()
    g, d = cfg25.gpt, cfg25.gpt.model_dim
    with np.load(tiny25_bundle / manifest.tables["gpt_tables"]) as z:
        shapes = {k: z[k].shape for k in z.files}
        proj, bias = z["speaker_projection"], z["speaker_projection_bias"]
    assert shapes == {"text_embedding": (g.number_text_tokens + 1, d), "text_pos_embedding": (g.text_positions, d),
                      "mel_embedding": (g.number_mel_codes, d), "mel_pos_embedding": (g.mel_positions, d),
                      "lang_embedding": (107, d), "speaker_projection": (cfg25.s2mel.style_dim, d),
                      "speaker_projection_bias": (d,)}
    gpt = load_gpt(CheckpointPaths.of(tiny25_checkpoint), cfg25)
    style = torch.randn(2, cfg25.s2mel.style_dim)
    with torch.no_grad():
        np.testing.assert_allclose(style.numpy() @ proj + bias, gpt.spk_emb_proj(style).numpy(), atol=1e-5)
    emo = np.load(tiny25_bundle / manifest.tables["emotion_matrix"])
    spk = np.load(tiny25_bundle / manifest.tables["speaker_matrix"])
    assert emo.shape == (sum(cfg25.emo_num), d) and spk.shape == (sum(cfg25.emo_num), cfg25.s2mel.style_dim)
    assert np.load(tiny25_bundle / manifest.tables["mel_filterbank"]).shape[0] == cfg25.s2mel.mel.n_mels


def test_every_file_is_listed_and_intact(manifest, tiny25_bundle):
    on_disk = {p.name for p in tiny25_bundle.iterdir() if p.name != MANIFEST}
    assert set(manifest.files) == on_disk
    assert verify_checksums(tiny25_bundle, manifest) == []


def test_old_manifests_read_as_20_and_family_is_checked(tiny25_bundle):
    d = json.loads((tiny25_bundle / MANIFEST).read_text())
    old = {k: v for k, v in d.items() if k != "family"}
    assert Manifest.from_dict(dict(old, format_version="1.3")).family == "2.0"
    with pytest.raises(BundleError, match=r'family must be one of "2\.0", "2\.5", got "3\.0"'):
        Manifest.from_dict(dict(d, family="3.0"))


def test_20_exports_say_20(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert m.family == "2.0" and m.tables["tokenizer"] == "bpe.model" and m.gpt.condition_num_latent == 32
    with np.load(tiny_bundle / "gpt_tables.npz") as z:
        assert "speed_embedding" in z.files and "lang_embedding" not in z.files


def test_greedy_probe_25(manifest, tiny25_bundle, cfg25):
    """2.5's probe: no speaker-conditioning graph, the CAMPPlus-style prefix, English tokens and row."""
    spec = {s.name: s for s in bundle_graphs(cfg25)}["gpt_decoder"]
    probe = p.GreedyProbe.build(tiny25_bundle, tiny25_bundle / "gpt_tables.npz", tiny25_bundle / TIKTOKEN_FILE,
                                manifest.gpt, spec, "2.5")
    assert probe.graphs == ("gpt_decoder", "gpt_emotion_vector", "semantic_encoder") == p.PROBED_GRAPHS["2.5"]
    assert probe.lang_id == 0 and len(probe.styles) == len(p.GATE_TEXTS)
    en = cfg25.gpt.number_text_tokens - 1673 + 2  # <|en|>: n_ranks + 2
    assert all(ids[0] == en for _, _, ids in probe.prompts)
    assert all(0 < len(c) <= p.GATE_CODES for c in probe.reference)
    assert len({tuple(c) for c in probe.reference}) == len(probe.reference)  # the prompts differ
    same = probe.gate("gpt_decoder", tiny25_bundle / "gpt_decoder.onnx")
    assert same.passed and same.value == 1.0
    with pytest.raises(ValueError, match="not on the greedy probe's path"):
        probe.gate("gpt_speaker_conditioning", tiny25_bundle / "gpt_decoder.onnx")


def test_cpu_lowering_of_a_25_bundle(tiny25_checkpoint, tiny25_bundle, tmp_path):
    m = lower_bundle(CheckpointPaths.of(tiny25_checkpoint), tiny25_bundle, tmp_path / "cpu", "cpu")
    assert (m.family, m.target, tuple(m.graphs)) == ("2.5", "cpu", (*GRAPHS_25, "qwen_emotion"))
    for name in p.PROBED_GRAPHS["2.5"]:  # the GPT path: gated by greedy decoding too
        first = m.graphs[name].gate["attempts"][0]
        assert first["precision"] == "int8", name
        if all(r["passed"] for r in first["results"] if r["metric"] != "greedy_agreement"):
            assert any(r["metric"] == "greedy_agreement" for r in first["results"]), name
    assert m.graphs["dit"].gate["requested"] == "int8"  # not probed: its own gate only
    assert load_manifest(tmp_path / "cpu").family == "2.5"
    assert verify_checksums(tmp_path / "cpu", m) == []
