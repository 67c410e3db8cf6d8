"""Our Qwen3 module (the emotion model's decoder) and its qwen_emotion graph against transformers'
Qwen3ForCausalLM on the same random weights.

Tolerances: logits within 2e-5 (fp32, different attention kernels: einsum here, SDPA there); the graph
within its spec's atol (1e-4) of our module at every parity size, and within 5e-5 of transformers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from indextts2_onnx.export.checkpoint import CheckpointError  # noqa: E402
from indextts2_onnx.export.config import ConfigError, load_qwen_config  # noqa: E402
from indextts2_onnx.export.convert import export_graph  # noqa: E402
from indextts2_onnx.export.graphs import Models, emotion_text_graph  # noqa: E402
from indextts2_onnx.export.modules.qwen3 import load_qwen  # noqa: E402
from indextts2_onnx.export.verify import check_parity, cpu_session  # noqa: E402

LOGIT_ATOL = 2e-5


def _hf_model(tmp, tie: bool, seed: int = 0, kv_heads: int = 2):
    torch.manual_seed(seed)
    cfg = transformers.Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                                   max_position_embeddings=1024, tie_word_embeddings=tie, rope_theta=1e6)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than HF's init so that the layers matter
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 if p.ndim > 1 else 1 + 0.1 * torch.randn_like(p))
    folder = tmp / f"qwen_tie{tie}_kv{kv_heads}"
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def pair(request, tmp_path_factory):
    hf, folder = _hf_model(tmp_path_factory.mktemp("qwen"), request.param)
    return hf, load_qwen(folder), folder


@pytest.mark.parametrize("length", [1, 7, 64, 200])
def test_module_logits_match_transformers(pair, length):
    hf, ours, _ = pair
    ids = torch.randint(0, 300, (2, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids, torch.arange(length)[None].expand(2, -1))
    assert got.shape == want.shape == (2, length, 300)
    assert (got - want).abs().max().item() < LOGIT_ATOL


def test_shared_decode_steps_match_transformers(pair):
    """Prefill 30 tokens into shared buffers, then 10 single steps: each step's logits are transformers'
    at that position of one full pass."""
    hf, ours, _ = pair
    ids = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = hf(ids).logits[0]
        caches = [torch.zeros(1, 2, 48, 16) for _ in range(4)]
        pos = torch.arange(40)[None]

        def call(a, b, caches):
            return ours.decode_shared(ids[:, a:b], pos[:, a:b], caches, torch.tensor([b - 1], dtype=torch.int32),
                                      torch.tensor(b, dtype=torch.int32))

        logits, caches = call(0, 30, caches)
        diffs = [(logits[0] - want[29]).abs().max().item()]
        for t in range(30, 40):
            logits, caches = call(t, t + 1, caches)
            diffs.append((logits[0] - want[t]).abs().max().item())
    assert max(diffs) < LOGIT_ATOL
    assert caches[0][:, :, 40:].abs().max().item() == 0.0  # nothing written past the sequence


def test_graph_parity_and_transformers(pair, tmp_path):
    """The exported graph at every parity size (prompt, single steps of 1 and 3 rows at different lengths,
    a chunk, a 300-token prompt) against our module, then a prompt + steps run through ONNX Runtime
    against transformers."""
    hf, ours, _ = pair
    spec = emotion_text_graph(ours.cfg)
    models = Models(cfg=None, qwen=ours)
    path = export_graph(spec, models, tmp_path)
    parity = check_parity(spec, models, path)
    assert len(parity.cases) == 5 and parity.max_abs_diff < spec.atol

    sess = cpu_session(path)
    ids = np.random.default_rng(5).integers(0, 300, (1, 25))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits[0].numpy()
    caches = [np.zeros((1, 2, 32, 16), np.float32) for _ in range(4)]
    names = [i.name for i in sess.get_inputs()]

    def run(a, b):
        feeds = dict(zip(names, [ids[:, a:b], np.arange(a, b)[None], np.array([b - 1], np.int32),
                                 np.array(b, np.int32), *caches]))
        out = sess.run(None, feeds)
        caches[:] = out[1:]
        return out[0][0]

    got = [run(0, 20)] + [run(t, t + 1) for t in range(20, 25)]
    assert max(np.abs(g - want[t]).max() for g, t in zip(got, range(19, 25))) < 5e-5
    onnx_ops = {n.op_type for n in __import__("onnx").load(str(path), load_external_data=False).graph.node}
    assert "GroupQueryAttention" in onnx_ops


def test_load_is_strict(pair, tmp_path):
    _, _, folder = pair
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    save_file({k: v for k, v in state.items() if "layers.1.mlp.up_proj" not in k}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load_qwen(bad)
    save_file({**state, "model.extra.weight": torch.zeros(3)}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.extra\.weight'"):
        load_qwen(bad)


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({"model_type": "qwen2"}, "model_type"),
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"num_key_value_heads": 3}, "multiple"),
])
def test_config_refuses_what_the_module_does_not_compute(pair, tmp_path, change, message):
    _, _, folder = pair
    cfg = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        load_qwen_config(tmp_path / "config.json")


def test_grouped_query_attention_with_one_kv_head(tmp_path):
    """A config with one key/value head for four query heads (the widest grouping) matches too."""
    hf, folder = _hf_model(tmp_path, True, seed=1, kv_heads=1)
    ours = load_qwen(folder)
    ids = torch.randint(0, 300, (1, 33), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert (ours(ids, torch.arange(33)[None]) - hf(ids).logits).abs().max().item() < LOGIT_ATOL
