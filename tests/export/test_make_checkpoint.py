"""tools/make_checkpoint.py and its two helpers: the official file layout, the random values, the buffers.

The official layouts are checked against the loading contract (`tests/data/official_keys.json`) without
writing or allocating anything; the tiny checkpoint is written to a temp folder and read back the way the
loaders read it (`torch.load(weights_only=True)`, safetensors).
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from indextts2_onnx.export import checkpoint_layout as layouts
from indextts2_onnx.export.checkpoint_layout import TensorSpec
from indextts2_onnx.export.config import load_bigvgan_config, load_config, load_w2v_config
from indextts2_onnx.export.qwen_folder import QWEN_FILES
from indextts2_onnx.export.random_weights import pick_rule, random_state_dict, random_tensor, randomize_module_

from conftest import DATA, REPO  # noqa: E402
CONFIGS = REPO / "configs"

_spec = importlib.util.spec_from_file_location("make_checkpoint", REPO / "tools" / "make_checkpoint.py")
make_checkpoint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_checkpoint)

TORCH_FILES = ("s2mel.pth", "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt", "hf_cache/campplus_cn_common.bin",
               "hf_cache/bigvgan/bigvgan_generator.pt")
SAFETENSORS_FILES = ("hf_cache/w2v-bert-2.0/model.safetensors", "hf_cache/semantic_codec_model.safetensors")
QWEN_EMO_FILES = tuple(f"qwen0.6bemo4-merge/{name}" for name in QWEN_FILES)  # the emotion-from-text model
ALL_FILES = ("config.yaml", "gpt.pth", "bpe.model", "hf_cache/w2v-bert-2.0/config.json",
             "hf_cache/bigvgan/config.json", *TORCH_FILES, *SAFETENSORS_FILES, *QWEN_EMO_FILES)


def all_layouts(name: str) -> dict[str, layouts.Layout]:
    """{file: layout} of every non-GPT tensor file for configs/<name>."""
    d = CONFIGS / name
    cfg = load_config(d / "config.yaml")
    w2v = load_w2v_config(d / "w2v_config.json")
    return {
        "s2mel.pth": layouts.s2mel_layout(cfg),
        "wav2vec2bert_stats.pt": layouts.stats_layout(w2v.hidden_size),
        **layouts.matrices_layout(cfg),
        "hf_cache/campplus_cn_common.bin": layouts.campplus_layout(cfg.s2mel.style_dim),
        "hf_cache/semantic_codec_model.safetensors": layouts.codec_layout(cfg.semantic_codec),
        "hf_cache/bigvgan/bigvgan_generator.pt": layouts.bigvgan_layout(load_bigvgan_config(d / "bigvgan_config.json")),
        "hf_cache/w2v-bert-2.0/model.safetensors": layouts.w2v_layout(w2v),
    }


def flatten(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    return flatten(torch.load(path, map_location="cpu", weights_only=True))


def as_specs(state: dict[str, torch.Tensor]) -> dict[str, TensorSpec]:
    return {k: TensorSpec(tuple(t.shape), t.dtype) for k, t in state.items()}


def write(out: Path, seed: int = 0, config: str = "tiny") -> Path:
    make_checkpoint.make_checkpoint(CONFIGS / config, out, seed)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_state(tiny) -> dict[str, dict[str, torch.Tensor]]:
    return {rel: read(tiny / rel) for rel in (*TORCH_FILES, *SAFETENSORS_FILES, "gpt.pth")}


# --- 1. official layouts == the loading contract (no files, no allocation) ----------------------------


@pytest.mark.parametrize("rel", sorted(all_layouts("official")))
def test_official_layout_matches_contract(rel):
    want = json.loads((DATA / "official_keys.json").read_text())[rel]
    dtypes = json.loads((DATA / "official_keys.dtypes.json").read_text())["_non_float32"].get(rel, {})
    got = all_layouts("official")[rel]
    assert set(got) == set(want), (sorted(set(got) - set(want))[:5], sorted(set(want) - set(got))[:5])
    for key, spec in got.items():
        assert list(spec.shape) == want[key], key
        assert str(spec.dtype).removeprefix("torch.") == dtypes.get(key, "float32"), key


def test_official_contract_is_fully_covered():
    """Every file of the contract is declared here, except gpt.pth (our UnifiedVoice's state dict)."""
    contract = set(json.loads((DATA / "official_keys.json").read_text()))
    assert contract - set(all_layouts("official")) == {"gpt.pth"}


def test_w2v_layout_matches_transformers():
    transformers = pytest.importorskip("transformers")
    for name in ("tiny", "official"):
        raw = json.loads((CONFIGS / name / "w2v_config.json").read_text())
        with torch.device("meta"):
            model = transformers.Wav2Vec2BertModel(transformers.Wav2Vec2BertConfig(**raw))
        want = {k: tuple(t.shape) for k, t in model.state_dict().items()}
        got = {k: s.shape for k, s in layouts.w2v_layout(load_w2v_config(CONFIGS / name / "w2v_config.json")).items()}
        assert got == want, name


# --- 2. the written tiny folder --------------------------------------------------------------------------


def test_tiny_folder_has_exactly_the_official_files(tiny):
    files = {str(p.relative_to(tiny)) for p in tiny.rglob("*") if p.is_file()}
    assert files == set(ALL_FILES)
    assert (tiny / "config.yaml").read_bytes() == (CONFIGS / "tiny" / "config.yaml").read_bytes()
    assert (tiny / "hf_cache/bigvgan/config.json").read_bytes() == (CONFIGS / "tiny/bigvgan_config.json").read_bytes()
    assert (tiny / "hf_cache/w2v-bert-2.0/config.json").read_bytes() == (CONFIGS / "tiny/w2v_config.json").read_bytes()
    assert not list(tiny.parent.glob(".tiny.*")), "temporary sibling left behind"


def test_tiny_files_reload_with_declared_layout(tiny_state):
    for rel, layout in all_layouts("tiny").items():
        assert as_specs(tiny_state[rel]) == layout, rel


def test_container_formats(tiny):
    """upstream-quirks 15: nesting of s2mel / BigVGAN, bare tensors, plain dicts."""
    s2mel = torch.load(tiny / "s2mel.pth", weights_only=True)
    assert list(s2mel) == ["net"] and set(s2mel["net"]) == {"cfm", "length_regulator", "gpt_layer"}
    assert "estimator.input_pos" in s2mel["net"]["cfm"]
    assert list(torch.load(tiny / "hf_cache/bigvgan/bigvgan_generator.pt", weights_only=True)) == ["generator"]
    assert set(torch.load(tiny / "wav2vec2bert_stats.pt", weights_only=True)) == {"mean", "var"}
    for rel in ("feat1.pt", "feat2.pt"):
        assert isinstance(torch.load(tiny / rel, weights_only=True), torch.Tensor)
    gpt = torch.load(tiny / "gpt.pth", weights_only=True)
    assert type(gpt) is dict and all(isinstance(t, torch.Tensor) for t in gpt.values())


def test_gpt_matches_our_module(tiny_state):
    from indextts2_onnx.export.modules.gpt import UnifiedVoice

    fresh = UnifiedVoice(load_config(CONFIGS / "tiny" / "config.yaml").gpt)
    state = tiny_state["gpt.pth"]
    assert as_specs(state) == as_specs(fresh.state_dict())
    for name, buf in fresh.named_buffers():  # computed sinusoid tables kept, not randomised
        assert torch.equal(state[name], buf), name


def test_no_degenerate_tensors(tiny_state):
    for rel, state in tiny_state.items():
        for key, t in state.items():
            assert torch.isfinite(t.float()).all(), (rel, key)
            assert t.count_nonzero() > 0, f"{rel}: {key} is all zero"
            if t.numel() > 1 and t.is_floating_point() and not key.endswith(("filter", "freqs")):
                assert t.std() > 0, f"{rel}: {key} is constant"


def test_norm_gains_are_not_all_one(tiny_state):
    n = 0
    for rel, state in tiny_state.items():
        for key, t in state.items():
            if t.ndim == 1 and key.rsplit(".", 1)[-1] in ("weight", "gamma"):
                n += 1
                assert not torch.all(t == 1), (rel, key)
                assert abs(t.mean().item() - 1) < 0.2, (rel, key)
    assert n > 100


def test_batch_norm_statistics(tiny_state):
    camp = tiny_state["hf_cache/campplus_cn_common.bin"]
    counts = [t for k, t in camp.items() if k.endswith("num_batches_tracked")]
    assert len(counts) == 122 and all(t.dtype == torch.int64 and t.ndim == 0 and t > 0 for t in counts)
    assert all((t > 0).all() for k, t in camp.items() if k.endswith("running_var"))
    assert (tiny_state["wav2vec2bert_stats.pt"]["var"] > 0).all()


def test_weight_norm_pairs_are_sensible(tiny_state):
    """g = ||v|| x (1 + 0.1 N): the folded weight keeps v's scale, one gain per dim-0 slice."""
    n = 0
    for rel, state in tiny_state.items():
        for key, g in state.items():
            if key.endswith("weight_g"):
                v = state[key[: -len("g")] + "v"]
                ratio = g.flatten() / v.flatten(1).norm(dim=1)
                assert ((ratio > 0.5) & (ratio < 1.5)).all() and not torch.all(ratio == 1), (rel, key)
                n += 1
    assert n > 50


def test_fan_in_scaling(tiny_state):
    w = tiny_state["hf_cache/campplus_cn_common.bin"]["xvector.transit2.linear.weight"]  # (512, 1024, 1)
    assert w.std().item() == pytest.approx(1 / math.sqrt(1024), rel=0.05)
    c_fc = tiny_state["gpt.pth"]["gpt.h.0.mlp.c_fc.weight"]  # HF Conv1D: (in 64, out 256)
    assert c_fc.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.1)


# --- 3. computed buffers -------------------------------------------------------------------------------


def test_s2mel_buffers(tiny_state):
    s2mel = tiny_state["s2mel.pth"]
    pos = s2mel["net.cfm.estimator.input_pos"]
    assert pos.dtype == torch.int64 and torch.equal(pos, torch.arange(16384))
    half = 128
    want = torch.from_numpy(np.exp(-np.log(10000.0) * np.arange(half) / half).astype(np.float32))
    for name in ("t_embedder", "t_embedder2"):
        torch.testing.assert_close(s2mel[f"net.cfm.estimator.{name}.freqs"], want, rtol=1e-6, atol=0)


def test_anti_alias_filter_formula():
    """Independent numpy derivation (np.kaiser, np.sinc) of the Kaiser-windowed sinc, cutoff 0.25."""
    a = 2.285 * 5 * np.pi * 1.2 + 7.95
    beta = 0.1102 * (a - 8.7)
    t = np.arange(-6, 6) + 0.5
    h = 2 * 0.25 * np.kaiser(12, beta) * np.sinc(2 * 0.25 * t)
    want = torch.from_numpy((h / h.sum()).astype(np.float32)).view(1, 1, 12)
    got = layouts.anti_alias_filter()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(got.flatten(), got.flatten().flip(0))


def test_bigvgan_filters(tiny_state):
    gen = tiny_state["hf_cache/bigvgan/bigvgan_generator.pt"]
    filters = {k: t for k, t in gen.items() if k.endswith("filter")}
    assert len(filters) == 2 * (18 * 6 + 1)
    want = layouts.anti_alias_filter()
    assert all(torch.equal(t, want) for t in filters.values())


# --- 4. determinism ----------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_values(tiny, tiny_state, tmp_path):
    again = write(tmp_path / "again", seed=0)
    for rel in ALL_FILES:
        assert filecmp.cmp(tiny / rel, again / rel, shallow=False), rel
    other = write(tmp_path / "other", seed=1)
    assert (other / "bpe.model").read_bytes() != (tiny / "bpe.model").read_bytes()
    for rel, state in tiny_state.items():
        changed = read(other / rel)
        for key, t in state.items():
            if key.endswith(("filter", "freqs", "input_pos", ".pe")):
                assert torch.equal(changed[key], t), (rel, key)
            else:
                assert not torch.equal(changed[key], t), (rel, key)


def test_values_depend_on_key_not_order():
    layout = {"a.weight": TensorSpec((4, 3)), "b.bias": TensorSpec((4,))}
    forward = random_state_dict(layout, 7, "f")
    backward = random_state_dict(dict(reversed(layout.items())), 7, "f")
    assert all(torch.equal(forward[k], backward[k]) for k in layout)
    assert not torch.equal(random_tensor("a.weight", layout, 7, "g"), forward["a.weight"])  # namespace counts


def test_rules():
    assert pick_rule("x.num_batches_tracked", TensorSpec((), torch.int64)).__name__ == "batch_count"
    with pytest.raises(ValueError, match="buffer"):
        pick_rule("input_pos", TensorSpec((8,), torch.int64))
    assert pick_rule("model.1.weight", TensorSpec((8,))).__name__ == "norm_gain"  # GroupNorm
    assert pick_rule("text_embedding.weight", TensorSpec((9, 8))).__name__ == "unit_normal"
    assert pick_rule("ups.0.0.weight_v", TensorSpec((8, 4, 3))).__name__ == "fan_in_weight"
    assert pick_rule("gpt.h.0.attn.c_attn.weight", TensorSpec((8, 24))).__name__ == "in_out_weight"
    assert pick_rule("resblocks.0.activations.0.act.alpha", TensorSpec((8,))).__name__ == "log_scale"
    with pytest.raises(ValueError, match="buffers not in the layout|buffer is"):
        random_state_dict({"p": TensorSpec((3,), torch.int64)}, 0, "n", buffers={"p": torch.zeros(3)})


def test_randomize_module_keeps_buffers():
    module = torch.nn.BatchNorm1d(4)
    module.register_buffer("table", torch.arange(3.0))
    randomize_module_(module, 0, "m")
    assert torch.equal(module.table, torch.arange(3.0)) and module.num_batches_tracked == 0  # buffers untouched
    assert not torch.all(module.weight == 1)


# --- 5. bpe.model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["tiny", "official"])
def test_bpe_model(config, tiny, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    vocab = load_config(CONFIGS / config / "config.yaml").gpt.number_text_tokens
    if config == "tiny":
        proto = (tiny / "bpe.model").read_bytes()
    else:  # ~7 s: the exact 12 000-piece vocabulary is the contract worth paying for
        proto = make_checkpoint.train_bpe(vocab, seed=0)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    assert sp.vocab_size() == vocab
    assert [sp.id_to_piece(i) for i in range(3)] == ["<s>", "</s>", "<unk>"]
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id()) == (0, 1, 2, -1)
    ids = sp.encode("HELLO, WORLD! IT'S 2024 - OK? 你 好 的")  # what upstream feeds in: upper case, CJK spaced
    assert sp.unk_id() not in ids


# --- 6. the command line -------------------------------------------------------------------------------


def test_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert make_checkpoint.main(["--config", "tiny", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temp folder left


def test_force_replaces_and_empty_out_is_fine(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    assert make_checkpoint.main(["--config", "tiny", "--out", str(out), "--seed", "3"]) == 0  # empty: accepted
    (out / "stale.txt").write_text("old")
    assert make_checkpoint.main(["--config", "tiny", "--out", str(out), "--seed", "3", "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / "gpt.pth").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failure_leaves_out_untouched(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(make_checkpoint, "write_gpt", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []
