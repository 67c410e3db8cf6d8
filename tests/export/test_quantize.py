"""Precision conversions and their gates on the tiny random-weight bundle.

Measured on the tiny bundle (random weights, ORT CPU) when these bounds were chosen:
    gpt_decoder INT8: logits rel-L2 0.023, 603 kB -> 295 kB     dit INT8: velocity SNR 33 dB
    bigvgan fp16:     audio SNR 28 dB                           gpt_decoder fp16: logits rel-L2 7e-4
The assertions leave ~2x head-room over those numbers; the gates' own thresholds live in policy.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from indextts2_onnx.export import precision as p  # noqa: E402
from indextts2_onnx.export import quantize as q  # noqa: E402
from indextts2_onnx.export.graphs import GraphSpec  # noqa: E402
from indextts2_onnx.export.policy import DECODER_LOGIT_REL_L2_MAX, ENCODER_COSINE_MIN, Precision, Target  # noqa: E402
from indextts2_onnx.export.verify import cpu_session  # noqa: E402


@pytest.fixture(scope="module")
def models_specs(tiny_checkpoint):
    from indextts2_onnx.export.bundle import load_models
    from indextts2_onnx.export.checkpoint import CheckpointPaths
    from indextts2_onnx.export.config import load_config
    from indextts2_onnx.export.graphs import all_graphs

    cfg = load_config(tiny_checkpoint / "config.yaml")
    models = load_models(CheckpointPaths.of(tiny_checkpoint, cfg), cfg, lambda msg: None)
    return models, {s.name: s for s in all_graphs(cfg)}


@pytest.fixture(scope="module")
def int8_decoder(tiny_bundle, tmp_path_factory):
    return q.quantize_int8(tiny_bundle / "gpt_decoder.onnx", tmp_path_factory.mktemp("int8") / "gpt_decoder.onnx")


# --- pure metrics ---------------------------------------------------------------------------------------


def test_metrics_on_known_values():
    ref = np.array([3.0, 4.0])
    assert q.logit_error(ref, ref) == 0.0
    assert q.logit_error(ref, np.zeros(2)) == pytest.approx(1.0)
    assert q.logit_error(ref, ref * 1.1) == pytest.approx(0.1)
    assert q.snr_db(ref, ref) == math.inf
    assert q.snr_db(ref, ref * 1.1) == pytest.approx(20.0)  # noise = 10 % of the signal amplitude
    assert q.snr_db(ref, np.zeros(2)) == pytest.approx(0.0)
    assert q.cosine(ref, 2 * ref) == pytest.approx(1.0)
    assert q.cosine(ref, -ref) == pytest.approx(-1.0)
    assert q.cosine(ref, np.zeros(2)) == 0.0


def test_first_divergence():
    assert q.first_divergence([1, 2, 3], [1, 2, 3]) == 3
    assert q.first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert q.first_divergence([1, 2, 3], [1, 2]) == 2
    assert q.first_divergence([], []) == 0


def test_gate_directions_and_nan():
    assert q.gate("g", "rel_l2:logits", 0.01, 0.05).passed
    assert not q.gate("g", "rel_l2:logits", 0.06, 0.05).passed
    assert q.gate("g", "snr_db:audio", 31.0, 30.0).passed
    assert not q.gate("g", "snr_db:audio", 29.0, 30.0).passed
    assert not q.gate("g", "cosine:style", 0.99, ENCODER_COSINE_MIN).passed
    assert not q.gate("g", "snr_db:audio", float("nan"), 30.0).passed


def test_zeroed_logits_fail_the_decoder_gate():
    logits = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    value = q.logit_error(logits, np.zeros_like(logits))
    assert not q.gate("gpt_decoder", "rel_l2:logits", value, DECODER_LOGIT_REL_L2_MAX).passed


def test_greedy_gate():
    ref = [[5, 6, 7, 8], [1, 2]]
    assert q.greedy_gate(ref, [[5, 6, 7, 8], [1, 2]]).passed
    diverged = q.greedy_gate(ref, [[5, 6, 9, 8], [1, 2]])  # the real-GPT INT8 failure mode
    assert not diverged.passed and diverged.value == pytest.approx(0.5)
    assert not q.greedy_gate(ref, [[5, 6, 7, 8, 4], [1, 2]]).passed  # ran past the stop token
    assert not q.greedy_gate(ref, [[5, 6, 7], [1, 2]]).passed  # stopped early
    with pytest.raises(ValueError):
        q.greedy_gate(ref, [[5, 6, 7, 8]])


# --- conversions on the tiny bundle ---------------------------------------------------------------------


def test_int8_decoder_loads_shrinks_and_passes(tiny_bundle, int8_decoder, models_specs):
    models, specs = models_specs
    assert int8_decoder.with_name("gpt_decoder.onnx.data").exists()  # the bundle's external-data layout
    ops = {n.op_type for n in onnx.load(str(int8_decoder), load_external_data=False).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    # the MatMul weights shrink ~4x; the mel-code embedding tables the shared decoder holds (Gather, kept
    # fp32) do not: a quarter of the tiny graph, 3 % at official size
    c = models.cfg.gpt
    tables = (c.number_mel_codes + c.mel_positions) * c.model_dim * 4
    fp32 = q.file_size(tiny_bundle / "gpt_decoder.onnx")
    assert q.file_size(int8_decoder) < 0.6 * (fp32 - tables) + tables
    cpu_session(int8_decoder)
    errors = q.compare_graph(specs["gpt_decoder"], models, tiny_bundle / "gpt_decoder.onnx", int8_decoder, "rel_l2")
    assert 0 < errors["logits"] < 0.2, errors  # measured 0.023
    [result] = q.gate_graph(specs["gpt_decoder"], models, tiny_bundle / "gpt_decoder.onnx", int8_decoder)
    assert result.metric == "rel_l2:logits" and result.passed, result


def test_int8_overwrites_cleanly(tiny_bundle, int8_decoder):
    """onnx appends to an existing .data file; a second quantization must not grow it."""
    before = q.file_size(int8_decoder)
    q.quantize_int8(tiny_bundle / "gpt_decoder.onnx", int8_decoder)
    assert q.file_size(int8_decoder) == before
    cpu_session(int8_decoder)


def test_int8_dit_snr(tiny_bundle, models_specs, tmp_path):
    models, specs = models_specs
    dst = q.quantize_int8(tiny_bundle / "dit.onnx", tmp_path / "dit.onnx")
    snr = q.compare_graph(specs["dit"], models, tiny_bundle / "dit.onnx", dst, "snr_db")["velocity"]
    assert 20.0 < snr < math.inf, snr  # measured 33 dB: quantized, but not broken


def test_int8_refuses_the_vocoder(tiny_bundle, models_specs, tmp_path):
    """The vocoder's policy allows fp16 at most: converting it to INT8 or 4-bit is refused."""
    _, specs = models_specs
    for precision in (Precision.INT8, Precision.INT4):
        with pytest.raises(ValueError, match=f"bigvgan: {precision} is refused"):
            p.convert(specs["bigvgan"], tiny_bundle / "bigvgan.onnx", tmp_path / "bigvgan.onnx", precision, Target.CPU)
    assert not (tmp_path / "bigvgan.onnx").exists()


def test_a_graph_without_a_gate_is_not_gated(tiny_bundle, models_specs):
    """A spec built without a policy ships in fp32 only; gating a lowered copy of it is an error."""
    models, specs = models_specs
    dit = specs["dit"]
    bare = GraphSpec(dit.name, dit.inputs, dit.outputs, dit.wrapper, dit.example, dit.cases, dit.atol)
    assert bare.policy.allowed == (Precision.FP32,) and bare.policy.gate is None
    with pytest.raises(ValueError, match="dit: no precision gate"):
        q.gate_graph(bare, models, tiny_bundle / "dit.onnx", tiny_bundle / "dit.onnx")


def test_the_int4_decoder_has_its_own_logit_bound(tiny_bundle, models_specs):
    models, specs = models_specs
    src = tiny_bundle / "gpt_decoder.onnx"
    thresholds = {r.threshold for x in (None, Precision.INT8, Precision.FP16)
                  for r in q.gate_graph(specs["gpt_decoder"], models, src, src, x)}
    assert thresholds == {DECODER_LOGIT_REL_L2_MAX}
    [int4] = q.gate_graph(specs["gpt_decoder"], models, src, src, "int4")  # as `verify` passes it: the manifest's
    assert int4.threshold == 0.25 and int4.passed


def test_fp16_vocoder_loads_and_stays_close(tiny_bundle, models_specs, tmp_path):
    models, specs = models_specs
    dst = q.convert_fp16(tiny_bundle / "bigvgan.onnx", tmp_path / "bigvgan.onnx", keep_io_types=True)
    model = onnx.load(str(dst))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # drop-in I/O
    snr = q.compare_graph(specs["bigvgan"], models, tiny_bundle / "bigvgan.onnx", dst, "snr_db")["audio"]
    assert snr > 20.0, snr  # measured 28 dB on random weights


def test_fp16_decoder_with_fp16_io(tiny_bundle, models_specs, tmp_path):
    """keep_io_types=False (fp16 KV cache): compare_graph casts the feeds to the graph's input type."""
    models, specs = models_specs
    dst = q.convert_fp16(tiny_bundle / "gpt_decoder.onnx", tmp_path / "gpt_decoder.onnx", keep_io_types=False)
    assert cpu_session(dst).get_inputs()[0].type == "tensor(float16)"
    [result] = q.gate_graph(specs["gpt_decoder"], models, tiny_bundle / "gpt_decoder.onnx", dst)
    assert result.passed and result.value < 0.01, result  # measured 7e-4


def test_gate_rejects_a_graph_with_zeroed_logits(tiny_bundle, models_specs, tmp_path):
    """A deliberately broken decoder (logits multiplied by 0) must fail the gate that the fp32 one passes."""
    models, specs = models_specs
    src = tiny_bundle / "gpt_decoder.onnx"
    model = onnx.load(str(src))
    producer = next(n for n in model.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_unscaled"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero_scale"))
    model.graph.node.append(onnx.helper.make_node("Mul", ["logits_unscaled", "zero_scale"], ["logits"]))
    bad = q._save(model, tmp_path / "gpt_decoder.onnx")

    [same] = q.gate_graph(specs["gpt_decoder"], models, src, src)
    assert same.passed and same.value == 0.0
    [result] = q.gate_graph(specs["gpt_decoder"], models, src, bad)
    assert not result.passed and result.value == pytest.approx(1.0), result
