"""IndexTTS-2.5 checkpoint folders: recognised by their files, read by fixed names, loaded strictly.

The folder comes from `tools/make_checkpoint.py --model 2.5 --config tiny` (upstream's layout at toy widths,
config.yaml as published: `version: 2.0` and absolute weight paths). The 2.5 GPT's prefix and language rules
are checked against hand computations on our torch module, the reference the runtime tests compare with.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO  # noqa: E402
from indextts2_onnx.export.bundle import load_models
from indextts2_onnx.export.checkpoint import (CODEC_FILE, TIKTOKEN_FILE, CheckpointError, CheckpointPaths,
                                              folder_family, load_gpt, load_strict)
from indextts2_onnx.export.config import load_config
from indextts2_onnx.export.modules.gpt import UnifiedVoice
from indextts2_onnx.export.modules.s2mel import load_s2mel
from indextts2_onnx.export.qwen_folder import QWEN_FILES
from indextts2_onnx.runtime.cli import main

CONFIGS = REPO / "configs"
# upstream's 2.5 folder (webui.py's required files + what infer_v2_5 reads), as make_checkpoint writes it
FILES_25 = {"config.yaml", "gpt.pth", "s2mel.pth", CODEC_FILE, TIKTOKEN_FILE, "wav2vec2bert_stats.pt", "feat1.pt",
            "feat2.pt", "hf_cache/w2v-bert-2.0/config.json", "hf_cache/w2v-bert-2.0/model.safetensors",
            "hf_cache/campplus_cn_common.bin", "hf_cache/bigvgan/config.json", "hf_cache/bigvgan/bigvgan_generator.pt",
            *(f"qwen0.6bemo4-merge/{name}" for name in QWEN_FILES)}  # the emotion-from-text model (qwen_emo_path)


@pytest.fixture(scope="module")
def cfg25(tiny25_checkpoint):
    return load_config(tiny25_checkpoint / "config.yaml")


@pytest.fixture(scope="module")
def gpt25(tiny25_checkpoint, cfg25):
    return load_gpt(CheckpointPaths.of(tiny25_checkpoint, cfg25), cfg25)


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in skip])
    return dst


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


# --- which family a folder is --------------------------------------------------------------------------------


def test_family_comes_from_the_files(tmp_path, tiny25_checkpoint):
    assert folder_family(tiny25_checkpoint) == "2.5"
    assert folder_family(_touch(tmp_path / "v20", "config.yaml", "gpt.pth", "bpe.model")) == "2.0"
    assert folder_family(_touch(tmp_path / "both", CODEC_FILE, TIKTOKEN_FILE)) == "2.5"


@pytest.mark.parametrize("present, missing, flag", [(CODEC_FILE, TIKTOKEN_FILE, "--tokenizer"),
                                                     (TIKTOKEN_FILE, CODEC_FILE, "--codec")])
def test_half_a_25_folder_names_the_missing_file_and_its_flag(tmp_path, present, missing, flag):
    folder = _touch(tmp_path / "half", "config.yaml", present)
    with pytest.raises(CheckpointError, match=rf"has {present} but no {missing}.*pass {flag} PATH"):
        folder_family(folder)
    # an override that points at the missing file completes it
    other = _touch(tmp_path / "elsewhere", missing)
    kind = "codec" if missing == CODEC_FILE else "tokenizer"
    assert folder_family(folder, **{kind: other / missing}) == "2.5"


def test_a_20_folder_stays_20(tiny_checkpoint):
    cfg = load_config(tiny_checkpoint / "config.yaml")
    g = cfg.gpt
    assert (cfg.family, g.speaker_conditioning, g.condition_num_latent) == ("2.0", "conformer_perceiver", 32)
    paths = CheckpointPaths.of(tiny_checkpoint)
    assert paths.gpt == tiny_checkpoint / cfg.gpt_checkpoint and paths.bpe == tiny_checkpoint / "bpe.model"
    assert hasattr(load_gpt(paths, cfg), "speed_emb")


# --- fixed names, never config.yaml's paths or version ---------------------------------------------------


def test_published_config_paths_and_version_are_ignored(tiny25_checkpoint, cfg25):
    raw = cfg25.raw
    assert raw["gpt_checkpoint"].startswith("/") and raw["s2mel_checkpoint"].startswith("/")  # as published
    assert str(raw["version"]) == "2.0" and "dataset" not in raw
    assert (cfg25.family, cfg25.gpt_checkpoint, cfg25.s2mel_checkpoint) == ("2.5", "gpt.pth", "s2mel.pth")
    paths = CheckpointPaths.of(tiny25_checkpoint)
    root = tiny25_checkpoint
    assert (paths.gpt, paths.s2mel, paths.codec, paths.tokenizer) == (
        root / "gpt.pth", root / "s2mel.pth", root / CODEC_FILE, root / TIKTOKEN_FILE)
    assert (paths.w2v_stats, paths.emo_matrix, paths.spk_matrix) == (
        root / "wav2vec2bert_stats.pt", root / "feat2.pt", root / "feat1.pt")
    assert (paths.w2v_bert, paths.campplus, paths.bigvgan) == (
        root / "hf_cache/w2v-bert-2.0", root / "hf_cache/campplus_cn_common.bin", root / "hf_cache/bigvgan")


def test_overrides_are_honoured(tiny25_checkpoint, tmp_path):
    """Every file may live elsewhere; the family is read with the overrides too."""
    folder = _copy(tiny25_checkpoint, tmp_path / "ckpt", skip=(CODEC_FILE, TIKTOKEN_FILE, "gpt.pth"))
    moved = _copy(tiny25_checkpoint, tmp_path / "moved")
    assert folder_family(folder) == "2.0"  # without them it would be read as a (broken) 2.0 folder
    over = dict(codec=moved / CODEC_FILE, tokenizer=moved / TIKTOKEN_FILE, gpt=moved / "gpt.pth")
    paths = CheckpointPaths.of(folder, **over)
    assert (paths.codec, paths.tokenizer, paths.gpt) == (over["codec"], over["tokenizer"], over["gpt"])
    cfg = load_config(paths.config, folder_family(folder, paths.codec, paths.tokenizer))
    assert cfg.family == "2.5" and load_gpt(paths, cfg).cfg.campplus


def test_export_cli_has_the_25_flags_and_refuses_half_a_folder(tiny25_checkpoint, tmp_path, capsys):
    folder = _copy(tiny25_checkpoint, tmp_path / "ckpt", skip=(TIKTOKEN_FILE,))
    assert main(["export", str(folder), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TIKTOKEN_FILE in err and "--tokenizer" in err
    assert not (tmp_path / "b").exists()
    assert main(["export", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "--codec PATH" in usage and "--tokenizer PATH" in usage


# --- strict loading of each 2.5 file -------------------------------------------------------------------------


def test_every_25_file_loads_strictly(tiny25_checkpoint, cfg25):
    models = load_models(CheckpointPaths.of(tiny25_checkpoint), cfg25, lambda msg: None)
    assert models.gpt_layer is None and models.gpt.cfg.campplus
    assert type(models.codec).__name__ == "EnhancedCodec"
    assert models.gpt.spk_emb_proj.weight.shape == (cfg25.gpt.model_dim, cfg25.s2mel.style_dim)
    assert models.gpt.lang_embedding.weight.shape == (107, cfg25.gpt.model_dim)
    for absent in ("conditioning_encoder", "perceiver_encoder", "speed_emb"):
        assert not hasattr(models.gpt, absent), absent


def test_25_gpt_keys(gpt25):
    keys = set(gpt25.state_dict())
    assert {"spk_emb_proj.weight", "spk_emb_proj.bias", "lang_embedding.weight"} <= keys
    assert not any(k.startswith(("conditioning_encoder.", "perceiver_encoder.", "speed_emb.")) for k in keys)
    assert any(k.startswith("emo_conditioning_encoder.") for k in keys)  # the emotion path is unchanged


def test_a_20_gpt_offered_as_25_fails_naming_keys(cfg25, tmp_path):
    """The same widths in 2.0's layout: upstream's non-strict load would run it on a random spk_emb_proj."""
    gpt20 = UnifiedVoice(dataclasses.replace(cfg25.gpt, speaker_conditioning="conformer_perceiver",
                                             condition_num_latent=32))
    with pytest.raises(CheckpointError) as e:
        load_strict(UnifiedVoice(cfg25.gpt), gpt20.state_dict(), "gpt.pth")
    msg = str(e.value)
    for key in ("missing tensor 'spk_emb_proj.weight'", "missing tensor 'lang_embedding.weight'",
                "unexpected tensor 'conditioning_encoder."):
        assert key in msg, key


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("spk_emb_proj.weight"), r"missing tensor 'spk_emb_proj\.weight' \(expected shape \[64, 48\]\)"),
    (lambda s: s.update(surprise=torch.ones(1)), r"unexpected tensor 'surprise'"),
    (lambda s: s.update({"speed_emb.weight": torch.ones(2, 64)}), r"unexpected tensor 'speed_emb\.weight'"),
    (lambda s: s.update({"lang_embedding.weight": torch.ones(106, 64)}),
     r"'lang_embedding\.weight' has shape \[106, 64\], expected \[107, 64\]"),
])
def test_25_gpt_pth_is_checked(tiny25_checkpoint, cfg25, gpt25, tmp_path, edit, message):
    state = {k: v.clone() for k, v in gpt25.state_dict().items()}
    edit(state)
    torch.save(state, tmp_path / "gpt.pth")
    with pytest.raises(CheckpointError, match=rf"gpt\.pth.*{message}"):
        load_gpt(CheckpointPaths.of(tiny25_checkpoint, cfg25, gpt=tmp_path / "gpt.pth"), cfg25)


def test_25_s2mel_gpt_layer_is_an_allowed_unused_extra(tiny25_checkpoint, cfg25, tmp_path):
    s2mel = torch.load(tiny25_checkpoint / "s2mel.pth", weights_only=True)
    assert set(s2mel["net"]) == {"cfm", "length_regulator", "gpt_layer"}  # shipped, as upstream does
    gpt_layer, regulator, dit = load_s2mel(tiny25_checkpoint / "s2mel.pth", cfg25)
    assert gpt_layer is None and regulator is not None and dit is not None
    without = {"net": {k: v for k, v in s2mel["net"].items() if k != "gpt_layer"}}
    torch.save(without, tmp_path / "s2mel.pth")
    assert load_s2mel(tmp_path / "s2mel.pth", cfg25)[0] is None  # not required either
    odd = {"net": {**s2mel["net"], "gpt_layer": {**s2mel["net"]["gpt_layer"], "surprise": torch.ones(1)}}}
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth \[net\.gpt_layer\].*unexpected tensor 'surprise'"):
        load_s2mel(tmp_path / "odd.pth", cfg25)
    cfg20 = dataclasses.replace(cfg25, family="2.0")  # 2.0 still requires and loads it
    assert load_s2mel(tiny25_checkpoint / "s2mel.pth", cfg20)[0] is not None
    with pytest.raises(CheckpointError, match=r"no tensors under 'net\.gpt_layer'"):
        load_s2mel(tmp_path / "s2mel.pth", cfg20)


# --- make_checkpoint --model 2.5 ----------------------------------------------------------------------------


def test_make_checkpoint_25_writes_upstreams_file_set(tiny25_checkpoint):
    files = {str(p.relative_to(tiny25_checkpoint)) for p in tiny25_checkpoint.rglob("*") if p.is_file()}
    assert files == FILES_25  # no bpe.model, no MaskGCT semantic_codec_model.safetensors
    assert (tiny25_checkpoint / "config.yaml").read_bytes() == (CONFIGS / "tiny25" / "config.yaml").read_bytes()
    codec = torch.load(tiny25_checkpoint / CODEC_FILE, weights_only=True)
    assert list(codec) == ["model"] and all(isinstance(t, torch.Tensor) for t in codec["model"].values())
    cfg = load_config(tiny25_checkpoint / "config.yaml")
    ranks = (tiny25_checkpoint / TIKTOKEN_FILE).read_bytes().count(b"\n")
    assert ranks + 1673 == cfg.gpt.number_text_tokens  # BPE ranks + upstream's special tokens
    feat2 = torch.load(tiny25_checkpoint / "feat2.pt", weights_only=True)
    assert feat2.shape == (sum(cfg.emo_num), cfg.gpt.model_dim)  # emotion rows in GPT width


def test_official25_config_is_the_published_one():
    cfg = load_config(CONFIGS / "official25" / "config.yaml", "2.5")
    g = cfg.gpt
    assert (g.number_text_tokens, g.model_dim, g.layers, g.heads, g.style_dim) == (60509, 1280, 24, 20, 192)
    assert (g.condition_num_latent, g.prefix_rows, g.lang_embedding_rows) == (1, 3, 107)
    assert str(cfg.raw["version"]) == "2.0" and cfg.raw["gpt_checkpoint"].startswith("/")
    assert "dataset" not in cfg.raw and cfg.raw["vocoder"] == {"name": "bigvgan_generator.pt"}
    assert cfg.gpt_checkpoint == "gpt.pth"
    # everything but the GPT's text vocabulary, the vocoder block, the version and the paths equals 2.0's
    cfg20 = load_config(CONFIGS / "official" / "config.yaml")
    assert cfg.s2mel == cfg20.s2mel and cfg.semantic_codec == cfg20.semantic_codec and cfg.emo_num == cfg20.emo_num
    assert cfg.gpt.emo_condition_module == cfg20.gpt.emo_condition_module


# --- the 2.5 GPT's prefix and language rows, by hand ---------------------------------------------------------


def test_campplus_prefix_by_hand(gpt25):
    d, s = gpt25.cfg.model_dim, gpt25.cfg.style_dim
    rng = np.random.default_rng(0)
    style, emovec = rng.standard_normal((2, s)), rng.standard_normal((2, d))
    W = gpt25.spk_emb_proj.weight.detach().double().numpy()  # (d, s)
    b = gpt25.spk_emb_proj.bias.detach().double().numpy()
    want = np.zeros((2, 3, d))
    for n in range(2):
        for i in range(d):
            want[n, 0, i] = sum(style[n, j] * W[i, j] for j in range(s)) + b[i] + emovec[n, i]
    with torch.no_grad():
        got = gpt25.campplus_prefix(torch.tensor(style, dtype=torch.float32), torch.tensor(emovec, dtype=torch.float32))
    assert got.shape == (2, 3, d)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert not got[:, 1:].any()  # upstream's speed rows are zeros in 2.5


def test_language_row_is_added_to_every_text_position(gpt25):
    ids = [0, 5, 17, 42, 1]  # start, three tokens, stop
    E = gpt25.text_embedding.weight.detach().numpy()
    P = gpt25.text_pos_embedding.emb.weight.detach().numpy()
    L = gpt25.lang_embedding.weight.detach().numpy()
    with torch.no_grad():
        plain = gpt25.text_inputs(torch.tensor([ids])).numpy()[0]
        with_lang = gpt25.text_inputs(torch.tensor([ids]), lang_id=7).numpy()[0]
    for k, t in enumerate(ids):
        np.testing.assert_allclose(plain[k], E[t] + P[k], atol=1e-6)
        np.testing.assert_allclose(with_lang[k], E[t] + P[k] + L[7], atol=1e-6)


def test_each_layout_refuses_the_others_methods(gpt25, tiny_gpt):
    d = gpt25.cfg.model_dim
    with pytest.raises(TypeError, match="speaker_latent exists only in the IndexTTS-2"):
        gpt25.speaker_latent(torch.zeros(1, 10, gpt25.cfg.semantic_dim))
    with pytest.raises(TypeError, match="conditioning_prefix"):
        gpt25.conditioning_prefix(torch.zeros(1, 1, d), torch.zeros(1, d))
    with pytest.raises(TypeError, match="campplus_prefix exists only in the IndexTTS-2.5"):
        tiny_gpt.campplus_prefix(torch.zeros(1, 48), torch.zeros(1, tiny_gpt.cfg.model_dim))
    with pytest.raises(TypeError, match="lang_id"):
        tiny_gpt.text_inputs(torch.tensor([[0, 1]]), lang_id=0)
