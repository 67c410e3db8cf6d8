"""BigVGAN v2 vocoder: official key layout, anti-alias filters, formulas, ONNX export, strict loading.

Tolerances (fp32, CPU): formulas vs numpy 1e-6 abs (filters 1e-7); weight-norm folding 1e-5 abs;
ONNX Runtime vs torch 1e-4 abs (seen: ~1e-7). The module evaluates the anti-aliased activation in
polyphase form with SnakeBeta's constants folded into the filters, and the generator in a (B, C, 1, T)
layout: checked against upstream's formulation written out here (`upstream_activation`,
`upstream_generator`) at 1e-6 of the output's largest magnitude (float32 reassociation: a few ulp).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from indextts2_onnx.export.checkpoint import CheckpointError, fold_weight_norm
from indextts2_onnx.export.config import load_bigvgan_config
from indextts2_onnx.export.graphs import GraphSpec, Vocoder
import torch.nn.functional as F

from indextts2_onnx.export.modules.bigvgan import (
    Activation1d,
    BigVGAN,
    DownSample1d,
    SnakeBeta,
    UpSample1d,
    checkpoint_shapes,
    downsample_phase_index,
    load_bigvgan,
    upsample_phase_index,
)

from _graphs import export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
OFFICIAL_KEYS = DATA / "official_keys.json"  # the loading contract, from the spec
FILE = "hf_cache/bigvgan/bigvgan_generator.pt"
TINY_JSON = REPO / "configs" / "tiny" / "bigvgan_config.json"  # official structure, 64 initial channels
OFFICIAL_JSON = REPO / "configs" / "official" / "bigvgan_config.json"

# upstream's torch.nn.utils.weight_norm (keys weight_g / weight_v) is deprecated in favour of parametrizations
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep the signal O(1) through the residual stacks.

    alpha / beta (log scale) are N(0, 0.5) so the zero init cannot hide a bug. For a whole generator,
    conv_post (linear, no bias) is rescaled so the output std is 0.2: the final clamp then hides
    nothing (measured with conv_post shrunk first, so nothing clips while measuring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 3:
                std = 0.5 / math.sqrt(p[0].numel())
            else:
                std = 0.5 if name.endswith(("alpha", "beta")) else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
        if isinstance(model, BigVGAN):
            w = model.conv_post.weight
            w.sub_(w.mean(-1, keepdim=True)).mul_(1e-3)  # zero-sum taps: SnakeBeta's DC part does not pass
            probe = model.eval()(torch.randn(1, model.cfg.num_mels, 8, generator=g))
            assert probe.abs().max() < 1.0
            w.mul_(0.2 / probe.std())
    return model.eval()


def mel(batch: int, frames: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny():
    return randomize(BigVGAN(load_bigvgan_config(TINY_JSON)))


# --- 1. the loading contract --------------------------------------------------------------------


def test_official_key_names_and_shapes():
    official = json.loads(OFFICIAL_KEYS.read_text())[FILE]
    with torch.device("meta"):  # 112 M parameters: shapes only
        model = BigVGAN(load_bigvgan_config(OFFICIAL_JSON))
    got = checkpoint_shapes(model)
    assert len(official) == 783
    assert sorted(set(got) ^ set(official)) == []
    assert {k: v for k, v in got.items() if list(v) != official[k]} == {}
    # weight norm sits on every convolution and nowhere else: no plain `.weight` in the file, and every
    # weight_v of ours is a Conv1d / ConvTranspose1d weight
    convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))}
    assert not [k for k in official if k.endswith(".weight")]
    assert {k[len("generator."):-len(".weight_v")] for k in official if k.endswith(".weight_v")} == convs
    assert len(convs) == 1 + 6 + 18 * 6 + 1  # conv_pre, ups, resblocks' convs1/convs2, conv_post
    # architecture §2.5: 112 199 472 parameters once folded (112 231 249 with the weight_g's)
    assert sum(p.numel() for p in model.parameters()) == 112_199_472
    assert "generator.conv_post.bias" not in got  # use_bias_at_final false


# --- 2. the Kaiser-sinc anti-alias filters ---------------------------------------------------------


def numpy_kaiser_sinc(cutoff: float, half_width: float, taps: int) -> np.ndarray:
    """Independent re-derivation: Kaiser's design formula for the window beta, half-integer taps."""
    A = 2.285 * (taps // 2 - 1) * np.pi * (4 * half_width) + 7.95
    assert A > 50.0  # the high-attenuation branch of Kaiser's formula
    beta = 0.1102 * (A - 8.7)
    n = np.arange(taps) - (taps - 1) / 2  # -5.5 ... 5.5
    h = 2 * cutoff * np.kaiser(taps, beta) * np.sinc(2 * cutoff * n)
    return h / h.sum()


def test_filter_buffers_are_persistent_kaiser_sincs():
    act = Activation1d(4, logscale=True)
    state = act.state_dict()
    assert set(state) == {"act.alpha", "act.beta", "upsample.filter", "downsample.lowpass.filter"}
    want = numpy_kaiser_sinc(0.25, 0.3, 12)
    for key in ("upsample.filter", "downsample.lowpass.filter"):
        f = state[key]
        assert f.shape == (1, 1, 12) and f.dtype == torch.float32
        np.testing.assert_allclose(f.flatten().numpy(), want, atol=1e-7)
        assert f.sum().item() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(f.flatten().numpy(), f.flatten().flip(0).numpy(), atol=1e-8)
    # the numbers architecture §2.5 quotes: beta = 0.1102 (A - 8.7), A = 2.285 * 5 * pi * 1.2 + 7.95
    assert 0.1102 * (2.285 * 5 * math.pi * 1.2 + 7.95 - 8.7) == pytest.approx(4.6638, abs=1e-4)


# --- 3. formulas against straightforward numpy ------------------------------------------------------


def test_snakebeta_formula():
    rng = np.random.default_rng(0)
    act = SnakeBeta(6, logscale=True)
    a, b = rng.normal(0, 0.7, 6).astype(np.float32), rng.normal(0, 0.7, 6).astype(np.float32)
    with torch.no_grad():
        act.alpha.copy_(torch.from_numpy(a))
        act.beta.copy_(torch.from_numpy(b))
    x = rng.normal(0, 2, (2, 6, 17)).astype(np.float32)
    got = act(torch.from_numpy(x)).detach().numpy()
    a, b = np.exp(a)[None, :, None], np.exp(b)[None, :, None]
    want = x + 1.0 / (b + 1e-9) * np.sin(x * a) ** 2
    np.testing.assert_allclose(got, want, atol=1e-6)


def _filter() -> np.ndarray:
    return numpy_kaiser_sinc(0.25, 0.3, 12)


def numpy_upsample(x: np.ndarray) -> np.ndarray:
    """Edge-extend 5, scatter every sample through the 12-tap filter at stride 2, x2, keep [15, 15 + 2T)."""
    f, (B, C, T) = _filter(), x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (5, 5)), mode="edge")
    full = np.zeros((B, C, (xp.shape[-1] - 1) * 2 + 12))
    for j in range(xp.shape[-1]):
        for k in range(12):
            full[..., 2 * j + k] += xp[..., j] * f[k]
    return 2 * full[..., 15 : 15 + 2 * T]


def numpy_downsample(x: np.ndarray) -> np.ndarray:
    """Edge-extend (5, 6), then y[t] = sum_k xp[2t + k] f[k]."""
    f = _filter()
    xp = np.pad(x, ((0, 0), (0, 0), (5, 6)), mode="edge")
    n_out = (xp.shape[-1] - 12) // 2 + 1
    return np.stack([xp[..., 2 * t : 2 * t + 12] @ f for t in range(n_out)], axis=-1)


@pytest.mark.parametrize("T", [1, 2, 9, 24])
def test_up_and_downsample_match_loops(T):
    x = np.random.default_rng(T).normal(0, 1, (2, 3, T)).astype(np.float32)
    up = UpSample1d(3)(torch.from_numpy(x)).numpy()
    assert up.shape == (2, 3, 2 * T)
    np.testing.assert_allclose(up, numpy_upsample(x), atol=1e-6)
    x2 = np.random.default_rng(T + 1).normal(0, 1, (2, 3, 2 * T)).astype(np.float32)
    down = DownSample1d(3)(torch.from_numpy(x2)).numpy()
    assert down.shape == (2, 3, T)
    np.testing.assert_allclose(down, numpy_downsample(x2), atol=1e-6)


def test_activation1d_is_up_snake_down():
    act = randomize(Activation1d(3, logscale=True))
    x = torch.randn(1, 3, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = act(x).numpy()
        snake = act.act(torch.from_numpy(numpy_upsample(x.numpy())).float()).numpy()
    np.testing.assert_allclose(got, numpy_downsample(snake), atol=1e-5)


# --- 3b. the polyphase, constant-folded activation against upstream's formulation -------------------


def upstream_activation(act: Activation1d, x: torch.Tensor) -> torch.Tensor:
    """Upstream's Activation1d (torch path) written out, (B, C, T) -> (B, C, T): replicate-pad 5, ratio *
    conv_transpose1d at stride 2, crop 15 / 15, x + 1 / (beta + 1e-9) * sin(alpha x) ** 2, replicate-pad
    (5, 6), the 12-tap low-pass at stride 2."""
    up, low = act.upsample, act.downsample.lowpass
    C = x.shape[1]
    u = F.pad(x, (up.pad, up.pad), mode="replicate")
    u = up.ratio * F.conv_transpose1d(u, up.filter.expand(C, -1, -1), stride=up.ratio, groups=C)
    u = u[..., up.crop_left:-up.crop_right]
    alpha, beta = act.act.alpha.view(1, -1, 1), act.act.beta.view(1, -1, 1)
    if act.act.logscale:
        alpha, beta = alpha.exp(), beta.exp()
    z = u + 1.0 / (beta + 1e-9) * torch.sin(u * alpha) ** 2
    z = F.pad(z, (low.pad_left, low.pad_right), mode="replicate")
    return F.conv1d(z, low.filter.expand(C, -1, -1), stride=low.stride, groups=C)


def upstream_generator(model: BigVGAN, mel: torch.Tensor) -> torch.Tensor:
    """Upstream's generator forward in (B, C, T) with `upstream_activation`."""
    def amp(block, x):
        for i, (c1, c2) in enumerate(zip(block.convs1, block.convs2)):
            xt = c1(upstream_activation(block.activations[2 * i], x))
            x = x + c2(upstream_activation(block.activations[2 * i + 1], xt))
        return x

    x = model.conv_pre(mel)
    n = model.num_kernels
    for i, (up,) in enumerate(model.ups):
        x = up(x)
        x = sum(amp(block, x) for block in model.resblocks[i * n:(i + 1) * n]) / n
    return model.conv_post(upstream_activation(model.activation_post, x)).clamp(-1.0, 1.0)


def assert_close_to_scale(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-6) -> None:
    """max |got - want| <= rel * max |want|: float32 reassociation, a few ulp of the largest value."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= rel * scale, ((got - want).abs().max().item(), scale)


def test_phase_indices_for_the_upstream_filters():
    """Ratio 2, 12 taps: 7 taps per phase on inputs padded by 3 each side, one zero tap per phase."""
    up = UpSample1d(3)
    assert (up.pad, up.crop_left, up.crop_right) == (5, 15, 15)
    index, pad = upsample_phase_index(2, 12, up.pad, up.crop_left)
    assert pad == (3, 3)
    assert index == [[11, 9, 7, 5, 3, 1, -1], [-1, 10, 8, 6, 4, 2, 0]]
    index, pad = downsample_phase_index(2, 12, 5)
    assert pad == (3, 3)
    assert index == [[-1, 1, 3, 5, 7, 9, 11], [0, 2, 4, 6, 8, 10, -1]]
    low = DownSample1d(3).lowpass
    # every tap used exactly once; the upsampler's gain 2 folded in (each phase sums to 1)
    assert sorted(k for row in low.phase_index for k in row if k >= 0) == list(range(12))
    np.testing.assert_allclose(up.phase_taps().sum(-1).numpy(), [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("logscale", [True, False])
@pytest.mark.parametrize("T", [1, 2, 3, 7, 50, 333])
def test_activation_matches_upstream_formula(T, logscale):
    """Polyphase evaluation, folded constants (log scale) or the plain SnakeBeta (linear scale), in both
    layouts, against upstream's interleaved formulation; every length down to 1 (edges everywhere)."""
    act = Activation1d(5, logscale)
    g = torch.Generator().manual_seed(T)
    with torch.no_grad():
        center = 0.0 if logscale else 1.0
        act.act.alpha.copy_(center + 0.5 * torch.randn(5, generator=g))
        act.act.beta.copy_((center + 0.5 * torch.randn(5, generator=g)).abs() if not logscale
                           else 0.5 * torch.randn(5, generator=g))
        x = 2.0 * torch.randn(2, 5, T, generator=g)
        want = upstream_activation(act, x)
        assert_close_to_scale(act(x), want)
        assert_close_to_scale(act(x[:, :, None, :])[:, :, 0], want)  # the generator's (B, C, 1, T) layout


@torch.no_grad()
@pytest.mark.parametrize("T", [1, 4, 13, 40])
def test_generator_matches_upstream_formulation(tiny, T):
    """The whole tiny generator (2-D layout, polyphase activations) against upstream's written out."""
    x = mel(2, T, 100 + T)
    want = upstream_generator(tiny, x)
    assert want.std() > 0.05  # a live signal, not a clipped one
    assert_close_to_scale(tiny(x), want, rel=1e-5)


@torch.no_grad()
def test_output_length_range_and_batch_independence(tiny):
    for T in (1, 3, 7, 20):
        assert tiny(mel(1, T, T)).shape == (1, 1, 256 * T)
    x = mel(3, 13, 0)
    y = tiny(x)
    assert y.shape == (3, 1, 256 * 13)
    np.testing.assert_allclose(y[1:2].numpy(), tiny(x[1:2]).numpy(), atol=1e-6)
    assert y.std() > 0.05 and (y.abs() == 1.0).float().mean() < 0.01  # the test weights are not saturated


@torch.no_grad()
def test_amp_block_and_generator_wiring(tiny):
    """AMPBlock1 and the generator written out by hand from architecture §2.5."""
    block = tiny.resblocks[1]  # stage 0, kernel 7
    assert [(c.dilation[0], c.padding[0]) for c in block.convs1] == [(1, 3), (3, 9), (5, 15)]
    assert [(c.dilation[0], c.padding[0]) for c in block.convs2] == [(1, 3)] * 3
    x = torch.randn(1, block.convs1[0].in_channels, 10, generator=torch.Generator().manual_seed(1))
    want = x
    for i in range(3):
        a1, a2 = block.activations[2 * i], block.activations[2 * i + 1]
        want = want + block.convs2[i](a2(block.convs1[i](a1(want))))
    np.testing.assert_allclose(block(x).numpy(), want.numpy(), atol=1e-6)

    x = mel(1, 6, 2)
    h = tiny.conv_pre(x)
    for i in range(6):
        h = tiny.ups[i][0](h)
        h = sum(tiny.resblocks[3 * i + j](h) for j in range(3)) / 3  # mean of the stage's AMP blocks
    want = tiny.conv_post(tiny.activation_post(h)).clamp(-1, 1)
    np.testing.assert_allclose(tiny(x).numpy(), want.numpy(), atol=1e-6)
    assert [up[0].padding[0] for up in tiny.ups] == [2, 2, 1, 1, 1, 1]  # (k - u) / 2


@torch.no_grad()
def test_final_clamp(tiny):
    loud = copy.deepcopy(tiny)
    loud.conv_post.weight.mul_(50.0)
    y = loud(mel(1, 10, 1))
    assert y.abs().max().item() == 1.0 and (y.abs() == 1.0).float().mean() > 0.1  # clamp, not tanh


def test_weight_norm_folding_roundtrip():
    """torch's weight_norm (dim 0: the *input* channel axis of ConvTranspose1d) folded by our helper."""
    torch.manual_seed(0)
    for conv in (nn.Conv1d(5, 7, 3, padding=1), nn.ConvTranspose1d(6, 3, 4, 2, padding=1)):
        wn = nn.utils.weight_norm(copy.deepcopy(conv))
        with torch.no_grad():  # g and v independent of each other (v not already unit-normed)
            wn.weight_g.uniform_(0.5, 2.0)
            wn.weight_v.mul_(torch.rand(wn.weight_v.shape[0], 1, 1) + 0.5)
        state = fold_weight_norm({f"conv.{k}": v for k, v in wn.state_dict().items()})
        assert set(state) == {"conv.weight", "conv.bias"}
        conv.load_state_dict({k.removeprefix("conv."): v for k, v in state.items()})
        x = torch.randn(2, conv.in_channels, 9)
        with torch.no_grad():
            np.testing.assert_allclose(conv(x).numpy(), wn(x).numpy(), atol=1e-5)


# --- 4. ONNX export ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_model() -> BigVGAN:
    """The tiny config with two AMP blocks per stage instead of three, to fit the CI budget.

    Export time grows with the number of anti-aliased activations (109 in the tiny config: ~40 s of CPU
    on 2 cores; 73 here, ~22 s). Every layer kind, all six upsampling stages (256x) and the mean over AMP
    blocks stay in the graph; the three-block structure exports the same way, only slower."""
    cfg = load_bigvgan_config(TINY_JSON)
    cfg = dataclasses.replace(cfg, resblock_kernel_sizes=(3, 11),
                              resblock_dilation_sizes=cfg.resblock_dilation_sizes[:2])
    return randomize(BigVGAN(cfg), seed=1)


def test_onnx_matches_torch(export_model, tmp_path):
    """The project's vocoder graph (`Vocoder`: BigVGAN, channel axis squeezed) through `export_graph` and
    `check_parity` at 1e-4, tighter than the bundle's 5e-4 (these weights keep the signal O(0.2))."""
    m = models(bigvgan=export_model)
    spec = GraphSpec(
        name="bigvgan",
        inputs={"mel": {0: "batch", 2: "frames"}},
        outputs={"audio": {0: "batch", 1: "samples"}},
        wrapper=Vocoder,
        example=lambda m: (mel(2, 7, 0),),
        cases=lambda m: [(mel(batch, T, T),) for batch, T in ((1, 5), (1, 20), (2, 33), (1, 87))],
        atol=1e-4,
    )
    with torch.no_grad():  # a live, barely clipped signal of 256 samples per frame at every case
        for (x,) in spec.cases(m):
            want = Vocoder(m)(x)
            assert want.shape == (x.shape[0], 256 * x.shape[2])
            assert want.std() > 0.05 and (want.abs() == 1.0).float().mean() < 0.01
    sess, parity = export_and_check(spec, m, tmp_path)  # ParityError past 1e-4; output shapes equal torch's
    assert [i.name for i in sess.get_inputs()] == ["mel"]
    assert [o.name for o in sess.get_outputs()] == ["audio"]
    assert sess.get_inputs()[0].shape == ["batch", 80, "frames"]
    assert len(sess.get_outputs()[0].shape) == 2 and sess.get_outputs()[0].shape[0] == "batch"
    assert len(parity.cases) == 4


# --- 5. load_bigvgan from a folder in the official layout ---------------------------------------


def weight_norm_state(model: BigVGAN, seed: int = 0) -> tuple[dict, nn.Module]:
    """(the file's generator state, the module with torch weight_norm hooks it came from)."""
    wn = copy.deepcopy(model)
    convs = [m for m in wn.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    g = torch.Generator().manual_seed(seed)
    for m in convs:
        nn.utils.weight_norm(m)
        with torch.no_grad():  # rescale v per row: g * v / |v| (the module's weight) is unchanged
            m.weight_v.mul_(torch.rand(m.weight_v.shape[0], 1, 1, generator=g) + 0.5)
    return {k: v.clone() for k, v in wn.state_dict().items()}, wn.eval()


def write_folder(folder: Path, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY_JSON, folder / "config.json")
    torch.save({"generator": state}, folder / "bigvgan_generator.pt")
    return folder


def test_load_bigvgan_reproduces_the_weight_norm_model(tiny, tmp_path):
    state, wn = weight_norm_state(tiny)
    assert "conv_pre.weight_g" in state and "ups.0.0.weight_v" in state and "conv_pre.weight" not in state
    assert {f"generator.{k}": tuple(v.shape) for k, v in state.items()} == checkpoint_shapes(tiny)
    loaded = load_bigvgan(write_folder(tmp_path / "bigvgan", state))
    assert not loaded.training
    x = mel(2, 9, 3)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), wn(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(loaded(x).numpy(), tiny(x).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("resblocks.4.convs2.1.weight_g"), "generator.resblocks.4.convs2.1.weight_g"),
        (lambda s: s.pop("activation_post.upsample.filter"), "generator.activation_post.upsample.filter"),
        (lambda s: s.update(extra=torch.zeros(1)), "generator.extra"),
        (lambda s: s.update({"conv_post.weight_v": torch.zeros(1, 2, 7)}), r"\[1, 2, 7\]"),
    ],
)
def test_load_bigvgan_rejects_layout_mismatches(tiny, tmp_path, edit, message):
    state, _ = weight_norm_state(tiny)
    edit(state)
    folder = write_folder(tmp_path / "bigvgan", state)
    with pytest.raises(CheckpointError, match=message) as e:
        load_bigvgan(folder)
    assert "bigvgan_generator.pt" in str(e.value)


def test_load_bigvgan_requires_the_generator_wrapper(tiny, tmp_path):
    folder = write_folder(tmp_path / "bigvgan", {})
    torch.save(weight_norm_state(tiny)[0], folder / "bigvgan_generator.pt")  # bare state dict
    with pytest.raises(CheckpointError, match="generator"):
        load_bigvgan(folder)
