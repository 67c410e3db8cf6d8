"""s2mel modules (gpt_layer, length regulator, DiT estimator) and the torch CFM reference.

Checks: the official key layout on the meta device, upstream behaviours re-derived independently
(RoPE, reflect padding, U-ViT pairing, GroupNorm span, nearest indices, timestep embedding, masks),
strict loading of an `s2mel.pth` in the official form, ONNX export parity, and the Euler/CFG loop.
Tolerances are stated where used; ONNX vs torch is <= 1e-4 absolute in fp32 (seen: ~1e-6). The DiT's
attention exports as ONNX Runtime's fused RotaryEmbedding + MultiHeadAttention: checked against the
plain formulation (`reference_attention`) in torch (identical numbers) and in ONNX (1e-5).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from indextts2_onnx.export.checkpoint import CheckpointError  # noqa: E402
from indextts2_onnx.export.config import load_config  # noqa: E402
from indextts2_onnx.export.graphs import Estimator, GraphSpec  # noqa: E402
from indextts2_onnx.export.modules.dit import (  # noqa: E402
    DIT_UNUSED_KEYS, DIT_WEIGHT_NORM_KEYS, Attention, DiT, apply_rope, dit_unused_keys, uvit_skips,
)
from indextts2_onnx.export.modules.s2mel import (  # noqa: E402
    LR_UNUSED_KEYS, GptLayer, LengthRegulator, cfm_reference, load_s2mel, nearest_source_index,
)

from _graphs import bare, export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
ATOL_ONNX = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: toy-sized ops gain nothing from threads


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(REPO / "configs" / "tiny" / "config.yaml")


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-degenerate weights: fan-in scaled matrices, gains 1 + 0.1 N, biases 0.02 N (buffers kept)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(r / (p[0].numel() ** 0.5))
            elif name.endswith("bias"):
                p.copy_(0.02 * r)
            else:
                p.copy_(1 + 0.1 * r)
    return module.eval()


@pytest.fixture(scope="module")
def tiny(tiny_cfg):
    s2 = tiny_cfg.s2mel
    return (randomize_(GptLayer(s2), 1), randomize_(LengthRegulator(s2.length_regulator), 2),
            randomize_(DiT(s2), 3))


def dit_inputs(cfg, B: int, T: int, seed: int = 0, lens=None):
    g = torch.Generator().manual_seed(seed)
    s2 = cfg.s2mel
    return (torch.randn(B, 80, T, generator=g), torch.randn(B, 80, T, generator=g),
            torch.tensor(lens if lens is not None else [T] * B), torch.rand(B, generator=g),
            torch.randn(B, s2.style_dim, generator=g), torch.randn(B, T, s2.dit.content_dim, generator=g))


# --- 1. official layout ------------------------------------------------------------------------------


def file_form(module: torch.nn.Module, prefix: str, weight_norm: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Our keys as they appear in s2mel.pth: prefixed, weight-normed `.weight` as `.weight_g/.weight_v`."""
    out = {}
    for key, t in module.state_dict().items():
        base = key.removesuffix(".weight")
        if key.endswith(".weight") and any(re.fullmatch(p, base) for p in weight_norm):
            out[f"{prefix}{base}.weight_g"] = (t.shape[0],) + (1,) * (t.ndim - 1)
            out[f"{prefix}{base}.weight_v"] = tuple(t.shape)
        else:
            out[prefix + key] = tuple(t.shape)
    return out


def test_official_layout_matches_the_key_contract():
    cfg = load_config(REPO / "configs" / "official" / "config.yaml")
    official = {k: tuple(v) for k, v in json.loads((DATA / "official_keys.json").read_text())["s2mel.pth"].items()}
    odd_dtypes = json.loads((DATA / "official_keys.dtypes.json").read_text())["_non_float32"]["s2mel.pth"]
    with torch.device("meta"):
        parts = [
            (GptLayer(cfg.s2mel), "net.gpt_layer.", (), ()),
            (LengthRegulator(cfg.s2mel.length_regulator), "net.length_regulator.", (), LR_UNUSED_KEYS),
            (DiT(cfg.s2mel), "net.cfm.estimator.", DIT_WEIGHT_NORM_KEYS, dit_unused_keys(cfg.s2mel.dit)),
        ]
    ours: dict[str, tuple] = {}
    unused: set[str] = set()
    for module, prefix, wn, extras in parts:
        ours.update(file_form(module, prefix, wn))
        for pattern in extras:
            hits = {k for k in official if k.startswith(prefix) and re.fullmatch(pattern, k[len(prefix):])}
            assert hits, f"unused pattern {pattern!r} matches no official key"
            unused |= hits
        for key, t in module.state_dict().items():
            want = odd_dtypes.get(prefix + key, "float32")
            assert str(t.dtype).removeprefix("torch.") == want, key
    assert not unused & ours.keys()
    assert ours.keys() | unused == official.keys()
    assert {k: official[k] for k in ours} == ours
    assert len(official) == 284
    # the unused skip_in_linear are exactly those of layers 0..6 (13 layers, 7..12 pop a skip)
    idle = {k.split(".")[5] for k in unused if "skip_in_linear" in k}
    assert idle == {str(i) for i in range(7)}
    assert {k for k in unused if "skip_in_linear" not in k} == {
        k for k in official if re.match(r"net\.(cfm\.estimator\.(x_embedder|cond_embedder|content_mask_embedder)"
                                        r"|length_regulator\.(embedding|mask_token))", k)}
    assert DIT_UNUSED_KEYS == dit_unused_keys(dataclasses.replace(cfg.s2mel.dit, uvit_skip_connection=False))


# --- 2. upstream behaviours, re-derived ---------------------------------------------------------------


def test_rope_is_an_interleaved_complex_rotation(tiny):
    dit = tiny[2]
    hd = dit.cfg.hidden_dim // dit.cfg.num_heads
    inv64 = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    torch.testing.assert_close(dit.inv_freq.double(), inv64, rtol=1e-6, atol=0)
    # upstream's table: polar(1, outer(arange(16384), freqs)) in float32, indexed by input_pos
    table = torch.polar(torch.ones(16384, hd // 2), torch.outer(torch.arange(16384).float(), dit.inv_freq))
    pos = dit.input_pos[:300]
    cos, sin = dit.rope(pos)
    torch.testing.assert_close(cos, table.real[pos], atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, table.imag[pos], atol=1e-6, rtol=0)
    # x[2i] + i x[2i+1] multiplied by exp(i angle), in complex128
    x = torch.randn(2, 300, dit.cfg.num_heads, hd, generator=torch.Generator().manual_seed(0))
    xc = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())  # (B, T, nh, hd/2)
    expected = torch.view_as_real(xc * table[pos].to(torch.complex128)[None, :, None, :]).flatten(3)
    got = apply_rope(x, cos, sin)
    assert (got.double() - expected).abs().max() < 1e-5
    # the other convention (rotate halves) gives something else: the check can fail
    half = torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)
    assert (apply_rope(half, cos, sin).double() - expected).abs().max() > 0.1


def test_wavenet_convs_pad_with_reflection(tiny):
    conv = tiny[2].wavenet.in_layers[0]
    w, b = conv.conv.conv.weight, conv.conv.conv.bias
    k = w.shape[-1]
    p = (k - 1) // 2
    T = 11
    x = torch.randn(1, w.shape[1], T, generator=torch.Generator().manual_seed(0))
    # reflection without repeating the edge: ..., x2, x1 | x0, ..., x[T-1] | x[T-2], x[T-3], ...
    idx = [*range(p, 0, -1), *range(T), *range(T - 2, T - 2 - p, -1)]
    expected = F.conv1d(x[..., idx], w, b)
    with torch.no_grad():
        got = conv(x)
        zero = F.conv1d(x, w, b, padding=p)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[..., p:T - p], zero[..., p:T - p], atol=1e-6, rtol=0)
    assert (got[..., :p] - zero[..., :p]).abs().min() > 1e-4
    assert (got[..., T - p:] - zero[..., T - p:]).abs().min() > 1e-4


def skip_pairs(dit: DiT, cfg) -> dict[int, int | None]:
    """Run the DiT and record which layer's output each layer receives as its U-ViT skip."""
    layers = dit.transformer.layers
    outputs, received = {}, {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o)))
        hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: received.__setitem__(i, a[4])))  # skip arg
    with torch.no_grad():
        dit(*dit_inputs(cfg, 1, 9))
    for h in hooks:
        h.remove()
    by_id = {id(o): i for i, o in outputs.items()}
    return {i: None if s is None else by_id[id(s)] for i, s in received.items()}


def test_uvit_skip_pairing(tiny_cfg, tiny):
    assert skip_pairs(tiny[2], tiny_cfg) == {0: None, 1: None, 2: 0}  # depth 3: 2 <- 0, layer 1 neither
    deep = dataclasses.replace(tiny_cfg, s2mel=dataclasses.replace(
        tiny_cfg.s2mel, dit=dataclasses.replace(tiny_cfg.s2mel.dit, depth=13)))
    pairs = skip_pairs(DiT(deep.s2mel).eval(), deep)
    assert pairs == {**{i: None for i in range(7)}, 7: 5, 8: 4, 9: 3, 10: 2, 11: 1, 12: 0}
    assert uvit_skips(13) == ((0, 1, 2, 3, 4, 5), (7, 8, 9, 10, 11, 12))
    assert [hasattr(l, "skip_in_linear") for l in tiny[2].transformer.layers] == [False, False, True]


def test_length_regulator_group_norm_spans_the_whole_sequence(tiny):
    reg = tiny[1]
    norm = reg.model[1]
    seen = {}
    hook = norm.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    x = torch.randn(1, 20, reg.content_in_proj.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = reg(x, torch.tensor([20]))
        hook.remove()
        h = seen["x"].double()
        mean, var = h.mean(dim=(1, 2), keepdim=True), h.var(dim=(1, 2), unbiased=False, keepdim=True)
        expected = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None].double() + norm.bias[:, None].double()
        assert (seen["y"].double() - expected).abs().max() < 1e-5
        # frame 0 depends on the last frame although 4 k3 convs only reach 4 frames
        x2 = x.clone()
        x2[:, -1] += 1.0
        y2 = reg(x2, torch.tensor([20]))
    assert (y2[:, 0] - y[:, 0]).abs().max() > 1e-4


def test_nearest_indices_match_torch_interpolate():
    integer_differs = 0
    pairs = [(a, b) for a in range(1, 41) for b in range(1, 91)]
    pairs += [(n, int(n * 1.72)) for n in range(500, 1501, 97)]  # (codes, target frames) as upstream
    for t_in, t_out in pairs:
        ref = F.interpolate(torch.arange(t_in).float()[None, None], size=t_out, mode="nearest")[0, 0].long()
        src, pos = nearest_source_index(t_in, torch.tensor(t_out))
        assert torch.equal(src, ref), (t_in, t_out)
        assert torch.equal(pos, torch.arange(t_out))
        integer_differs += not torch.equal((torch.arange(t_out) * t_in) // t_out, ref)
    assert integer_differs > 0  # exact floor(i * T_in / T_out) is NOT torch's index: float32 matters


def test_length_regulator_matches_interpolate_and_masks(tiny):
    reg = tiny[1]
    x = torch.randn(2, 13, reg.content_in_proj.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = reg(x, torch.tensor([22, 15]))
        h = F.interpolate(reg.content_in_proj(x).transpose(1, 2), size=22, mode="nearest")
        expected = reg.model(h).transpose(1, 2)
        alone = reg(x[1:], torch.tensor([22]))
    assert got.shape == (2, 22, reg.model[0].out_channels)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1, :15], expected[1, :15], atol=1e-6, rtol=0)
    assert torch.all(got[1, 15:] == 0)
    # upstream interpolates every row to max(ylens) and only masks afterwards
    torch.testing.assert_close(got[1, :15], alone[0, :15], atol=1e-5, rtol=0)


def test_timestep_embedding_is_cos_then_sin(tiny):
    dit = tiny[2]
    f64 = torch.exp(-np.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    for emb in (dit.t_embedder, dit.t_embedder2):
        torch.testing.assert_close(emb.freqs.double(), f64, rtol=1e-6, atol=0)
    seen = {}
    hook = dit.t_embedder.mlp.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    t = torch.tensor([0.0, 0.04, 0.5, 0.96, 1.0])
    with torch.no_grad():
        dit.t_embedder(t)
    hook.remove()
    args = 1000 * t.double()[:, None] * f64[None]
    expected = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    assert (seen["x"].double() - expected).abs().max() < 2e-4  # float32 arguments up to 1000 rad


def test_padding_frames_leak_only_through_the_first_wavenet_conv(tiny_cfg, tiny):
    """Upstream masks attention keys and every WaveNet layer's output, but not the WaveNet input: frames
    >= x_lens reach the last sum(pad_i) valid frames through the convolutions, and no further."""
    dit, d = tiny[2], tiny_cfg.s2mel.dit
    leak = sum((d.wavenet_kernel_size - 1) * d.wavenet_dilation_rate**i // 2 for i in range(d.wavenet_num_layers))
    T, L = 40, 29
    a = dit_inputs(tiny_cfg, 1, T, lens=[L])
    b = [v.clone() for v in a]
    g = torch.Generator().manual_seed(5)
    b[0][..., L:] = torch.randn(1, 80, T - L, generator=g)
    b[1][..., L:] = torch.randn(1, 80, T - L, generator=g)
    b[5][:, L:] = torch.randn(1, T - L, b[5].shape[-1], generator=g)
    with torch.no_grad():
        ya, yb = dit(*a), dit(*b)
        full = dit(*a[:2], torch.tensor([T]), *a[3:])
        full_explicit = dit(*dit_inputs(tiny_cfg, 1, T))
    diff = (ya - yb).abs().amax(dim=1)[0]  # (T,)
    assert diff[: L - leak].max() < 1e-6
    assert diff[L - leak:L].min() > 1e-5
    assert (ya - full).abs().max() > 1e-4  # the mask does change the result
    torch.testing.assert_close(full, full_explicit)  # x_lens = T: no masking at all


# --- strict loading -----------------------------------------------------------------------------------


def official_form_file(path: Path, gpt_layer, regulator, dit, s2) -> None:
    """Write an s2mel.pth as upstream saves it: weight norm unfolded, unused tensors, a DDP prefix."""
    g = torch.Generator().manual_seed(9)
    h, d = s2.dit.hidden_dim, s2.dit
    cfm = {}
    for key, t in dit.state_dict().items():
        base = key.removesuffix(".weight")
        if key.endswith(".weight") and any(re.fullmatch(p, base) for p in DIT_WEIGHT_NORM_KEYS):
            cfm[f"estimator.{base}.weight_g"] = t.flatten(1).norm(dim=1).view(-1, *[1] * (t.ndim - 1))
            cfm[f"estimator.{base}.weight_v"] = 3.0 * t  # any positive scale: weight = g v / |v|
        else:
            cfm[f"estimator.{key}"] = t.clone()
    cfm["estimator.x_embedder.weight_g"] = torch.rand(h, 1, generator=g) + 0.5
    cfm["estimator.x_embedder.weight_v"] = torch.randn(h, d.in_channels, generator=g)
    cfm["estimator.x_embedder.bias"] = torch.randn(h, generator=g)
    cfm["estimator.cond_embedder.weight"] = torch.randn(d.content_codebook_size, h, generator=g)
    cfm["estimator.content_mask_embedder.weight"] = torch.randn(1, h, generator=g)
    for i in range(d.depth // 2 + 1):
        cfm[f"estimator.transformer.layers.{i}.skip_in_linear.weight"] = torch.randn(h, 2 * h, generator=g)
        cfm[f"estimator.transformer.layers.{i}.skip_in_linear.bias"] = torch.randn(h, generator=g)
    lr = {k: t.clone() for k, t in regulator.state_dict().items()}
    c = s2.length_regulator.channels
    lr["embedding.weight"] = torch.randn(s2.length_regulator.content_codebook_size, c, generator=g)
    lr["mask_token"] = torch.zeros(1, c)
    gl = {f"module.{k}": t.clone() for k, t in gpt_layer.state_dict().items()}
    torch.save({"net": {"cfm": cfm, "length_regulator": lr, "gpt_layer": gl}}, path)


def test_load_s2mel_strictly(tmp_path, tiny_cfg, tiny):
    path = tmp_path / "s2mel.pth"
    official_form_file(path, *tiny, tiny_cfg.s2mel)
    loaded = load_s2mel(path, tiny_cfg)
    for ours, theirs in zip(tiny, loaded):
        assert not theirs.training
        for key, t in ours.state_dict().items():
            torch.testing.assert_close(theirs.state_dict()[key], t, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(loaded[2](*dit_inputs(tiny_cfg, 2, 19)), tiny[2](*dit_inputs(tiny_cfg, 2, 19)),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, message", [
    (lambda n: n["cfm"].pop("estimator.transformer.norm.norm.weight"), r"missing tensor 'transformer\.norm\.norm"),
    (lambda n: n["cfm"].pop("estimator.final_layer.linear.weight_g"), r"final_layer\.linear\.weight_v"),
    (lambda n: n["length_regulator"].update({"model.0.weight": torch.zeros(1, 1, 3)}), r"'model\.0\.weight' has shape"),
    (lambda n: n["gpt_layer"].update({"module.3.weight": torch.zeros(1)}), r"unexpected tensor '3\.weight'"),
    (lambda n: n.update({"f0_model": {"w": torch.zeros(1)}}), r"unexpected tensor 'net\.f0_model\.w'"),
])
def test_load_s2mel_names_file_and_key(tmp_path, tiny_cfg, tiny, edit, message):
    path = tmp_path / "s2mel.pth"
    official_form_file(path, *tiny, tiny_cfg.s2mel)
    obj = torch.load(path, weights_only=True)
    edit(obj["net"])
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_s2mel(path, tiny_cfg)
    assert str(path) in str(info.value)


# --- 3. ONNX export -----------------------------------------------------------------------------------


def test_dit_onnx_matches_torch(tmp_path, tiny_cfg, tiny):
    """The project's `Estimator` graph through `export_graph` / `check_parity` (ATOL_ONNX)."""
    dit = tiny[2]
    # T > reflect pad (3 for kernel 5) and T <= 16384 (the stored input_pos): torch.export guards both
    assert dit.min_frames == 3
    spec = GraphSpec(
        name="dit",
        inputs={"x": {0: "batch", 2: "frames"}, "prompt_x": {0: "batch", 2: "frames"}, "x_lens": {0: "batch"},
                "t": {0: "batch"}, "style": {0: "batch"}, "cond": {0: "batch", 1: "frames"}},
        outputs={"velocity": {0: "batch", 2: "frames"}},
        wrapper=Estimator,
        example=lambda m: dit_inputs(tiny_cfg, 2, 23),  # batch 2: torch.export specialises sizes 0 and 1
        cases=lambda m: [dit_inputs(tiny_cfg, B, T, seed=T, lens=lens) for B, T, lens in
                         [(1, 17, None), (2, 96, None), (2, 157, None), (2, 40, [40, 31]), (1, 3, None)]],
        atol=ATOL_ONNX,
        bounds={"frames": (dit.min_frames, dit.cfg.block_size)},
    )
    sess, _ = export_and_check(spec, models(dit=dit), tmp_path)
    assert [i.name for i in sess.get_inputs()] == list(spec.inputs)


def reference_attention(attn: Attention, x, cos, sin, x_lens) -> torch.Tensor:
    """The DiT attention as gpt-fast writes it: fused qkv, interleaved RoPE on q and k (`apply_rope`),
    heads to (B, nh, T, hd), SDPA with an additive finfo.min key bias, heads back, wo."""
    B, T, _ = x.shape
    q, k, v = attn.wqkv(x).split(attn.dim, dim=-1)
    q = apply_rope(q.unflatten(-1, (attn.n_head, -1)), cos, sin).transpose(1, 2)
    k = apply_rope(k.unflatten(-1, (attn.n_head, -1)), cos, sin).transpose(1, 2)
    v = v.unflatten(-1, (attn.n_head, -1)).transpose(1, 2)
    valid = torch.arange(T)[None, :] < x_lens[:, None]
    bias = torch.zeros(valid.shape).masked_fill(~valid, torch.finfo(torch.float32).min)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
    return attn.wo(y.transpose(1, 2).flatten(2))


class AttentionOnly(torch.nn.Module):
    """One DiT attention with its RoPE angles and key mask built from the frame count, as DiT.forward does."""

    def __init__(self, dit: DiT):
        super().__init__()
        self.dit, self.attn = dit, dit.transformer.layers[0].attention

    def forward(self, x, x_lens):
        pos = self.dit.input_pos[:x.shape[1]]
        valid = pos[None, :] < x_lens[:, None]
        return self.attn(x, self.dit.rope(pos), valid)


def attention_case(dit: DiT, B: int, T: int, lens, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, dit.cfg.hidden_dim, generator=g), torch.tensor(lens if lens is not None else [T] * B)


ATTENTION_CASES = [(1, 1, None), (1, 9, None), (2, 40, [40, 23]), (2, 157, None), (2, 300, [300, 1])]


def test_attention_matches_the_plain_formulation(tmp_path, tiny):
    """torch: the same numbers as the reference (the fused ops are export-only); ONNX (RotaryEmbedding +
    MultiHeadAttention with a key-padding mask) vs the reference at 1e-5 over lengths 1..300, masked rows
    included; the graph holds the fused nodes and no Softmax."""
    dit = tiny[2]
    module = AttentionOnly(dit).eval()
    with torch.no_grad():
        for B, T, lens in ATTENTION_CASES:
            x, x_lens = attention_case(dit, B, T, lens, T)
            pos = dit.input_pos[:T]
            assert torch.equal(module(x, x_lens), reference_attention(module.attn, x, *dit.rope(pos), x_lens))
    spec = GraphSpec(
        name="attention",
        inputs={"x": {0: "batch", 1: "frames"}, "x_lens": {0: "batch"}},
        outputs={"y": {0: "batch", 1: "frames"}},
        wrapper=bare(module),
        example=lambda m: attention_case(dit, 2, 23, [23, 17], 0),
        cases=lambda m: [attention_case(dit, B, T, lens, T) for B, T, lens in ATTENTION_CASES],
        atol=1e-5,
        bounds={"frames": (1, dit.cfg.block_size)},
    )
    _, parity = export_and_check(spec, models(), tmp_path)
    assert len(parity.cases) == len(ATTENTION_CASES)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "attention.onnx"), load_external_data=False).graph.node]
    assert ops.count("MultiHeadAttention") == 1 and ops.count("RotaryEmbedding") == 2
    assert "Softmax" not in ops


def test_length_regulator_and_gpt_layer_onnx_match_torch(tmp_path, tiny):
    """Both modules bare (per-row `out_len`, unlike the bundle's scalar `length`), ATOL_ONNX."""
    gpt_layer, reg = tiny[0], tiny[1]
    m = models()
    g = torch.Generator().manual_seed(0)
    c_in = reg.content_in_proj.in_features
    reg_cases = [(torch.randn(len(lens), t_in, c_in, generator=g), torch.tensor(lens))
                 for t_in, lens in [(13, [22]), (50, [86]), (7, [7]), (40, [20]), (9, [31, 25])]]
    spec = GraphSpec(
        name="length_regulator",
        inputs={"x": {0: "batch", 1: "frames_in"}, "out_len": {0: "batch"}},
        outputs={"content": {0: "batch", 1: "frames_out"}},
        wrapper=bare(reg),
        example=lambda m: (torch.randn(2, 13, c_in, generator=torch.Generator().manual_seed(1)),
                           torch.tensor([22, 20])),
        cases=lambda m: reg_cases,
        atol=ATOL_ONNX,
    )
    export_and_check(spec, m, tmp_path)

    d = gpt_layer[0].in_features
    layer_cases = [(torch.randn(B, N, d, generator=g),) for B, N in [(1, 1), (1, 37), (2, 12)]]
    spec = GraphSpec(
        name="gpt_layer",
        inputs={"latent": {0: "batch", 1: "codes"}},
        outputs={"features": {0: "batch", 1: "codes"}},
        wrapper=bare(gpt_layer),
        example=lambda m: (torch.randn(2, 5, d, generator=torch.Generator().manual_seed(2)),),
        cases=lambda m: layer_cases,
        atol=ATOL_ONNX,
    )
    export_and_check(spec, m, tmp_path)


# --- 4. CFM reference ---------------------------------------------------------------------------------


def cfm_inputs(cfg, T: int = 24, t_ref: int = 7):
    g = torch.Generator().manual_seed(11)
    s2 = cfg.s2mel
    return dict(mu=torch.randn(1, T, s2.dit.content_dim, generator=g), x_lens=torch.tensor([T]),
                prompt_mel=torch.randn(1, 80, t_ref, generator=g), style=torch.randn(1, s2.style_dim, generator=g),
                noise=torch.randn(1, 80, T, generator=g))


def test_cfm_reference_zeroes_the_prompt_and_is_deterministic(tiny_cfg, tiny):
    kw = cfm_inputs(tiny_cfg)
    noise = kw["noise"].clone()
    a = cfm_reference(tiny[2], **kw, steps=25)
    b = cfm_reference(tiny[2], **kw, steps=25)
    assert torch.equal(kw["noise"], noise)  # the caller's noise is not modified
    assert a.shape == (1, 80, 24)
    assert torch.all(a[..., :7] == 0)
    assert torch.equal(a, b)
    assert a[..., 7:].abs().min() > 0 and torch.isfinite(a).all()


def test_cfm_reference_one_step_is_one_guided_euler_step(tiny_cfg, tiny):
    """steps=1: x1 = x0 + 1.0 * (1.7 v(x0 | prompt, style, mu) - 0.7 v(x0 | 0, 0, 0)) at t = 0, prompt zeroed;
    evaluated as two separate batch-1 calls (batching and the broadcast x_lens must not matter)."""
    dit, kw = tiny[2], cfm_inputs(tiny_cfg)
    x0 = kw["noise"].clone()
    x0[..., :7] = 0
    prompt_x = torch.zeros_like(x0)
    prompt_x[..., :7] = kw["prompt_mel"]
    t = torch.zeros(1)
    with torch.no_grad():
        v_c = dit(x0, prompt_x, kw["x_lens"], t, kw["style"], kw["mu"])
        v_u = dit(x0, torch.zeros_like(prompt_x), kw["x_lens"], t, torch.zeros_like(kw["style"]),
                  torch.zeros_like(kw["mu"]))
    expected = x0 + (1.7 * v_c - 0.7 * v_u)
    expected[..., :7] = 0
    torch.testing.assert_close(cfm_reference(dit, **kw, steps=1), expected, atol=1e-5, rtol=0)
    no_cfg = x0 + v_c
    no_cfg[..., :7] = 0
    torch.testing.assert_close(cfm_reference(dit, **kw, steps=1, cfg_rate=0.0), no_cfg, atol=1e-5, rtol=0)


class _Recorder(torch.nn.Module):
    """Stand-in estimator: records the inputs of each call and returns v = 1."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, prompt_x, x_lens, t, style, cond):
        self.calls.append(dict(x=x.clone(), prompt_x=prompt_x, x_lens=x_lens, t=t.clone(), style=style, cond=cond))
        return torch.ones_like(x)


def test_cfm_reference_time_grid_and_cfg_batch(tiny_cfg):
    rec, kw = _Recorder(), cfm_inputs(tiny_cfg)
    out = cfm_reference(rec, **kw, steps=25)
    t_span = torch.linspace(0, 1, 26)
    t = t_span[0]
    for k, call in enumerate(rec.calls, start=1):
        assert torch.equal(call["t"], torch.stack([t, t]))  # float32 accumulation, same t for both halves
        t = t + (t_span[k] - t_span[k - 1])
        assert torch.equal(call["x"][0], call["x"][1])
        assert torch.all(call["prompt_x"][1] == 0) and torch.all(call["style"][1] == 0)
        assert torch.all(call["cond"][1] == 0) and torch.equal(call["cond"][0], kw["mu"][0])
        assert torch.equal(call["prompt_x"][0, :, :7], kw["prompt_mel"][0])
        assert torch.all(call["prompt_x"][0, :, 7:] == 0)
        assert torch.equal(call["x_lens"], kw["x_lens"])  # batch-1 lengths, broadcast by the estimator
        assert torch.all(call["x"][..., :7] == 0)
    assert len(rec.calls) == 25
    # v = 1.7 - 0.7 = 1 everywhere, so x moves by the accumulated t
    expected = kw["noise"] + t
    expected[..., :7] = 0
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
