"""Conformer + Perceiver conditioning encoders: official key layout, formulas, ONNX export."""

from __future__ import annotations

import json
import math

import pytest
import torch

from indextts2_onnx.export.config import load_config
from indextts2_onnx.export.graphs import GraphSpec
from indextts2_onnx.export.modules.conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
    Conv2dSubsampling2,
    ConvolutionModule,
    RelPositionMultiHeadedAttention,
    sinusoid_table,
)
from indextts2_onnx.export.modules.perceiver import (
    GEGLU,
    PerceiverAttention,
    PerceiverResampler,
    RMSNorm,
    emotion_conditioner,
    speaker_conditioner,
)

from _graphs import bare, export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
OFFICIAL_KEYS = DATA / "official_keys.json"  # the loading contract, from the spec
PREFIXES = ("conditioning_encoder", "perceiver_encoder", "emo_conditioning_encoder", "emo_perceiver_encoder")


@pytest.fixture(scope="module")
def tiny():
    return load_config(REPO / "configs" / "tiny" / "config.yaml").gpt


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with N(0, 0.2) so zero/one inits (biases, u, v, gamma) cannot hide a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


# --- 1. the loading contract --------------------------------------------------------------------


def test_official_key_names_and_shapes():
    official = json.loads(OFFICIAL_KEYS.read_text())["gpt.pth"]
    want = {k: v for k, v in official.items() if k.split(".")[0] in PREFIXES}
    cfg = load_config(REPO / "configs" / "official" / "config.yaml").gpt
    with torch.device("meta"):  # 2 x 134 M-parameter Linear: shapes only, no allocation
        modules = (*speaker_conditioner(cfg), *emotion_conditioner(cfg))
    got = {
        f"{prefix}.{k}": list(v.shape)
        for prefix, m in zip(PREFIXES, modules)
        for k, v in m.state_dict().items()
    }
    assert sorted(set(got) ^ set(want)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


# --- 2. the sinusoid buffer ---------------------------------------------------------------------


def test_pe_buffer_is_persistent_and_sinusoidal(tiny):
    enc = ConformerEncoder(tiny.semantic_dim, tiny.condition_module)
    d, max_len = tiny.condition_module.output_size, tiny.condition_module.pos_max_len
    assert "embed.pos_enc.pe" in enc.state_dict()
    pe = enc.embed.pos_enc.pe
    assert pe.shape == (1, max_len, d) and pe.dtype == torch.float32
    for p in (0, 1, 7, 99):
        for i in (0, 3, d // 2 - 1):
            w = math.exp(-2 * i * math.log(10000.0) / d)
            assert pe[0, p, 2 * i].item() == pytest.approx(math.sin(p * w), abs=1e-5)
            assert pe[0, p, 2 * i + 1].item() == pytest.approx(math.cos(p * w), abs=1e-5)
    # Far rows: upstream forms the angle p * w in float32, whose rounding at p ~ 5000 is ~3e-4 rad.
    for p in (2500, max_len - 1):
        w = math.exp(-2 * 1 * math.log(10000.0) / d)
        assert pe[0, p, 2].item() == pytest.approx(math.sin(p * w), abs=2e-3)
    assert torch.equal(pe, sinusoid_table(max_len, d))


# --- 3. formulas against independent re-derivations --------------------------------------------


def test_rel_pos_attention_matches_einsum_formula():
    torch.manual_seed(0)
    B, T, h, dk = 2, 9, 4, 8
    attn = randomize(RelPositionMultiHeadedAttention(h, h * dk))
    x, pos = torch.randn(B, T, h * dk), torch.randn(1, T, h * dk)
    heads = lambda t: t.reshape(t.shape[0], T, h, dk)  # noqa: E731  (b, t, h, d)
    q, k, v = heads(attn.linear_q(x)), heads(attn.linear_k(x)), heads(attn.linear_v(x))
    p = heads(attn.linear_pos(pos))[0]
    # ((q + u) . k_j + (q + v) . p_j) / sqrt(d_k), p_j the absolute position of key j (no rel_shift)
    scores = torch.einsum("bihd,bjhd->bhij", q + attn.pos_bias_u, k)
    scores = scores + torch.einsum("bihd,jhd->bhij", q + attn.pos_bias_v, p)
    probs = (scores / math.sqrt(dk)).softmax(-1)
    want = attn.linear_out(torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, T, h * dk))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, pos), want.detach(), atol=1e-5, rtol=1e-5)


def test_perceiver_attention_matches_einsum_formula():
    torch.manual_seed(0)
    B, N, T, dim, h, dh = 2, 3, 7, 24, 2, 16
    attn = randomize(PerceiverAttention(dim, h, dh))
    lat, ctx = torch.randn(B, N, dim), torch.randn(B, T, dim)
    full = torch.cat((lat, ctx), 1)  # the latents attend to themselves too
    q = attn.to_q(lat).reshape(B, N, h, dh)
    k, v = (t.reshape(B, N + T, h, dh) for t in attn.to_kv(full).chunk(2, -1))
    probs = (torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(dh)).softmax(-1)
    want = attn.to_out(torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, N, h * dh))
    with torch.no_grad():
        torch.testing.assert_close(attn(lat, ctx), want.detach(), atol=1e-5, rtol=1e-5)


def test_subsampling_flattens_channel_major_and_scales():
    """Linear input of frame t is conv[:, c, t, f] flattened with c outer, f inner; then x * sqrt(d)."""
    torch.manual_seed(0)
    F_in, d, T = 13, 4, 11
    sub = randomize(Conv2dSubsampling2(F_in, d, pos_max_len=64))
    x = torch.randn(2, T, F_in)
    with torch.no_grad():
        y, pos = sub(x)
        c = torch.relu(torch.nn.functional.conv2d(x[:, None], sub.conv[0].weight, sub.conv[0].bias, stride=2))
        Fc = (F_in - 1) // 2
        assert c.shape == (2, d, (T - 1) // 2, Fc)
        W = sub.out[0].weight.view(d, d, Fc)  # (out, channel, freq)
        want = (torch.einsum("bctf,ocf->bto", c, W) + sub.out[0].bias) * math.sqrt(d)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pos, sub.pos_enc.pe[:, : (T - 1) // 2])


def test_conv_module_matches_functional_formula():
    torch.manual_seed(0)
    C, T = 6, 12
    m = randomize(ConvolutionModule(C, 15))
    x = torch.randn(2, T, C)
    F_ = torch.nn.functional
    with torch.no_grad():
        h = F_.conv1d(x.transpose(1, 2), m.pointwise_conv1.weight, m.pointwise_conv1.bias)
        h = h[:, :C] * torch.sigmoid(h[:, C:])  # GLU: first half gated by the second
        h = F_.conv1d(h, m.depthwise_conv.weight, m.depthwise_conv.bias, padding=7, groups=C)
        h = F_.layer_norm(h.transpose(1, 2), (C,), m.norm.weight, m.norm.bias, eps=1e-5)
        h = h * torch.sigmoid(h)  # SiLU
        want = (h @ m.pointwise_conv2.weight[..., 0].T) + m.pointwise_conv2.bias
        torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)


def test_conformer_layer_order(tiny):
    """Pre-norm residuals in the order attention, convolution, FFN; then norm_final."""
    torch.manual_seed(0)
    layer = randomize(ConformerEncoderLayer(tiny.condition_module))
    d = tiny.condition_module.output_size
    x, pos = torch.randn(2, 9, d), torch.randn(1, 9, d)
    with torch.no_grad():
        x1 = x + layer.self_attn(layer.norm_mha(x), pos)
        x2 = x1 + layer.conv_module(layer.norm_conv(x1))
        x3 = x2 + layer.feed_forward.w_2(torch.nn.functional.silu(layer.feed_forward.w_1(layer.norm_ff(x2))))
        torch.testing.assert_close(layer(x, pos), layer.norm_final(x3))


def test_geglu_gates_with_exact_gelu():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    exact_gelu = 0.5 * b * (1 + torch.erf(b / math.sqrt(2)))
    torch.testing.assert_close(GEGLU()(torch.cat((a, b), -1)), a * exact_gelu)


@pytest.mark.parametrize("tap", [0, 7, 14])
def test_depthwise_conv_is_same_length_and_centred(tap):
    """A one-hot kernel at `tap` shifts the sequence by tap - 7: proves padding 7 on both sides."""
    C, T, K = 4, 20, 15
    conv = ConvolutionModule(C, K).eval()
    x = torch.randn(1, C, T)
    with torch.no_grad():
        conv.depthwise_conv.weight.zero_()
        conv.depthwise_conv.weight[:, 0, tap] = 1.0
        conv.depthwise_conv.bias.zero_()
        y = conv.depthwise_conv(x)
    assert y.shape == x.shape
    shift = tap - (K - 1) // 2
    want = torch.zeros_like(x)
    lo, hi = max(0, -shift), min(T, T - shift)
    want[..., lo:hi] = x[..., lo + shift : hi + shift]
    torch.testing.assert_close(y, want)
    assert conv(torch.randn(2, T, C)).shape == (2, T, C)


@pytest.mark.parametrize("T", [3, 10, 37, 150])
def test_output_shapes_tiny(tiny, T):
    spk_enc, spk_perc = speaker_conditioner(tiny)
    emo_enc, emo_perc = emotion_conditioner(tiny)
    x = torch.randn(2, T, tiny.semantic_dim)
    with torch.no_grad():
        h = spk_enc.eval()(x)
        assert h.shape == (2, (T - 1) // 2, tiny.condition_module.output_size)
        assert spk_perc.eval()(h).shape == (2, tiny.condition_num_latent, tiny.model_dim)
        e = emo_enc.eval()(x)
        assert e.shape == (2, (T - 1) // 2, tiny.emo_condition_module.output_size)
        assert emo_perc.eval()(e).shape == (2, 1, tiny.semantic_dim)


def test_rmsnorm_rows_have_norm_sqrt_dim_times_gamma():
    torch.manual_seed(0)
    dim = 16
    norm = RMSNorm(dim)
    x = torch.randn(3, 5, dim) * 7
    with torch.no_grad():
        torch.testing.assert_close(norm(x).norm(dim=-1), torch.full((3, 5), math.sqrt(dim)))
        norm.gamma.copy_(torch.linspace(-2, 3, dim))
        y = norm(x)
    unit = x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(y, unit * math.sqrt(dim) * norm.gamma.detach())
    assert torch.allclose(norm(x * 100.0), y, atol=1e-5)  # scale invariant


def test_perceiver_identity_projection_when_widths_match():
    p = PerceiverResampler(32, dim_context=32, num_latents=1, heads=2, ff_mult=2)
    assert not any(k.startswith("proj_context") for k in p.state_dict())  # upstream: nn.Identity


# --- 4. ONNX export -----------------------------------------------------------------------------


class SpeakerPath(torch.nn.Module):
    def __init__(self, encoder: ConformerEncoder, perceiver: PerceiverResampler):
        super().__init__()
        self.encoder, self.perceiver = encoder, perceiver

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceiver(self.encoder(x))


def test_speaker_path_exports_with_dynamic_frames(tiny, tmp_path):
    """Conformer + Perceiver (batch 1, frames 3..4000) through `export_graph` / `check_parity`;
    stated tolerance: max abs diff 1e-4 (fp32)."""
    model = randomize(SpeakerPath(*speaker_conditioner(tiny)), seed=1)

    def semantic(frames: int) -> tuple[torch.Tensor]:
        return (torch.randn(1, frames, tiny.semantic_dim, generator=torch.Generator().manual_seed(frames)),)

    spec = GraphSpec(
        name="speaker_conditioner",
        inputs={"features": {1: "frames"}},
        outputs={"latents": {}},
        wrapper=bare(model),
        example=lambda m: semantic(20),
        cases=lambda m: [semantic(T) for T in (10, 37, 151)],
        atol=1e-4,
        bounds={"frames": (3, 4000)},
    )
    export_and_check(spec, models(), tmp_path)
