"""MaskGCT semantic codec: official key layout, formulas, code selection, ONNX export, loader."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from indextts2_onnx.export.checkpoint import CheckpointError
from indextts2_onnx.export.config import load_config
from indextts2_onnx.export.graphs import CodecQuantize, GraphSpec
from indextts2_onnx.export.modules.codec import (
    CODEC_UNUSED_KEYS,
    ConvNeXtBlock,
    FactorizedVQ,
    SemanticCodec,
    VocosBackbone,
    load_codec,
)

from _graphs import export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
FILE = "hf_cache/semantic_codec_model.safetensors"
WN_PREFIXES = ("quantizer.quantizers.0.in_project", "quantizer.quantizers.0.out_project")


@pytest.fixture(scope="module")
def tiny():
    return load_config(REPO / "configs" / "tiny" / "config.yaml").semantic_codec


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights N(0, 1/fan_in), 1-D tensors 1 + N(0, 0.2) or N(0, 0.2): no zero/one init can hide a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2 and "codebook" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith(("norm.weight", "gamma")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:  # biases and the codebook (rows of varied norms)
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim == 1 else 1.0))
    return module.eval()


def to_file_keys(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Our folded keys -> the file's weight-norm keys (g: one norm per output channel, dim 0)."""
    out = {}
    for k, v in state.items():
        prefix = k.rsplit(".", 1)[0]
        if prefix in WN_PREFIXES and k.endswith(".weight"):
            out[f"{prefix}.weight_g"] = [v.shape[0]] + [1] * (v.ndim - 1)
            out[f"{prefix}.weight_v"] = list(v.shape)
        else:
            out[k] = list(v.shape)
    return out


# --- 1. the loading contract --------------------------------------------------------------------


def test_official_key_names_and_shapes():
    official = json.loads((DATA / "official_keys.json").read_text())[FILE]
    non_f32 = json.loads((DATA / "official_keys.dtypes.json").read_text())["_non_float32"]
    cfg = load_config(REPO / "configs" / "official" / "config.yaml").semantic_codec
    with torch.device("meta"):
        state = SemanticCodec(cfg).state_dict()
    got = to_file_keys(state)
    unused = {k for k in official if any(re.fullmatch(p, k) for p in CODEC_UNUSED_KEYS)}
    assert sorted((set(got) | unused) ^ set(official)) == []
    assert not set(got) & unused  # the patterns skip nothing the module needs
    assert unused and all(k.startswith("decoder.") for k in unused)
    assert {k: v for k, v in got.items() if official[k] != v} == {}
    assert FILE not in non_f32 and all(t.dtype == torch.float32 for t in state.values())


# --- 2. formulas against independent re-derivations --------------------------------------------


def test_convnext_block_matches_functional_formula():
    torch.manual_seed(0)
    dim, inter, B, T = 12, 20, 2, 9
    block = randomize(ConvNeXtBlock(dim, inter), seed=1)
    x = torch.randn(B, dim, T)
    y = F.conv1d(x, block.dwconv.weight, block.dwconv.bias, padding=3, groups=dim).transpose(1, 2)
    y = F.layer_norm(y, (dim,), block.norm.weight, block.norm.bias, eps=1e-6)
    h = y @ block.pwconv1.weight.T + block.pwconv1.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    y = (h @ block.pwconv2.weight.T + block.pwconv2.bias) * block.gamma
    with torch.no_grad():
        torch.testing.assert_close(block(x), (x + y.transpose(1, 2)).detach(), atol=1e-5, rtol=1e-5)


def test_backbone_order_and_layout():
    torch.manual_seed(0)
    net = randomize(VocosBackbone(10, 12, 20, 2), seed=2)
    x = torch.randn(2, 10, 13)  # (B, C_in, T)
    h = F.conv1d(x, net.embed.weight, net.embed.bias, padding=3).transpose(1, 2)
    h = F.layer_norm(h, (12,), net.norm.weight, net.norm.bias, eps=1e-6).transpose(1, 2)
    for block in net.convnext:
        h = block(h)
    want = F.layer_norm(h.transpose(1, 2), (12,), net.final_layer_norm.weight, net.final_layer_norm.bias, eps=1e-6)
    with torch.no_grad():
        got = net(x)
    assert got.shape == (2, 13, 12)  # (B, T, dim)
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)


def test_nearest_code_is_cosine_argmax_of_projected_input():
    torch.manual_seed(0)
    vq = randomize(FactorizedVQ(16, 64, 8), seed=3)
    with torch.no_grad():  # rows of very different norms: a plain L2 nearest row would differ
        vq.codebook.weight.mul_(torch.logspace(-1, 1, 64).unsqueeze(1))
    z = torch.randn(3, 16, 70)
    with torch.no_grad():
        codes, _ = vq(z)
    W = vq.in_project.weight.detach().double().squeeze(-1).numpy()  # (8, 16)
    e = np.einsum("dc,bct->btd", W, z.double().numpy()) + vq.in_project.bias.detach().double().numpy()
    cb = vq.codebook.weight.detach().double().numpy()
    cos = np.einsum("btd,kd->btk", e, cb) / np.linalg.norm(e, axis=-1, keepdims=True) / np.linalg.norm(cb, axis=-1)
    top2 = np.sort(cos, -1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-6  # no near-tie makes the check ambiguous
    assert codes.dtype == torch.int64 and codes.shape == (3, 70)
    np.testing.assert_array_equal(codes.numpy(), cos.argmax(-1))
    l2 = ((e[..., None, :] - cb) ** 2).sum(-1).argmin(-1)  # the un-normalised rule picks other rows
    assert (l2 != cos.argmax(-1)).mean() > 0.2


def test_quantized_is_out_project_of_raw_row_and_vq2emb_agrees(tiny):
    torch.manual_seed(0)
    codec = randomize(SemanticCodec(tiny), seed=4)
    x = torch.randn(2, 31, tiny.hidden_size)
    with torch.no_grad():
        codes, quantized = codec.quantize(x)
        emb = codec.vq2emb(codes)
    assert codes.shape == (2, 31) and codes.dtype == torch.int64
    assert quantized.shape == (2, 31, tiny.hidden_size)
    vq = codec.quantizer.quantizers[0]
    rows = vq.codebook.weight[codes]  # (B, T, d): un-normalised rows
    want = rows @ vq.out_project.weight.squeeze(-1).T + vq.out_project.bias
    # quantized keeps upstream's straight-through z_e + (z_q - z_e): equal up to float rounding
    torch.testing.assert_close(quantized, want.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb, quantized, atol=1e-5, rtol=1e-5)


def test_rows_are_independent(tiny):
    torch.manual_seed(0)
    codec = randomize(SemanticCodec(tiny), seed=5)
    x = torch.randn(2, 23, tiny.hidden_size)
    with torch.no_grad():
        codes, q = codec.quantize(x)
        c1, q1 = codec.quantize(x[1:])
    assert torch.equal(codes[1:], c1)
    torch.testing.assert_close(q[1:], q1, atol=1e-6, rtol=1e-6)


# --- 3. ONNX export -----------------------------------------------------------------------------


class Vq2Emb(torch.nn.Module):
    def __init__(self, codec: SemanticCodec):
        super().__init__()
        self.codec = codec

    def forward(self, codes):
        return self.codec.vq2emb(codes)


def test_quantize_and_vq2emb_export_with_dynamic_batch_and_frames(tiny, tmp_path):
    """The project's `CodecQuantize` graph and a bare vq2emb through `export_graph` / `check_parity`:
    codes exact (int64), float outputs max abs 1e-4 (fp32). vq2emb runs on the codes torch picked."""
    codec = randomize(SemanticCodec(tiny), seed=6)
    m = models(codec=codec)
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(B, T, tiny.hidden_size, generator=g) for B, T in ((1, 7), (1, 50), (1, 151), (3, 50))]
    quantize = GraphSpec(
        name="semantic_codec",
        inputs={"semantic": {0: "batch", 1: "frames"}},
        outputs={"codes": {0: "batch", 1: "frames"}, "quantized": {0: "batch", 1: "frames"}},
        wrapper=CodecQuantize,
        example=lambda m: (torch.randn(2, 20, tiny.hidden_size, generator=torch.Generator().manual_seed(8)),),
        cases=lambda m: [(x,) for x in xs],
        atol=1e-4,
    )
    sess, _ = export_and_check(quantize, m, tmp_path)
    assert [o.type for o in sess.get_outputs()] == ["tensor(int64)", "tensor(float)"]

    with torch.no_grad():
        codes = [codec.quantize(x)[0] for x in xs]
    vq2emb = GraphSpec(
        name="vq2emb",
        inputs={"codes": {0: "batch", 1: "frames"}},
        outputs={"features": {0: "batch", 1: "frames"}},
        wrapper=lambda m: Vq2Emb(m.codec),
        example=lambda m: (torch.randint(0, tiny.codebook_size, (2, 20), generator=torch.Generator().manual_seed(9)),),
        cases=lambda m: [(c,) for c in codes],
        atol=1e-4,
    )
    export_and_check(vq2emb, m, tmp_path)


# --- 4. loader ----------------------------------------------------------------------------------


def _write_tiny_file(codec: SemanticCodec, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official file layout: encoder + quantizer in weight-norm form, plus decoder keys."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in codec.state_dict().items():
        prefix = k.rsplit(".", 1)[0]
        if prefix in WN_PREFIXES and k.endswith(".weight"):
            state[f"{prefix}.weight_v"] = torch.randn(v.shape, generator=g)
            state[f"{prefix}.weight_g"] = torch.rand((v.shape[0], 1, 1), generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.3
            state[k.replace("encoder.", "decoder.", 1)] = torch.randn(v.shape, generator=g)  # unused half
    save_file(state, str(path))
    return state


def test_loader_folds_weight_norm_and_ignores_decoder(tiny, tmp_path):
    path = tmp_path / "semantic_codec_model.safetensors"
    state = _write_tiny_file(SemanticCodec(tiny), path)
    codec = load_codec(path, tiny)
    assert not codec.training
    for prefix in WN_PREFIXES:
        v, gain = state[f"{prefix}.weight_v"], state[f"{prefix}.weight_g"]
        want = gain * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()  # ||v|| per output channel
        got = codec.get_submodule(prefix).weight
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert torch.equal(codec.encoder[0].embed.weight, state["encoder.0.embed.weight"])
    assert torch.equal(codec.quantizer.quantizers[0].codebook.weight, state["quantizer.quantizers.0.codebook.weight"])


@pytest.mark.parametrize("drop", ["quantizer.quantizers.0.in_project.weight_g", "encoder.0.convnext.1.gamma"])
def test_loader_names_a_missing_key(tiny, tmp_path, drop):
    from safetensors.torch import save_file

    path = tmp_path / "semantic_codec_model.safetensors"
    state = _write_tiny_file(SemanticCodec(tiny), path)
    del state[drop]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=re.escape(drop)) as err:
        load_codec(path, tiny)
    assert str(path) in str(err.value)


def test_loader_rejects_unexpected_and_missing_file(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "semantic_codec_model.safetensors"
    state = _write_tiny_file(SemanticCodec(tiny), path)
    save_file({**state, "quantizer.quantizers.1.codebook.weight": torch.zeros(4, 8)}, str(path))
    with pytest.raises(CheckpointError, match=re.escape("quantizer.quantizers.1.codebook.weight")):
        load_codec(path, tiny)
    with pytest.raises(CheckpointError, match="not found"):
        load_codec(tmp_path / "absent.safetensors", tiny)
