"""Precision plans, gates with fallback, and lowered bundles that the runtime runs (tiny random weights).

Measured on the tiny bundle when these tests were written (ORT CPU, gates against the fp32 graphs):
    cpu : gpt_decoder int8 logits rel-L2 0.023 but greedy agreement 0.0 -> falls back to fp32; emotion vector
          int8 cosine 0.9997 but greedy agreement 0.12 -> fp32;
          speaker conditioning / w2v-BERT int8 cosine 0.9991 / 0.9993, greedy 1.0 -> int8; dit int8 33 dB -> int8
    cuda: decoder int4 logits rel-L2 0.15 -> falls back to fp16 (rel-L2 7e-4, greedy 1.0); fp16 DiT 25 dB,
          BigVGAN 28 dB and codec cosine 0.9988 -> fp32. Random weights are ill-conditioned for fp16:
          rounding only the DiT's inputs to fp16 already costs ~30 dB (real weights are what the gate is for).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from conftest import REPO  # noqa: E402
from indextts2_onnx.export import precision as p  # noqa: E402
from indextts2_onnx.export import quantize as q  # noqa: E402
from indextts2_onnx.export.bundle import lower_bundle  # noqa: E402
from indextts2_onnx.export.checkpoint import CheckpointPaths  # noqa: E402
from indextts2_onnx.export.config import load_config, load_qwen_config  # noqa: E402
from indextts2_onnx.export.graphs import all_graphs, emotion_text_graph  # noqa: E402
from indextts2_onnx.export.policy import PRECISIONS, ExportPolicy, Gate, OnFail, Precision, Target  # noqa: E402
from indextts2_onnx.runtime import IndexTTS2, Speaker  # noqa: E402
from indextts2_onnx.runtime.cli import main  # noqa: E402
from indextts2_onnx.runtime.manifest import load_manifest, verify_checksums  # noqa: E402


# --- policies and plans (pure) --------------------------------------------------------------------------

SPECS = {s.name: s for s in all_graphs(load_config(REPO / "configs" / "tiny" / "config.yaml"))}
SPECS["qwen_emotion"] = emotion_text_graph(load_qwen_config(REPO / "configs" / "tiny" / "qwen_emo_config.json"))
GPT_PATH = {"semantic_encoder", "gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder"}


def test_enums_keep_the_old_strings():
    """CLI flags and manifest values are the enums' values, unchanged; precisions are ordered lowest first."""
    assert [x.value for x in PRECISIONS] == ["int4", "int8", "fp16", "fp32"] and PRECISIONS == tuple(Precision)
    assert [x.value for x in Target] == ["any", "cpu", "cuda"]
    assert [x.value for x in OnFail] == ["fallback", "error", "keep"]
    for enum in (Precision, Target, OnFail):
        for member in enum:
            assert enum(member.value) is member and member == member.value and f"{member}" == member.value
    assert json.dumps({"p": Precision.INT8, "t": Target.CUDA}) == '{"p": "int8", "t": "cuda"}'
    record = p.Lowering(Precision.INT8, Precision.FP32, [p.Attempt(Precision.INT8, False, [], 1)]).to_dict()
    assert record == {"requested": "int8", "chosen": "fp32",
                      "attempts": [{"precision": "int8", "passed": False, "results": [], "size": 1}]}
    assert type(record["chosen"]) is str and type(record["attempts"][0]["precision"]) is str


def test_every_policy_is_consistent():
    """fp32 is always allowed (and last), defaults lie within what is allowed, anything below fp32 has a
    gate on real outputs with a known metric, and fp16's kept-fp32 names are real I/O."""
    for name, spec in SPECS.items():
        pol = spec.policy
        assert pol.allowed[-1] == Precision.FP32 and list(pol.allowed) == sorted(pol.allowed, key=PRECISIONS.index)
        assert set(pol.defaults.values()) <= set(pol.allowed) and Target.ANY not in pol.defaults, name
        assert pol.default(Target.CUDA) == Precision.FP16, name  # cuda: fp16 everywhere
        if pol.allowed != (Precision.FP32,):
            assert pol.gate is not None and pol.gate.metric in q.METRICS, name
            assert set(pol.gate.outputs) <= set(spec.outputs), name
            assert set(pol.gate.thresholds) <= set(pol.allowed), name
        assert set(pol.fp32_io or ()) <= set(spec.inputs) | set(spec.outputs), name


def test_policy_data():
    """The choices the measurements made (ort-notes §4.1-4.2, peers.md), as the specs now state them."""
    allowed = {name: spec.policy.allowed for name, spec in SPECS.items()}
    low = (Precision.FP16, Precision.FP32)
    assert allowed["bigvgan"] == allowed["campplus"] == allowed["length_regulator"] == allowed["semantic_codec"] == low
    assert allowed["gpt_decoder"] == allowed["qwen_emotion"] == PRECISIONS  # the decoders may take 4-bit weights
    assert {n for n, a in allowed.items() if Precision.INT4 in a} == {"gpt_decoder", "qwen_emotion"}
    assert {n for n, s in SPECS.items() if s.policy.default(Target.CPU) == Precision.INT8} == GPT_PATH | {
        "dit", "qwen_emotion"}
    assert {n for n, s in SPECS.items() if s.policy.probed} == GPT_PATH == set(p.GreedyProbe.GRAPHS)
    assert p.GreedyProbe.GRAPHS[0] == "gpt_decoder"  # lowered first: gated with fp32 encoders
    dec = SPECS["gpt_decoder"].policy
    assert dec.gate == SPECS["qwen_emotion"].policy.gate == Gate("rel_l2", 0.05, ("logits",), {Precision.INT4: 0.25})
    assert dec.gate.threshold_for(Precision.INT8) == 0.05 and dec.gate.threshold_for("int4") == 0.25
    assert dec.fp32_io == ("inputs_embeds", "logits", "hidden_states")  # fp16 decoder: only the cache in fp16
    assert SPECS["qwen_emotion"].policy.fp32_io == ("logits",)
    assert all(s.policy.fp32_io is None for n, s in SPECS.items() if n not in ("gpt_decoder", "qwen_emotion"))
    metrics = {n: (s.policy.gate.metric, s.policy.gate.threshold) for n, s in SPECS.items()}
    assert {n for n, m in metrics.items() if m == ("cosine", 0.999)} == GPT_PATH - {"gpt_decoder"} | {
        "semantic_codec", "campplus"}
    assert {n for n, m in metrics.items() if m == ("snr_db", 30.0)} == {
        "length_regulator", "latent_projector", "dit", "bigvgan"}


def test_policy_invariants_hold_at_construction():
    assert ExportPolicy() == ExportPolicy(allowed=(Precision.FP32,), defaults={}, gate=None, probed=False)
    for bad in (dict(allowed=(Precision.FP16,)), dict(allowed=(Precision.FP32, Precision.FP16)),
                dict(allowed=(Precision.FP16, Precision.FP32)),  # no gate
                dict(allowed=(Precision.FP16, Precision.FP32), gate=Gate("snr_db", 30.0),
                     defaults={Target.CPU: Precision.INT8}),
                dict(allowed=(Precision.FP16, Precision.FP32), gate=Gate("snr_db", 30.0),
                     defaults={Target.ANY: Precision.FP16})):
        with pytest.raises(AssertionError):
            ExportPolicy(**bad)


def test_target_defaults():
    assert set(p.parse_precision(None, "any", SPECS.values()).values()) == {"fp32"}
    cpu = p.parse_precision(None, "cpu", SPECS.values())
    assert cpu["gpt_decoder"] == cpu["semantic_encoder"] == cpu["dit"] == "int8"
    assert cpu["bigvgan"] == cpu["campplus"] == "fp32"
    cuda = p.parse_precision(None, "cuda", SPECS.values())
    assert set(cuda.values()) == {"fp16"} and list(cuda) == list(SPECS)
    assert all(type(v) is Precision for v in cuda.values())


def test_precision_overrides():
    plan = p.parse_precision("fp32, gpt_decoder=int4", "cuda", SPECS.values())
    assert plan["gpt_decoder"] == "int4" and plan["dit"] == "fp32"
    plan = p.parse_precision("int8", "any", SPECS.values())  # bare: every graph that allows it, others keep theirs
    assert plan["gpt_decoder"] == plan["dit"] == "int8" and plan["bigvgan"] == "fp32"
    graphs = ", ".join(SPECS)
    for bad, message in (
            ("int3", "--precision 'int3': precision must be one of int4, int8, fp16, fp32"),
            ("gpt_decoder=", "--precision 'gpt_decoder=': precision must be one of int4, int8, fp16, fp32"),
            ("decoder=int8", f"--precision 'decoder=int8': unknown graph 'decoder'; graphs: {graphs}"),
            ("bigvgan=int8", "--precision 'bigvgan=int8': bigvgan allows fp16, fp32"),
            ("dit=int4", "--precision 'dit=int4': dit allows int8, fp16, fp32")):
        with pytest.raises(ValueError) as e:
            p.parse_precision(f"fp16, {bad}", "cpu", SPECS.values())
        assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        p.parse_precision(None, "tpu", SPECS.values())
    assert str(e.value) == "--target 'tpu': use one of any, cpu, cuda"


def test_on_fail():
    assert [p.check_on_fail(v) for v in ("fallback", "error", "keep")] == list(OnFail)
    with pytest.raises(ValueError) as e:
        p.check_on_fail("ignore")
    assert str(e.value) == "on_fail='ignore': use one of fallback, error, keep"


def test_a_spec_without_a_policy_is_fp32_only():
    spec = replace(SPECS["dit"], name="extra", policy=ExportPolicy())
    for target in Target:
        assert p.parse_precision("int8", target, [spec]) == {"extra": Precision.FP32}
    with pytest.raises(ValueError, match="extra allows fp32"):
        p.parse_precision("extra=fp16", "cuda", [spec])


def test_conversion_refuses_what_the_policy_does_not_allow(tmp_path):
    """The vocoder is never INT8 or 4-bit, whoever asks (nothing is read or written)."""
    for precision in (Precision.INT8, Precision.INT4):
        with pytest.raises(ValueError, match=f"bigvgan: {precision} is refused for this graph; it allows fp16, fp32"):
            p.convert(SPECS["bigvgan"], tmp_path / "bigvgan.onnx", tmp_path / "out.onnx", precision, Target.CPU)
    assert list(tmp_path.iterdir()) == []


def test_fallback_chains():
    pol = {name: spec.policy for name, spec in SPECS.items()}
    assert p.candidates(pol["gpt_decoder"], "int4", "cpu") == ["int4", "int8", "fp32"]
    assert p.candidates(pol["gpt_decoder"], "int4", "cuda") == ["int4", "fp16", "fp32"]
    assert p.candidates(pol["dit"], "int8", "cpu") == ["int8", "fp32"]  # fp16 is slower than fp32 on CPU
    assert p.candidates(pol["bigvgan"], "fp16", "cuda") == ["fp16", "fp32"]
    assert p.candidates(pol["dit"], "fp32", "cuda") == ["fp32"]
    assert p.candidates(pol["gpt_decoder"], Precision.INT8, Target.CUDA) == [Precision.INT8, Precision.FP16,
                                                                              Precision.FP32]
    assert p.DEVICE == {"fp32": "any", "int4": "any", "int8": "cpu", "fp16": "cuda"}


# --- lowered bundles --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_bundle(tiny_checkpoint, tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("lowered") / "cpu"
    lower_bundle(CheckpointPaths.of(tiny_checkpoint), tiny_bundle, out, "cpu")
    return out


@pytest.fixture(scope="module")
def cuda_bundle(tiny_checkpoint, tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("lowered") / "cuda"
    lower_bundle(CheckpointPaths.of(tiny_checkpoint), tiny_bundle, out, "cuda", precision="gpt_decoder=int4")
    return out


def _check_records(bundle):
    """Every lowered graph's record is consistent with its entry, and its numbers with the thresholds."""
    m = load_manifest(bundle)
    assert verify_checksums(bundle, m) == []
    for name, e in m.graphs.items():
        if not e.gate:
            assert e.precision == "fp32" and e.device == "any"
            continue
        g = e.gate
        assert g["chosen"] == e.precision and e.device == p.DEVICE[e.precision]
        assert [a["precision"] for a in g["attempts"]] == p.candidates(SPECS[name].policy, g["requested"], m.target)[
            : len(g["attempts"])]
        for a in g["attempts"]:
            assert a["size"] > 0 and a["results"]
            for r in a["results"]:  # the recorded verdict follows from the recorded value and threshold
                assert r["passed"] == q.gate(name, r["metric"], r["value"], r["threshold"]).passed
            assert a["passed"] == all(r["passed"] for r in a["results"])
        passed = [a["precision"] for a in g["attempts"] if a["passed"]]
        assert e.precision == (passed[0] if passed else "fp32")
    return m


def test_cpu_bundle(cpu_bundle, tiny_bundle):
    m = _check_records(cpu_bundle)
    assert m.target == "cpu"
    dec = m.graphs["gpt_decoder"].gate
    int8 = dec["attempts"][0]
    metrics = {r["metric"]: r for r in int8["results"]}
    assert metrics["rel_l2:logits"]["value"] < 0.05  # close logits (measured 0.023) ...
    assert metrics["greedy_agreement"]["value"] < 1.0  # ... yet other greedy codes: the gate's reason to exist
    assert m.graphs["gpt_decoder"].precision == "fp32"
    assert m.graphs["dit"].precision == "int8" and m.graphs["semantic_encoder"].precision == "int8"
    ops = {n.op_type for n in onnx.load(str(cpu_bundle / "dit.onnx"), load_external_data=False).graph.node}
    assert "MatMulInteger" in ops
    assert (cpu_bundle / "semantic_encoder.onnx.data").stat().st_size < 0.6 * (
        tiny_bundle / "semantic_encoder.onnx.data").stat().st_size
    assert not any(path.name.startswith(".") for path in cpu_bundle.iterdir())  # no work folders left
    qwen = m.graphs["qwen_emotion"].gate  # the emotion model: INT8 asked, screened by its logits
    assert qwen["requested"] == "int8" and qwen["attempts"][0]["results"][0]["metric"] == "rel_l2:logits"
    tts = IndexTTS2(cpu_bundle)
    assert tts.emotion_from_text("有点难过", max_new_tokens=6).new_tokens == 6


def test_cuda_bundle_falls_back_and_keeps_an_fp16_cache(cuda_bundle, tiny_bundle):
    m = _check_records(cuda_bundle)
    dec = m.graphs["gpt_decoder"]
    assert [a["precision"] for a in dec.gate["attempts"]][0] == "int4"
    assert dec.precision in ("int4", "fp16") and dec.device in ("any", "cuda")
    if dec.precision == "fp16":  # the past/present inputs are fp16, embeddings and logits stay fp32
        from indextts2_onnx.runtime.gpt import CodeGenerator
        from indextts2_onnx.runtime.kv_cache import decoder_io
        from indextts2_onnx.runtime.pipeline import load_bundle

        manifest, graphs, tables = load_bundle(cuda_bundle)
        decoder, io = graphs["gpt_decoder"], decoder_io(manifest.graphs["gpt_decoder"], manifest.gpt)
        assert decoder.input_dtype(io.embeds) == np.float32
        assert decoder.input_dtype(io.past[0]) == np.float16
        gen = CodeGenerator(decoder, tables.gpt, manifest.gpt, io)
        start = np.array([manifest.gpt.start_mel_token])
        _, _, cache = gen.calls.start(np.zeros((1, 3, manifest.gpt.model_dim), np.float32), start, np.zeros(1, np.int64), 8)
        assert cache.dtype == np.float16
    qwen = m.graphs["qwen_emotion"]  # fp16 asked on cuda: an fp16 cache, fp32 logits, where its gate passed
    assert qwen.gate["requested"] == "fp16"
    if qwen.precision == "fp16":
        model = IndexTTS2(cuda_bundle)._emotion_model
        assert model.graph.input_dtype(model.io.past[0]) == np.float16
        assert model(model.entry.prompt_suffix + "悲", max_new_tokens=4).new_tokens == 4


def _speaker(seed: int = 0) -> Speaker:
    rng = np.random.default_rng(seed)
    return Speaker(semantic=rng.standard_normal((1, 50, 32)), emotion_semantic=rng.standard_normal((1, 40, 32)),
                   style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, 12)),
                   prompt_condition=rng.standard_normal((1, 12, 32)))


def test_lowered_bundles_synthesize(cpu_bundle, cuda_bundle, tiny_bundle):
    """Both lowered bundles run the whole pipeline on CPU; where the decoder gate passed, greedy codes
    equal the fp32 bundle's on a new prompt too."""
    spk = _speaker()
    runs = {}
    for name, bundle in (("fp32", tiny_bundle), ("cpu", cpu_bundle), ("cuda", cuda_bundle)):
        tts = IndexTTS2(bundle)
        ids = tts.tokenize("The quick brown fox jumps over the lazy dog.")[0]
        emovec = tts.emotion_vector(spk)
        codes, latent = tts.generate_codes(ids, spk, emovec, greedy=True, max_codes=40)
        wav = tts.vocode(tts.decode_mel(codes, latent, spk, steps=3, seed=0))
        assert wav.dtype == np.float32 and np.isfinite(wav).all() and wav.shape[0] == 256 * int(len(codes) * 1.72)
        runs[name] = (tts, codes, emovec)
    assert len(runs["fp32"][1]) > 3
    for name in ("cpu", "cuda"):
        tts, codes, emovec = runs[name]
        assert q.cosine(runs["fp32"][2], emovec) > 0.999  # emotion conditioning passed its cosine gate
        lowered = {n: g.precision for n, g in tts.manifest.graphs.items()}
        if lowered["gpt_decoder"] == "fp16" and lowered["gpt_emotion_vector"] == "fp32":
            assert codes.tolist() == runs["fp32"][1].tolist()


def test_strict_and_keep(tiny_checkpoint, tiny_bundle, tmp_path):
    """fp16 BigVGAN fails its 30 dB gate on these random weights (28 dB): strict refuses, keep ships it."""
    paths = CheckpointPaths.of(tiny_checkpoint)
    out = tmp_path / "strict"
    with pytest.raises(p.PrecisionError, match="bigvgan: fp16 failed its gate.*--strict"):
        lower_bundle(paths, tiny_bundle, out, "cuda", precision="fp32,bigvgan=fp16", on_fail="error")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written
    kept = tmp_path / "kept"
    m = lower_bundle(paths, tiny_bundle, kept, "cuda", precision="fp32,bigvgan=fp16", on_fail="keep")
    voc = m.graphs["bigvgan"]
    assert voc.precision == "fp16" and not voc.gate["attempts"][0]["passed"]
    snr = voc.gate["attempts"][0]["results"][0]["value"]
    assert 20.0 < snr < 30.0, snr
    assert [n for n, g in m.graphs.items() if g.gate] == ["bigvgan"]


def test_lower_refuses_a_lowered_or_changed_source(tiny_checkpoint, cpu_bundle, tiny_bundle, tmp_path):
    paths = CheckpointPaths.of(tiny_checkpoint)
    with pytest.raises(ValueError, match="starts from an fp32 bundle"):
        lower_bundle(paths, cpu_bundle, tmp_path / "x", "cuda")
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "bpe.model").read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    (copy / "bpe.model").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"files changed since export \(bpe\.model\)"):
        lower_bundle(paths, copy, tmp_path / "y", "cuda")


def test_cli_info_and_verify_on_a_lowered_bundle(tiny_checkpoint, cpu_bundle, capsys):
    assert main(["info", str(cpu_bundle), "--check"]) == 0
    out = capsys.readouterr().out
    assert "target cpu" in out and "asked int8: int8 failed the gate" in out and "gate passed" in out
    assert main(["verify", str(tiny_checkpoint), str(cpu_bundle)]) == 0
    out = capsys.readouterr().out
    assert "ok   dit (int8): snr_db:velocity" in out and "11 of 11 graphs match" in out


def test_cli_from_bundle_needs_a_target(tiny_checkpoint, tiny_bundle, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--from-bundle",
                 str(tiny_bundle)]) == 2
    assert "give --target cpu or cuda" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--from-bundle", str(tiny_bundle),
                 "--target", "cpu", "--precision", "dit=int3"]) == 1
    assert "precision must be one of" in capsys.readouterr().err


def test_manifest_1_0_bundles_still_load(tiny_bundle, tmp_path):
    """A bundle written before targets and gates (format 1.0) reads as target any, no gates."""
    import shutil
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    d = json.loads((old / "manifest.json").read_text())
    d["format_version"] = "1.0"
    del d["target"]
    for g in d["graphs"].values():
        del g["gate"]
    (old / "manifest.json").write_text(json.dumps(d))
    m = load_manifest(old)
    assert m.target == "any" and all(g.gate == {} for g in m.graphs.values())


def test_greedy_probe(tiny_bundle, tmp_path):
    """The probe decodes from front-end features to codes; the fp32 graphs reproduce themselves exactly,
    and a converted graph anywhere on the path is judged by the codes that come out."""
    m = load_manifest(tiny_bundle)
    probe = p.GreedyProbe.build(tiny_bundle, tiny_bundle / "gpt_tables.npz", tiny_bundle / "bpe.model", m.gpt,
                                SPECS["gpt_decoder"])
    assert len(probe.reference) == len(p.GATE_TEXTS)
    assert all(0 < len(c) <= p.GATE_CODES for c in probe.reference)
    assert len({tuple(c) for c in probe.reference}) == len(probe.reference)  # the prompts differ
    same = probe.gate("gpt_decoder", tiny_bundle / "gpt_decoder.onnx")
    assert same.passed and same.value == 1.0 and same.graph == "gpt_decoder"
    int8 = q.quantize_int8(tiny_bundle / "gpt_decoder.onnx", tmp_path / "gpt_decoder.onnx")
    result = probe.gate("gpt_decoder", int8)
    assert not result.passed and result.value < 0.5, result  # measured 0.0: the first code already differs
    probe.accept("gpt_decoder", int8)  # later gates run on top of accepted graphs
    assert not probe.gate("semantic_encoder", tiny_bundle / "semantic_encoder.onnx").passed


def test_kept_failures_do_not_judge_later_graphs(tiny_checkpoint, tiny_bundle, tmp_path):
    """With --keep-failed the INT8 decoder ships despite its gate, but the speaker-conditioning gate after
    it is still measured against fp32 everywhere else (it passes, as in a normal cpu export)."""
    m = lower_bundle(CheckpointPaths.of(tiny_checkpoint), tiny_bundle, tmp_path / "kept", "cpu",
                     precision="fp32,gpt_decoder=int8,gpt_speaker_conditioning=int8", on_fail="keep")
    assert m.graphs["gpt_decoder"].precision == "int8" and not m.graphs["gpt_decoder"].gate["attempts"][0]["passed"]
    speaker = m.graphs["gpt_speaker_conditioning"].gate["attempts"][0]
    greedy = next(r for r in speaker["results"] if r["metric"] == "greedy_agreement")
    assert speaker["passed"] and greedy["value"] == 1.0
