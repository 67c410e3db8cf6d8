"""Every graph of the bundle against its torch module at several dynamic sizes (ONNX Runtime CPU, fp32)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import REPO  # noqa: E402
from indextts2_onnx.export.bundle import load_models  # noqa: E402
from indextts2_onnx.export.checkpoint import CheckpointPaths  # noqa: E402
from indextts2_onnx.export.config import load_config  # noqa: E402
from indextts2_onnx.export.graphs import GraphSpec, Models, all_graphs, gpt_graphs  # noqa: E402
from indextts2_onnx.export.policy import ExportPolicy, Precision  # noqa: E402
from indextts2_onnx.export.verify import ParityError, check_parity, cpu_session  # noqa: E402

# Tolerance: max |onnx - torch| <= 1e-4 absolute in fp32 (seen: 1e-7 .. 1e-5); the vocoder's waveform
# in [-1, 1] after ~100 stacked convolutions gets 5e-4 (seen: ~2e-4 with random weights). Codes: exact.
ATOL = {"bigvgan": 5e-4}
GRAPHS = ["gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "semantic_codec",
          "campplus", "length_regulator", "latent_projector", "dit", "bigvgan"]


@pytest.fixture(scope="module")
def models(tiny_checkpoint) -> Models:
    cfg = load_config(tiny_checkpoint / "config.yaml")
    return load_models(CheckpointPaths.of(tiny_checkpoint, cfg), cfg, lambda msg: None)


def test_every_graph_is_declared(models):
    assert [s.name for s in all_graphs(models.cfg)] == GRAPHS


def test_every_graph_states_its_export_policy(models):
    """Every bundle graph may be lowered behind a gate; a spec built without a policy is fp32 only."""
    specs = all_graphs(models.cfg)
    assert all(s.policy != ExportPolicy() and s.policy.gate is not None for s in specs)
    first = specs[0]
    bare = GraphSpec("x", first.inputs, first.outputs, first.wrapper, first.example, first.cases, atol=1e-4)
    assert bare.policy == ExportPolicy() and bare.policy.allowed == (Precision.FP32,) and not bare.policy.probed


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_matches_torch_at_several_sizes(name, tiny_bundle, models):
    spec = next(s for s in all_graphs(models.cfg) if s.name == name)
    assert spec.atol <= ATOL.get(name, 1e-4)
    parity = check_parity(spec, models, tiny_bundle / f"{name}.onnx")
    assert len(parity.cases) >= 4
    assert parity.max_abs_diff <= ATOL.get(name, 1e-4)
    # the sizes really vary: frames / sequence and past lengths differ between cases
    shapes = {json.dumps(c["shapes"]) for c in parity.cases}
    assert len(shapes) == len(parity.cases)


def test_manifest_records_the_export_parity(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert sorted(manifest["graphs"]) == sorted(GRAPHS + ["qwen_emotion"])  # + the emotion model's decoder
    assert manifest["config"]["gpt"]["layers"] == 2 and manifest["config"]["emo_num"] == manifest["emo_num"]
    for name, entry in manifest["graphs"].items():
        assert entry["parity"]["max_abs_diff"] <= entry["parity"]["atol"] <= ATOL.get(name, 1e-4), name


def test_graphs_carry_no_stack_traces(tiny_bundle):
    """torch.onnx's per-node stack traces (source paths of the exporting machine) are stripped at export;
    the module scopes stay."""
    import onnx

    for name in GRAPHS:
        nodes = onnx.load(str(tiny_bundle / f"{name}.onnx"), load_external_data=False).graph.node
        keys = {p.key for n in nodes for p in n.metadata_props}
        assert "pkg.torch.onnx.stack_trace" not in keys and "namespace" in keys, name
        assert str(REPO) not in "".join(p.value for n in nodes for p in n.metadata_props), name


def test_decoder_serves_prefill_steps_and_a_chunk_consistently(tiny_concat_bundle, tiny_gpt):
    """Prefill of S rows == prefill of S-3 rows followed by 3 single steps and by one 3-row chunk (the
    concat layout's graph; the shared one's calls are checked in tests/runtime/test_shared_decoder.py)."""
    sess = cpu_session(tiny_concat_bundle / "gpt_decoder.onnx")
    c = tiny_gpt.cfg
    names = [i.name for i in sess.get_inputs()]
    x = np.random.default_rng(0).standard_normal((1, 20, c.model_dim)).astype(np.float32)
    empty = {n: np.zeros((1, c.heads, 0, c.head_dim), np.float32) for n in names[1:]}
    full = sess.run(None, {"inputs_embeds": x, **empty})
    head = sess.run(None, {"inputs_embeds": x[:, :17], **empty})
    past = dict(zip(names[1:], head[2:]))
    for i in range(17, 20):
        out = sess.run(None, {"inputs_embeds": x[:, i:i + 1], **past})
        np.testing.assert_allclose(out[1][:, 0], full[1][:, i], atol=1e-5)
        past = dict(zip(names[1:], out[2:]))
    np.testing.assert_allclose(out[0], full[0], atol=1e-5)  # last-position logits
    chunk = sess.run(None, {"inputs_embeds": x[:, 17:], **dict(zip(names[1:], head[2:]))})
    np.testing.assert_allclose(chunk[1], full[1][:, 17:], atol=1e-5)


def test_parity_failure_is_reported(tiny_bundle, tiny_gpt, tiny_checkpoint):
    """A graph of the wrong weights must fail the check (so the check can fail at all)."""
    cfg = load_config(tiny_checkpoint / "config.yaml")
    spec = next(s for s in gpt_graphs(cfg) if s.name == "gpt_emotion_vector")
    other = type(tiny_gpt)(tiny_gpt.cfg).eval()  # fresh random init, not the exported weights
    with pytest.raises(ParityError, match="gpt_emotion_vector: max"):
        check_parity(spec, Models(cfg, gpt=other), tiny_bundle / "gpt_emotion_vector.onnx")
