"""IndexTTS-2.5 EnhancedCodec (decode path): shapes, the x2 up path, codec.pth layout, strict loader, the
2.5 graph set and `codec_decoder` / length-regulator parity against ONNX Runtime.

Tiny sizes (configs/tiny semantic_codec: codebook 64, hidden 32, codebook_dim 8, Vocos 24/48/2 layers) with
the project's random values, so the file runs in seconds. Tolerance: max |onnx - torch| <= 1e-4 in fp32
(the spec measured 1-2e-6 at official size)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from indextts2_onnx.export.checkpoint import CheckpointError
from indextts2_onnx.export.checkpoint_layout import enhanced_codec_layout
from indextts2_onnx.export.config import load_config
from indextts2_onnx.export.graphs import acoustic_graphs, decoder_spec, gpt_graphs
from indextts2_onnx.export.graphs25 import graphs_25
from indextts2_onnx.export.modules.enhanced_codec import (
    ENHANCED_CODEC_UNUSED_KEYS,
    EnhancedCodec,
    load_enhanced_codec,
)
from indextts2_onnx.export.modules.s2mel import LengthRegulator
from indextts2_onnx.export.random_weights import random_state_dict, randomize_module_

from _graphs import export_and_check, models, tiny_config  # noqa: E402
from conftest import REPO  # noqa: E402

ATOL = 1e-4
WN_PREFIXES = ("quantizer.quantizers.0.in_project", "quantizer.quantizers.0.out_project")
GRAPHS_25 = ["gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "campplus", "length_regulator",
             "codec_decoder", "dit", "bigvgan"]


@pytest.fixture(scope="module")
def sc():
    return tiny_config().semantic_codec


def file_state(sc, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random codec.pth state dict in upstream's layout (weight-norm form, encoder and down included)."""
    return random_state_dict(enhanced_codec_layout(sc), seed, namespace="codec.pth")


def write(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def codec(sc, tmp_path_factory) -> EnhancedCodec:
    return load_enhanced_codec(write(tmp_path_factory.mktemp("codec") / "codec.pth", file_state(sc)), sc)


def folded(key: str) -> str:
    return re.sub(r"\.weight_[gv]$", ".weight", key)


def is_extra(key: str) -> bool:
    return any(re.fullmatch(p, key) for p in ENHANCED_CODEC_UNUSED_KEYS)


# --- 1. codec.pth layout ------------------------------------------------------------------------------


def test_layout_is_the_decode_path_plus_declared_extras(sc):
    layout = enhanced_codec_layout(sc)
    module = EnhancedCodec(sc).state_dict()
    extras = {k for k in layout if is_extra(k)}
    assert extras and {k.split(".", 1)[0] for k in extras} == {"encoder", "down"}
    assert {folded(k) for k in layout if k not in extras} == set(module)
    for key, spec in layout.items():
        if key in extras:
            continue
        want = tuple(module[folded(key)].shape)
        if key.endswith(".weight_g"):  # torch weight_norm dim=0: one gain per output channel
            want = (want[0],) + (1,) * (len(want) - 1)
        assert spec.shape == want, key
        assert spec.dtype == module[folded(key)].dtype == torch.float32
    assert {k.rsplit(".", 1)[0] for k in layout if k.endswith(("weight_g", "weight_v"))} == set(WN_PREFIXES)


def test_official_size_parameter_counts_match_upstream():
    """Upstream's EnhancedCodec at the 2.5 config (spec §4, probed): 50.58 M, of which decoder 22.10 M,
    up 3.15 M, quantizer 0.08 M; the encoder + down half (25.2 M) is dead at inference."""
    layout = enhanced_codec_layout(load_config(REPO / "configs" / "official" / "config.yaml").semantic_codec)

    def millions(prefix: str) -> float:
        return round(sum(math.prod(s.shape) for k, s in layout.items() if k.startswith(prefix)) / 1e6, 2)

    assert (millions(""), millions("decoder."), millions("up."), millions("quantizer.")) == (50.58, 22.10, 3.15, 0.08)
    assert round(millions("encoder.") + millions("down."), 1) == 25.2
    assert list(layout)[:4] == ["down.weight", "down.bias", "up.weight", "up.bias"]  # upstream's order


# --- 2. decode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, n", [(1, 1), (2, 5), (3, 37)])
def test_decode_doubles_the_frames(codec, sc, batch, n):
    codes = torch.randint(0, sc.codebook_size, (batch, n), generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        out = codec.decode(codes)
    assert out.shape == (batch, 2 * n, sc.hidden_size) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 0.1


def test_decode_is_out_project_of_raw_rows_then_decoder_then_duplicate_and_conv(codec, sc):
    """The whole chain written out: raw codebook rows -> out_project -> decoder -> each frame twice -> conv."""
    codes = torch.randint(0, sc.codebook_size, (2, 9), generator=torch.Generator().manual_seed(1))
    vq = codec.quantizer.quantizers[0]
    with torch.no_grad():
        emb = vq.codebook.weight[codes] @ vq.out_project.weight.squeeze(-1).T + vq.out_project.bias  # (B, N, h)
        dec = codec.decoder(emb.transpose(1, 2))  # (B, N, h)
        dup = dec.repeat_interleave(2, dim=1)  # (B, 2N, h): frame i at 2i and 2i + 1
        want = F.conv1d(dup.transpose(1, 2), codec.up.weight, codec.up.bias, padding=1).transpose(1, 2)
        got = codec.decode(codes)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_up_path_is_nearest_duplication_before_the_conv(sc, tmp_path):
    """With `up` = identity on its centre tap the output is each decoder frame exactly twice; with the
    identity on its left tap it is those frames one step late (a zero first), which neither linear
    interpolation nor tiling the sequence would give."""
    state = file_state(sc, seed=2)
    h = sc.hidden_size
    codes = torch.tensor([[3, 17, 60, 5]])
    for tap in (1, 0):
        weight = torch.zeros(h, h, 3)
        weight[:, :, tap] = torch.eye(h)
        state["up.weight"], state["up.bias"] = weight, torch.zeros(h)
        codec = load_enhanced_codec(write(tmp_path / f"codec{tap}.pth", state), sc)
        with torch.no_grad():
            d = codec.decoder(codec.quantizer.vq2emb(codes))[0]  # (N, h)
            out = codec.decode(codes)[0]  # (2N, h)
        if tap == 1:  # out[2i] = out[2i + 1] = d[i]
            want = torch.stack([d[0], d[0], d[1], d[1], d[2], d[2], d[3], d[3]])
        else:  # out[j] = dup[j - 1]
            want = torch.stack([torch.zeros(h), d[0], d[0], d[1], d[1], d[2], d[2], d[3]])
        assert torch.equal(out, want), tap


def test_rows_are_independent(codec, sc):
    codes = torch.randint(0, sc.codebook_size, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        both, second = codec.decode(codes), codec.decode(codes[1:])
    torch.testing.assert_close(both[1:], second, atol=1e-6, rtol=1e-6)


# --- 3. loader ----------------------------------------------------------------------------------------------


def test_loader_folds_weight_norm_and_copies_the_decode_path(sc, tmp_path):
    state = file_state(sc, seed=4)
    codec = load_enhanced_codec(write(tmp_path / "codec.pth", state), sc)
    assert not codec.training and not hasattr(codec, "encoder") and not hasattr(codec, "down")
    for prefix in WN_PREFIXES:
        v, g = state[f"{prefix}.weight_v"], state[f"{prefix}.weight_g"]
        want = g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()  # ||v|| per output channel
        torch.testing.assert_close(codec.get_submodule(prefix).weight, want, atol=1e-6, rtol=1e-6)
    for key in ("up.weight", "decoder.0.convnext.1.gamma", "decoder.1.bias", "quantizer.quantizers.0.codebook.weight"):
        assert torch.equal(codec.state_dict()[key], state[key]), key


def test_loader_accepts_a_file_without_the_unused_half(sc, tmp_path):
    state = {k: v for k, v in file_state(sc, seed=5).items() if not is_extra(k)}
    load_enhanced_codec(write(tmp_path / "codec.pth", state), sc)


@pytest.mark.parametrize("key, edit, message", [
    ("decoder.0.convnext.1.pwconv1.weight", lambda s, h: s.pop("decoder.0.convnext.1.pwconv1.weight"),
     "missing tensor 'decoder.0.convnext.1.pwconv1.weight' (expected shape [48, 24])"),
    ("up.bias", lambda s, h: s.pop("up.bias"), "missing tensor 'up.bias' (expected shape [32])"),
    ("up.weight", lambda s, h: s.__setitem__("up.weight", torch.zeros(h, h, 5)),
     "tensor 'up.weight' has shape [32, 32, 5], expected [32, 32, 3]"),
    ("quantizer.quantizers.0.out_project.weight_g",
     lambda s, h: s.pop("quantizer.quantizers.0.out_project.weight_g"),
     "missing tensor 'quantizer.quantizers.0.out_project.weight_g' (expected shape [32, 1, 1]"),
    ("quantizer.quantizers.0.out_project.weight_g",
     lambda s, h: s.__setitem__("quantizer.quantizers.0.out_project.weight_g", torch.ones(h)),
     "tensor 'quantizer.quantizers.0.out_project.weight_g' has shape [32], expected [32, 1, 1]"),
    ("quantizer.quantizers.1.codebook.weight",
     lambda s, h: s.__setitem__("quantizer.quantizers.1.codebook.weight", torch.zeros(64, 8)),
     "unexpected tensor 'quantizer.quantizers.1.codebook.weight' (shape [64, 8])"),
    ("decoder.2.weight", lambda s, h: s.__setitem__("decoder.2.weight", torch.zeros(h)),
     "unexpected tensor 'decoder.2.weight'"),
])
def test_loader_names_the_offending_tensor(sc, tmp_path, key, edit, message):
    state = file_state(sc, seed=6)
    edit(state, sc.hidden_size)
    path = write(tmp_path / "codec.pth", state)
    with pytest.raises(CheckpointError, match=re.escape(message)) as err:
        load_enhanced_codec(path, sc)
    assert str(path) in str(err.value) and key in str(err.value)


def test_loader_reports_a_missing_file(sc, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_enhanced_codec(tmp_path / "codec.pth", sc)


# --- 4. the 2.5 graph set -------------------------------------------------------------------------------


def _data(spec) -> tuple:
    """A spec's declared data (its callables are rebuilt on every call, so they never compare equal)."""
    return (spec.name, spec.inputs, spec.outputs, spec.atol, spec.policy, spec.bounds, spec.varargs, spec.kv_cache,
            spec.roles)


@pytest.mark.parametrize("layout", ["shared", "concat"])
def test_graph_set_reuses_the_20_specs(layout):
    cfg = tiny_config()
    specs = {s.name: s for s in graphs_25(cfg, layout)}
    assert list(specs) == GRAPHS_25
    old = {s.name: s for s in gpt_graphs(cfg, layout) + acoustic_graphs(cfg)}
    for name in GRAPHS_25:
        if name != "codec_decoder":
            assert _data(specs[name]) == _data(old[name]), name
    assert _data(specs["gpt_decoder"]) == _data(decoder_spec(cfg, layout))
    assert specs["dit"].bounds["frames"][1] >= 1291 + math.ceil(3.44 * 1500 * 2)  # 2.5's longest DiT input
    decoder = specs["codec_decoder"]
    assert decoder.inputs == {"codes": {0: "batch", 1: "codes"}}
    assert decoder.outputs == {"features": {0: "batch", 1: "frames"}}
    assert decoder.policy.gate is not None and decoder.atol <= ATOL


def test_codec_decoder_matches_onnx_at_several_lengths(codec, sc, tmp_path):
    spec = next(s for s in graphs_25(tiny_config()) if s.name == "codec_decoder")
    m = models(codec=codec)
    cases = spec.cases(m)
    for (codes,) in cases:
        assert codes.dtype == torch.int64 and 0 <= codes.min() and codes.max() < sc.codebook_size
    assert {c[0].shape[1] for c in cases} >= {1, 5, 37, 400} and max(c[0].shape[0] for c in cases) == 2
    sess, parity = export_and_check(spec, m, tmp_path)
    assert [i.type for i in sess.get_inputs()] == ["tensor(int64)"]
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"]
    assert len(parity.cases) == len(cases) and parity.max_abs_diff <= ATOL
    (out,) = sess.run(None, {"codes": cases[-1][0].numpy()})
    assert out.shape == (2, 2 * cases[-1][0].shape[1], sc.hidden_size)


def test_length_regulator_matches_onnx_at_25_lengths(tmp_path):
    """2.5's target lengths int(2N * 1.72 * df), including df = 0.5 (fewer frames out than in)."""
    cfg = tiny_config()
    spec = next(s for s in graphs_25(cfg) if s.name == "length_regulator")
    regulator = randomize_module_(LengthRegulator(cfg.s2mel.length_regulator), seed=0, namespace="lr").eval()
    m = models(length_regulator=regulator)
    lengths = [(c[0].shape[1], int(c[1])) for c in spec.cases(m)]
    assert {(74, 127), (400, 1376), (1000, 860)} <= set(lengths)
    _, parity = export_and_check(spec, m, tmp_path)
    assert parity.max_abs_diff <= ATOL
