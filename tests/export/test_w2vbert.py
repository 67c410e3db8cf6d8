"""w2v-BERT 2.0 semantic encoder: official key layout, parity with transformers, ONNX export, loading.

transformers' Wav2Vec2BertModel is the reference: upstream runs it and keeps
`(hidden_states[semantic_layer] - mean) / sqrt(var)`. Tolerances: our module against transformers
1e-4 (both float32 on CPU; measured differences are ~1e-5 or below on outputs of magnitude ~4), ORT
against torch 1e-4.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from indextts2_onnx.export.checkpoint import CheckpointError, load_strict
from indextts2_onnx.export.config import ConfigError, load_config, load_w2v_config
from indextts2_onnx.export.graphs import GraphSpec, SemanticEncoder as SemanticEncoderGraph  # the graph wrapper
from indextts2_onnx.export.modules.w2vbert import (
    W2V_UNUSED_KEYS,
    SemanticEncoder,
    load_semantic_encoder,
    w2v_unused_keys,
)

from _graphs import export_and_check, models  # noqa: E402
from conftest import DATA, REPO  # noqa: E402
OFFICIAL_KEYS = DATA / "official_keys.json"  # the loading contract, from the spec
W2V_FILE = "hf_cache/w2v-bert-2.0/model.safetensors"
TINY_W2V = REPO / "configs" / "tiny" / "w2v_config.json"
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_layer() -> int:
    return load_config(REPO / "configs" / "tiny" / "config.yaml").semantic_layer


@pytest.fixture(scope="module")
def reference():
    """transformers' model at the tiny size, every parameter random (LayerNorm weights around 1)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2BertConfig(**json.loads(TINY_W2V.read_text()))
    model = transformers.Wav2Vec2BertModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            p.copy_(1 + noise if "layer_norm.weight" in name else noise)
    return model


@pytest.fixture(scope="module")
def stats():
    g = torch.Generator().manual_seed(1)
    d = load_w2v_config(TINY_W2V).hidden_size
    return torch.randn(d, generator=g), torch.rand(d, generator=g) + 0.5  # mean, var


@pytest.fixture(scope="module")
def ours(reference, stats, tiny_layer):
    cfg = load_w2v_config(TINY_W2V)
    model = SemanticEncoder(cfg, tiny_layer)
    load_strict(model, reference.state_dict(), "reference", w2v_unused_keys(cfg, tiny_layer))
    model.set_stats(*stats)
    return model.eval()


def expected(reference, stats, layer, x, mask):
    mean, var = stats
    with torch.no_grad():
        h = reference(x, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    return (h - mean) / var.sqrt()


def features(batch: int, frames: int, seed: int, masked_last: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 160, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.int32)  # SeamlessM4T's mask dtype
    if masked_last:  # odd fbank frame count: the last stacked frame is half padding (architecture §3.4)
        mask[:, -1] = 0
    return x, mask


# --- 1. the loading contract --------------------------------------------------------------------


def test_official_key_names_and_shapes():
    official = json.loads(OFFICIAL_KEYS.read_text())[W2V_FILE]
    cfg = load_w2v_config(REPO / "configs" / "official" / "w2v_config.json")
    layer = load_config(REPO / "configs" / "official" / "config.yaml").semantic_layer
    assert layer == 17
    with torch.device("meta"):  # 411 M parameters: shapes only
        model = SemanticEncoder(cfg, layer)
    held = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert held["encoder.layers.16.self_attn.distance_embedding.weight"] == [73, 64]
    assert "encoder.layers.17.final_layer_norm.weight" not in held
    extras = [re.compile(p) for p in w2v_unused_keys(cfg, layer)]
    ignored = {k for k in official if any(p.fullmatch(k) for p in extras)}
    assert held.keys() & ignored == set()
    assert sorted((held.keys() | ignored) ^ official.keys()) == []
    assert {k: v for k, v in held.items() if official[k] != v} == {}
    assert sum(v.numel() for v in model.state_dict().values()) == 411_230_080  # architecture §2.6
    assert "masked_spec_embed" in ignored and len(ignored) == 1 + 7 * 32  # layers 17..23, 32 tensors each


def test_unused_keys_do_not_swallow_unknown_tensors():
    cfg = load_w2v_config(TINY_W2V)
    extras = [re.compile(p) for p in w2v_unused_keys(cfg, 3)]
    for key in ("masked_spec_embed", "encoder.layers.3.ffn1.output_dense.bias"):
        assert any(p.fullmatch(key) for p in extras), key
    for key in ("encoder.layers.4.ffn1.output_dense.bias", "encoder.layers.31.x", "encoder.layers.0.x", "foo"):
        assert not any(p.fullmatch(key) for p in extras), key
    assert w2v_unused_keys(cfg, cfg.num_hidden_layers) == W2V_UNUSED_KEYS


def test_stats_are_not_in_the_state_dict_and_default_to_identity():
    cfg = load_w2v_config(TINY_W2V)
    model = SemanticEncoder(cfg, 1)
    assert not any(k in model.state_dict() for k in ("mean", "std"))
    torch.testing.assert_close(model.mean, torch.zeros(cfg.hidden_size))
    torch.testing.assert_close(model.std, torch.ones(cfg.hidden_size))
    with pytest.raises(ValueError):
        model.set_stats(torch.zeros(3), torch.ones(3))
    with pytest.raises(ConfigError, match="semantic_layer 5"):
        SemanticEncoder(cfg, cfg.num_hidden_layers + 1)


# --- 2. parity with transformers ----------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 7, 50, 151])
@pytest.mark.parametrize("masked_last", [False, True])
def test_matches_transformers_hidden_state(reference, ours, stats, tiny_layer, frames, masked_last):
    """B = 1 as upstream; with the last frame masked every frame is compared, that one included,
    because upstream feeds its output on. 151 frames exceeds left_max (64), 7 does not reach right_max."""
    x, mask = features(1, frames, seed=frames, masked_last=masked_last)
    with torch.no_grad():
        got = ours(x, mask)
    want = expected(reference, stats, tiny_layer, x, mask)
    assert got.shape == want.shape == (1, frames, ours.cfg.hidden_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_matches_transformers_on_a_padded_batch(reference, ours, stats, tiny_layer):
    x, mask = features(2, 60, seed=3)
    mask[1, 37:] = 0
    with torch.no_grad():
        got = ours(x, mask)
    want = expected(reference, stats, tiny_layer, x, mask)
    torch.testing.assert_close(got[0], want[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1, :37], want[1, :37], atol=ATOL, rtol=0)
    # padded frames are not implementation-defined here: both compute them the same way
    torch.testing.assert_close(got[1, 37:], want[1, 37:], atol=ATOL, rtol=0)
    # a padded batch row gives its valid frames the same values as that row alone
    with torch.no_grad():
        alone = ours(x[1:, :37], mask[1:, :37])
    torch.testing.assert_close(got[1:, :37], alone, atol=ATOL, rtol=0)


def test_mask_dtype_does_not_matter(ours):
    x, mask = features(1, 9, seed=4, masked_last=True)
    with torch.no_grad():
        ref = ours(x, mask)
        for m in (mask.long(), mask.float(), mask.bool()):
            torch.testing.assert_close(ours(x, m), ref, atol=0, rtol=0)


def test_each_hidden_state_index_is_that_many_layers(reference, stats):
    """hidden_states[k] is the output of k layers; hidden_states[0] the zero-masked projection."""
    cfg = load_w2v_config(TINY_W2V)
    x, mask = features(1, 11, seed=5, masked_last=True)
    for k in range(cfg.num_hidden_layers + 1):
        model = SemanticEncoder(cfg, k)
        load_strict(model, reference.state_dict(), "reference", w2v_unused_keys(cfg, k))
        model.set_stats(*stats)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x, mask), expected(reference, stats, k, x, mask), atol=ATOL, rtol=0)


# --- 3. ONNX export -----------------------------------------------------------------------------


def test_exports_with_dynamic_batch_and_frames(ours, tmp_path):
    """The project's `SemanticEncoder` graph through `export_graph` / `check_parity` at ATOL; the mask
    goes in as int64, the graph's dtype (any dtype gives the same torch result, see above)."""
    def long_mask(case):
        return case[0], case[1].long()

    cases = [features(1, t, seed=t) for t in (1, 7, 50, 151)]
    cases += [features(1, 151, seed=7, masked_last=True), features(1, 8, seed=8, masked_last=True)]
    padded = features(3, 33, seed=9)
    padded[1][1, 20:] = 0
    spec = GraphSpec(
        name="semantic_encoder",
        inputs={"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"}},
        outputs={"semantic": {0: "batch", 1: "frames"}},
        wrapper=SemanticEncoderGraph,
        example=lambda m: long_mask(features(2, 40, seed=6)),
        cases=lambda m: [long_mask(c) for c in cases + [padded]],
        atol=ATOL,
        bounds={"batch": (1, 64), "frames": (1, 4096)},
    )
    sess, _ = export_and_check(spec, models(semantic_encoder=ours), tmp_path)
    assert [i.name for i in sess.get_inputs()] == ["input_features", "attention_mask"]
    assert [o.name for o in sess.get_outputs()] == ["semantic"]


# --- 4. loading from a folder -------------------------------------------------------------------


def write_folder(root: Path, state: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    w2v = root / "w2v-bert-2.0"
    w2v.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY_W2V, w2v / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, str(w2v / "model.safetensors"))
    torch.save(stats, root / "wav2vec2bert_stats.pt")
    return w2v, root / "wav2vec2bert_stats.pt"


def test_load_semantic_encoder(reference, ours, stats, tiny_layer, tmp_path):
    state = reference.state_dict()
    assert "masked_spec_embed" in state and not any(k.startswith("wav2vec2") for k in state)  # official naming
    w2v, stats_path = write_folder(tmp_path, state, {"mean": stats[0], "var": stats[1]})
    model = load_semantic_encoder(w2v, stats_path, tiny_layer)
    assert not model.training and len(model.encoder.layers) == tiny_layer
    x, mask = features(1, 13, seed=10, masked_last=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), ours(x, mask), atol=0, rtol=0)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda s: s.pop("encoder.layers.1.self_attn.linear_q.bias"), "encoder.layers.1.self_attn.linear_q.bias"),
        (lambda s: s.update({"encoder.layers.0.bogus.weight": torch.zeros(2)}), "encoder.layers.0.bogus.weight"),
        (lambda s: s.update({"encoder.layers.4.final_layer_norm.weight": torch.zeros(32)}),
         "encoder.layers.4.final_layer_norm.weight"),
        (lambda s: s.update({"feature_projection.projection.bias": torch.zeros(33)}),
         "feature_projection.projection.bias"),
    ],
    ids=["missing", "unknown", "layer-beyond-config", "bad-shape"],
)
def test_layout_errors_name_the_key(reference, stats, tiny_layer, tmp_path, edit, key):
    state = dict(reference.state_dict())
    edit(state)
    w2v, stats_path = write_folder(tmp_path, state, {"mean": stats[0], "var": stats[1]})
    with pytest.raises(CheckpointError, match=re.escape(f"'{key}'")):
        load_semantic_encoder(w2v, stats_path, tiny_layer)


def test_file_errors(reference, stats, tiny_layer, tmp_path):
    w2v, stats_path = write_folder(tmp_path, reference.state_dict(), {"mean": stats[0], "var": stats[1][:5]})
    with pytest.raises(CheckpointError, match="'var' has shape \\[5\\]"):
        load_semantic_encoder(w2v, stats_path, tiny_layer)
    torch.save({"mean": stats[0]}, stats_path)
    with pytest.raises(CheckpointError, match="'mean' and 'var'"):
        load_semantic_encoder(w2v, stats_path, tiny_layer)
    with pytest.raises(CheckpointError, match="not found"):
        load_semantic_encoder(w2v, tmp_path / "absent.pt", tiny_layer)
    (w2v / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: file not found"):
        load_semantic_encoder(w2v, stats_path, tiny_layer)
    (w2v / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read it as a safetensors file"):
        load_semantic_encoder(w2v, stats_path, tiny_layer)
