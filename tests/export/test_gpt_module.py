"""UnifiedVoice: official key layout, GPT-2 body against HF's GPT2Model, strict loading."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import DATA, REPO  # noqa: E402
from indextts2_onnx.export.checkpoint import CheckpointError, CheckpointPaths, load_gpt, load_strict  # noqa: E402
from indextts2_onnx.export.config import load_config  # noqa: E402
from indextts2_onnx.export.modules.gpt import UnifiedVoice  # noqa: E402


def test_official_size_keys_and_shapes_match_official_gpt_pth():
    cfg = load_config(REPO / "configs" / "official" / "config.yaml")
    with torch.device("meta"):  # no weights allocated
        model = UnifiedVoice(cfg.gpt)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = json.loads((DATA / "official_keys.json").read_text())["gpt.pth"]
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: s for k, s in ours.items() if official[k] != s} == {}


def test_gpt2_body_matches_transformers_gpt2(tiny_gpt):
    """Upstream's body IS transformers' GPT2Model (wte/wpe unused): same weights, same hidden states."""
    transformers = pytest.importorskip("transformers")
    c = tiny_gpt.cfg
    hf = transformers.GPT2Model(transformers.GPT2Config(
        n_embd=c.model_dim, n_layer=c.layers, n_head=c.heads, n_positions=512, vocab_size=8,
        attn_implementation="eager")).eval()
    state = {k[len("gpt."):]: v for k, v in tiny_gpt.state_dict().items() if k.startswith("gpt.")}
    state["wte.weight"] = torch.zeros_like(hf.wte.weight)
    state["wpe.weight"] = torch.zeros_like(hf.wpe.weight)  # upstream's wpe returns zeros
    hf.load_state_dict(state, strict=True)
    x = torch.randn(2, 23, c.model_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(inputs_embeds=x, use_cache=True)
        ours, presents = tiny_gpt.gpt(x, tiny_gpt.empty_past(2))
        # continue 3 steps from the cache on both sides
        ref_past, past = ref.past_key_values, presents
        for step in range(3):
            y = torch.randn(2, 1, c.model_dim, generator=torch.Generator().manual_seed(step + 1))
            r = hf(inputs_embeds=y, past_key_values=ref_past, use_cache=True)
            o, past = tiny_gpt.gpt(y, past)
            assert torch.max(torch.abs(r.last_hidden_state - o)) < 1e-5  # fp32 reassociation only
            ref_past = r.past_key_values
    assert torch.max(torch.abs(ref.last_hidden_state - ours)) < 1e-5


def _state(gpt) -> dict:
    return {k: v.clone() for k, v in gpt.state_dict().items()}


def test_strict_loading_names_file_key_and_shape(tiny_gpt, tmp_path):
    fresh = UnifiedVoice(tiny_gpt.cfg)
    state = _state(tiny_gpt)
    missing = dict(state)
    del missing["mel_head.weight"]
    with pytest.raises(CheckpointError, match=r"gpt\.pth.*missing tensor 'mel_head\.weight' \(expected shape \[66, 64\]\)"):
        load_strict(fresh, missing, "gpt.pth")
    bad = dict(state)
    bad["final_norm.weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match=r"'final_norm\.weight' has shape \[3\], expected \[64\]"):
        load_strict(fresh, bad, "gpt.pth")
    extra = dict(state, surprise=torch.ones(1))
    with pytest.raises(CheckpointError, match="unexpected tensor 'surprise'"):
        load_strict(fresh, extra, "gpt.pth")


def test_known_aliases_and_model_wrapper_load(tiny_checkpoint, tiny_gpt, tmp_path):
    """A real gpt.pth may be wrapped in {'model': ...} and carry inference_model.* / gpt.wte aliases."""
    state = _state(tiny_gpt)
    state["gpt.wte.weight"] = state["mel_embedding.weight"]
    state["inference_model.lm_head.1.weight"] = state["mel_head.weight"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in tiny_checkpoint.iterdir():
        if f.is_file():
            (ckpt / f.name).write_bytes(f.read_bytes())
    torch.save({"model": state}, ckpt / "gpt.pth")
    cfg = load_config(ckpt / "config.yaml")
    loaded = load_gpt(CheckpointPaths.of(ckpt, cfg), cfg)
    assert torch.equal(loaded.mel_head.weight, tiny_gpt.mel_head.weight)


def test_missing_gpt_file_is_a_clear_error(tiny_checkpoint, tmp_path):
    cfg = load_config(tiny_checkpoint / "config.yaml")
    paths = CheckpointPaths.of(tiny_checkpoint, cfg, gpt=tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=r"nope\.pth: file not found"):
        load_gpt(paths, cfg)


def test_shared_buffer_decode_equals_concat_decode(tiny_gpt):
    """decode_shared (the GroupQueryAttention graph's torch side: modules/gqa.py's eager body) computes what
    decode does: a prefill from host rows plus the start code, single steps, a 3-code chunk, and one step
    for three rows of different lengths. Same float ops in the same order, so equal to float rounding
    (atol 1e-5; observed 0)."""
    c = tiny_gpt.cfg
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(1, 9, c.model_dim, generator=g)
    caches = [torch.zeros(1, c.heads, 32, c.head_dim) for _ in range(2 * c.layers)]

    def ints(*v):
        return torch.tensor(v, dtype=torch.int32)

    with torch.no_grad():
        start = torch.tensor([[c.start_mel_token]])
        lg, h, past = tiny_gpt.decode(torch.cat([rows, tiny_gpt.mel_inputs(start, torch.tensor([0]))], 1),
                                      tiny_gpt.empty_past(1))
        lg2, h2, caches = tiny_gpt.decode_shared(rows, start, torch.tensor([[0]]), caches, ints(9), ints(10))
        torch.testing.assert_close(lg2, lg, atol=1e-5, rtol=0)
        torch.testing.assert_close(h2, h, atol=1e-5, rtol=0)
        n = 10
        for codes in ([[5]], [[7]], [[1, 2, 3]]):
            codes = torch.tensor(codes)
            pos = torch.arange(n - 9, n - 9 + codes.shape[1])[None]
            lg, h, past = tiny_gpt.decode(tiny_gpt.mel_inputs(codes, pos[0]), past)
            n += codes.shape[1]
            lg2, h2, caches = tiny_gpt.decode_shared(rows[:, :0], codes, pos, caches, ints(n - 1), ints(n))
            torch.testing.assert_close(lg2, lg, atol=1e-5, rtol=0)
            torch.testing.assert_close(h2, h, atol=1e-5, rtol=0)
            for p, buf in zip(past, caches):
                torch.testing.assert_close(buf[:, :, :n], p, atol=1e-5, rtol=0)
                assert not buf[:, :, n:].any()  # nothing written past the sequence
        # three rows of lengths 4, 9, n: one step each, against each row decoded on its own
        lengths = [4, 9, n]
        bufs = [torch.cat([b.clone() for _ in lengths], 0) for b in caches]
        code = torch.tensor([[11], [12], [13]])
        pos = torch.tensor([[lengths[0] - 9], [lengths[1] - 9], [n - 9]]).clamp(min=0)
        lg3, _, bufs = tiny_gpt.decode_shared(rows[:, :0].expand(3, 0, -1), code, pos, bufs,
                                              ints(*lengths), ints(max(lengths) + 1))
        for r, p in enumerate(lengths):
            alone = [b[:, :, :p] for b in caches]
            want, _, _ = tiny_gpt.decode(tiny_gpt.mel_inputs(code[r:r + 1], pos[r]), alone)
            torch.testing.assert_close(lg3[r:r + 1], want, atol=1e-5, rtol=0)
