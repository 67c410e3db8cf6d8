"""CAMPPlus speaker-style encoder: official key layout, formulas, ONNX export, loader."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from indextts2_onnx.export.checkpoint import CheckpointError
from indextts2_onnx.export.config import load_config
from indextts2_onnx.export.graphs import Campplus, GraphSpec
from indextts2_onnx.export.modules.campplus import (
    CAMLayer,
    CAMPPlus,
    StatsPool,
    bn_relu,
    load_campplus,
    seg_pooling,
)

from _graphs import export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
FILE = "hf_cache/campplus_cn_common.bin"
SHALLOW = ((2, 3, 1), (3, 3, 2), (2, 3, 2))  # every layer kind at full width, 7 dense layers instead of 52


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """He-scaled conv weights, BN affine 1 + N(0, 0.1) / N(0, 0.1), running mean N(0, 0.1), var U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1000, 10**6, (), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / t[0].numel()))
            elif name.endswith("weight"):  # the only 1-D weights are BatchNorm gains
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:  # biases, running means
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return module.eval()


@pytest.fixture(scope="module")
def tiny_style() -> int:
    return load_config(REPO / "configs" / "tiny" / "config.yaml").s2mel.style_dim


# --- 1. the loading contract --------------------------------------------------------------------


def test_official_key_names_shapes_and_dtypes():
    official = json.loads((DATA / "official_keys.json").read_text())[FILE]
    non_f32 = json.loads((DATA / "official_keys.dtypes.json").read_text())["_non_float32"][FILE]
    style = load_config(REPO / "configs" / "official" / "config.yaml").s2mel.style_dim
    with torch.device("meta"):
        state = CAMPPlus(feat_dim=80, embedding_size=style).state_dict()
    got = {k: list(v.shape) for k, v in state.items()}
    assert sorted(set(got) ^ set(official)) == []
    assert {k: v for k, v in got.items() if official[k] != v} == {}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()}
    assert {k: v for k, v in dtypes.items() if v != non_f32.get(k, "float32")} == {}
    assert set(non_f32) == {k for k in official if k.endswith("num_batches_tracked")}


# --- 2. formulas against independent re-derivations --------------------------------------------


@pytest.mark.parametrize("T", [150, 237, 300, 100, 1])
def test_seg_pooling_matches_loop(T):
    x = torch.randn(2, 5, T)
    want = torch.empty_like(x)
    for t in range(T):
        s = t // 100 * 100
        want[..., t] = x[..., s : min(s + 100, T)].mean(-1)  # the last segment: only the frames it has
    torch.testing.assert_close(seg_pooling(x), want, atol=1e-6, rtol=1e-6)


def test_stats_pool_is_mean_and_unbiased_std():
    x = torch.randn(3, 4, 9)
    mean = x.sum(-1) / 9
    std = ((x - mean[..., None]) ** 2).sum(-1).div(9 - 1).sqrt()  # Bessel-corrected
    got = StatsPool()(x)
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, torch.cat([mean, std], -1), atol=1e-6, rtol=1e-6)
    biased = ((x - mean[..., None]) ** 2).mean(-1).sqrt()
    assert (got[:, 4:] - biased).abs().min() > 1e-3


def test_batchnorm_relu_uses_running_stats_in_eval():
    m = randomize(bn_relu(6), seed=1)
    bn = m.batchnorm
    x = torch.randn(4, 6, 11) + 3  # batch statistics far from the running ones
    want = F.relu((x - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + 1e-5) * bn.weight[:, None]
                  + bn.bias[:, None])
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)


def test_cam_layer_matches_functional_formula():
    layer = randomize(CAMLayer(128, 32, 3, dilation=2), seed=2)
    x = torch.randn(2, 128, 237)
    y = F.conv1d(x, layer.linear_local.weight, padding=2, dilation=2)  # "same" length, no bias
    ctx = x.mean(-1, keepdim=True) + seg_pooling(x)
    h = F.relu(F.conv1d(ctx, layer.linear1.weight, layer.linear1.bias))
    gate = torch.sigmoid(F.conv1d(h, layer.linear2.weight, layer.linear2.bias))
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (2, 32, 237)
    torch.testing.assert_close(got, (y * gate).detach(), atol=1e-5, rtol=1e-5)


def test_shapes(tiny_style):
    model = randomize(CAMPPlus(80, tiny_style), seed=3)
    x = torch.randn(2, 151, 80)
    with torch.no_grad():
        head = model.head(x.transpose(1, 2))
        style = model(x)
    with torch.device("meta"):
        official = CAMPPlus(80, 192).eval()(x[:1].to("meta"))
    assert head.shape == (2, 320, 151)  # 32 channels x (80 / 8) frequency rows, time kept
    assert style.shape == (2, tiny_style) and official.shape == (1, 192)
    assert (style[0] - style[1]).abs().max() > 1e-2  # the style depends on the input


def test_rows_are_independent_of_the_batch():
    """Eval BatchNorm uses running statistics, so a row's style ignores the rest of the batch."""
    model = randomize(CAMPPlus(80, 48, blocks=SHALLOW), seed=4)
    x = torch.randn(3, 151, 80)
    with torch.no_grad():
        style, alone = model(x), model(x[1:2])
    # |style| ~ 10 and conv algorithms change with the batch size, hence atol 1e-4
    torch.testing.assert_close(style[1:2], alone, atol=1e-4, rtol=1e-5)


# --- 3. ONNX export -----------------------------------------------------------------------------


def test_export_with_dynamic_batch_and_frames(tmp_path, tiny_style):
    """The project's `Campplus` graph through `export_graph` / `check_parity`, max abs 1e-4 (fp32).
    The 52-layer net takes ~70 s to trace on 2 cores (symbolic-shape bookkeeping), so CI exports every
    layer kind at full width with 7 dense layers; the full net was checked by hand."""
    model = randomize(CAMPPlus(80, tiny_style, blocks=SHALLOW), seed=4)
    g = torch.Generator().manual_seed(5)
    # 75 / 119 / 219 / 749 / 101 frames at the CAM layers: partial last segments of 75, 19, 19, 49 and 1
    cases = [(torch.randn(B, T, 80, generator=g),) for B, T in ((1, 150), (1, 237), (2, 437), (1, 1498), (1, 201))]
    spec = GraphSpec(
        name="campplus",
        inputs={"fbank": {0: "batch", 1: "frames"}},
        outputs={"style": {0: "batch"}},
        wrapper=Campplus,
        example=lambda m: (torch.randn(2, 237, 80, generator=torch.Generator().manual_seed(6)),),
        cases=lambda m: cases,
        atol=1e-4,
    )
    sess, _ = export_and_check(spec, models(campplus=model), tmp_path)  # output shapes equal torch's
    assert sess.get_outputs()[0].shape == ["batch", tiny_style]


# --- 4. loader ----------------------------------------------------------------------------------


def test_loader_reads_a_state_dict_strictly(tmp_path, tiny_style):
    src = randomize(CAMPPlus(80, tiny_style), seed=6)
    path = tmp_path / "campplus_cn_common.bin"
    torch.save(src.state_dict(), path)
    model = load_campplus(path, tiny_style)
    assert not model.training
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.head.bn1.num_batches_tracked.dtype == torch.int64


def test_loader_names_a_missing_key_and_a_wrong_width(tmp_path, tiny_style):
    state = randomize(CAMPPlus(80, tiny_style), seed=7).state_dict()
    path = tmp_path / "campplus_cn_common.bin"
    drop = "xvector.block2.tdnnd7.cam_layer.linear1.bias"
    torch.save({k: v for k, v in state.items() if k != drop}, path)
    with pytest.raises(CheckpointError, match=re.escape(drop)) as err:
        load_campplus(path, tiny_style)
    assert str(path) in str(err.value)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape("xvector.dense.linear.weight")):
        load_campplus(path, tiny_style + 1)  # style width that the file does not have
