"""export/qwen_folder.py: the random emotion-from-text model folder (`qwen0.6bemo4-merge/`) that
tools/make_checkpoint.py writes, read back the way upstream reads it (transformers' AutoTokenizer and
Qwen3ForCausalLM) and the way a runtime without transformers would (`tokenizers`, safetensors)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from indextts2_onnx.export.qwen_folder import (ADDED_TOKENS, ADDITIONAL_SPECIAL_TOKENS, CHAT_TEMPLATE, QWEN_FILES,
                                               build_tokenizer, byte_alphabet, qwen_state_layout, write_qwen_folder)

QWEN_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}

from conftest import REPO  # noqa: E402

CONFIGS = REPO / "configs"
QWEN_DIR = "qwen0.6bemo4-merge"
TINY_REGULAR = 1000  # configs/tiny/qwen_emo_config.json: bos_token_id = <|endoftext|> = regular tokens
OFFICIAL_REGULAR = 151643

_spec = importlib.util.spec_from_file_location("make_checkpoint", REPO / "tools" / "make_checkpoint.py")
make_checkpoint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_checkpoint)

PROMPT = ("<|im_start|>system\n文本情感分类<|im_end|>\n<|im_start|>user\n今天真开心<|im_end|>\n"
          "<|im_start|>assistant\n<think>\n\n</think>\n\n")
MESSAGES = [{"role": "system", "content": "文本情感分类"}, {"role": "user", "content": "今天真开心"}]
PLAIN_TEXTS = ("今天真开心", "I am SO happy today, aren't you? 123", '{"高兴": 0.8, "愤怒": 0.0, "悲伤": 0.15}',
               "他说：“我很生气！”\n\tThe weather is terrible…  😀", "")


def qwen_config(name: str) -> tuple[dict, dict]:
    d = CONFIGS / name
    return (json.loads((d / "qwen_emo_config.json").read_text()),
            json.loads((d / "qwen_generation_config.json").read_text()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A whole tiny checkpoint (seed 0); the tests read its qwen0.6bemo4-merge/."""
    out = tmp_path_factory.mktemp("qwen") / "tiny"
    make_checkpoint.make_checkpoint(CONFIGS / "tiny", out, 0)
    return out


@pytest.fixture(scope="module")
def folder(tiny) -> Path:
    return tiny / QWEN_DIR


@pytest.fixture(scope="module")
def hf_tokenizer(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(folder)


# --- the configs -----------------------------------------------------------------------------------------


def test_official_config_is_qwen3_0_6b():
    config, generation = qwen_config("official")
    assert config == {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
        "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960,
        "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
    # the published generation_config.json (117 bytes): one eos id, no sampling keys, so greedy decoding
    assert generation == {"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643,
                          "transformers_version": "4.51.3"}
    # as transformers writes them: the real config.json is 727 bytes, the real generation_config.json 117
    assert len((CONFIGS / "official" / "qwen_emo_config.json").read_bytes()) == 727
    text = (CONFIGS / "official" / "qwen_generation_config.json").read_bytes()
    assert len(text) == 117 and text == (json.dumps(generation, indent=2, sort_keys=True) + "\n").encode()


def test_tiny_config():
    config, generation = qwen_config("tiny")
    official, _ = qwen_config("official")
    assert set(config) == set(official)
    assert (config["bos_token_id"], config["eos_token_id"]) == (TINY_REGULAR, TINY_REGULAR + 2)
    assert config["vocab_size"] == math.ceil((TINY_REGULAR + len(ADDED_TOKENS)) / 64) * 64
    assert config["tie_word_embeddings"] is True
    _, official_generation = qwen_config("official")
    assert set(generation) == set(official_generation)  # no sampling keys: greedy, as the official
    assert generation["eos_token_id"] == TINY_REGULAR + 2  # <|im_end|>, a single id
    assert generation["bos_token_id"] == generation["pad_token_id"] == TINY_REGULAR
    assert generation["transformers_version"] == official_generation["transformers_version"]


def test_25_family_uses_the_same_files():
    for name in ("tiny", "official"):
        for rel in ("qwen_emo_config.json", "qwen_generation_config.json"):
            assert (CONFIGS / f"{name}25" / rel).read_bytes() == (CONFIGS / name / rel).read_bytes()
        for d in (name, f"{name}25"):
            assert f"qwen_emo_path: {QWEN_DIR}/" in (CONFIGS / d / "config.yaml").read_text()


def test_layout_matches_transformers():
    transformers = pytest.importorskip("transformers")
    tiny, _ = qwen_config("tiny")
    official, _ = qwen_config("official")
    for config in (tiny, official, dict(tiny, tie_word_embeddings=False, attention_bias=True)):
        with torch.device("meta"):
            model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**config))
        want = {k: tuple(t.shape) for k, t in model.state_dict().items()}
        if config["tie_word_embeddings"]:
            del want["lm_head.weight"]  # tied: save_pretrained writes only the embedding
        assert qwen_state_layout(config) == want


# --- make_checkpoint ---------------------------------------------------------------------------------------


def test_make_checkpoint_writes_the_folder(tiny, folder):
    # the published folder's files (its *.jinja template, no tokenizer vocab.json / merges.txt)
    assert sorted(QWEN_FILES) == ["chat_template.jinja", "config.json", "generation_config.json",
                                  "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(QWEN_FILES)
    config, generation = qwen_config("tiny")
    assert json.loads((folder / "config.json").read_text()) == config
    assert json.loads((folder / "generation_config.json").read_text()) == generation
    # byte for byte the config file (key-sorted, indent 2, final newline, as transformers writes it)
    assert (folder / "generation_config.json").read_bytes() == \
        (CONFIGS / "tiny" / "qwen_generation_config.json").read_bytes()


def test_official_generation_config_is_written_byte_exact(tmp_path):
    """With the official configs the folder's generation_config.json is the published file's 117 bytes. The
    official vocabulary (its tokenizer, ~0.5 s) with one narrow layer, so the weights stay ~20 MB."""
    config, generation = qwen_config("official")
    narrow = dict(config, hidden_size=64, intermediate_size=128, num_hidden_layers=1, max_window_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    write_qwen_folder(tmp_path / "official", narrow, generation, 0)
    text = (tmp_path / "official" / "generation_config.json").read_bytes()
    assert len(text) == 117
    assert text == (json.dumps({"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643,
                                "transformers_version": "4.51.3"}, indent=2, sort_keys=True) + "\n").encode()


def test_chat_template_file(folder):
    """The template is in chat_template.jinja only, as in the published folder (whose tokenizer_config.json,
    5,433 bytes, is too small to hold one)."""
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))


def test_no_qwen_emo(tmp_path):
    out = tmp_path / "ckpt"
    assert make_checkpoint.main(["--config", "tiny", "--out", str(out), "--no-qwen-emo"]) == 0
    assert (out / "gpt.pth").is_file() and not (out / QWEN_DIR).exists()
    assert not any("qwen" in str(p.relative_to(out)) for p in out.rglob("*"))


def test_same_seed_same_bytes(folder, tmp_path):
    config, generation = qwen_config("tiny")
    write_qwen_folder(tmp_path / "again", config, generation, 0)
    for name in QWEN_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes(), name
    write_qwen_folder(tmp_path / "other", config, generation, 1)
    for name in ("tokenizer.json", "model.safetensors"):
        assert (tmp_path / "other" / name).read_bytes() != (folder / name).read_bytes(), name


def test_qwen_emo_path_must_stay_inside():
    def rel(path):
        return make_checkpoint.qwen_emo_dir(SimpleNamespace(raw={"qwen_emo_path": path}))

    assert rel("qwen0.6bemo4-merge/") == "qwen0.6bemo4-merge"
    assert rel(None) is None and rel("") is None
    for bad in ("/abs/qwen", "../qwen", "a/../../b"):
        with pytest.raises(ValueError, match="inside the checkpoint"):
            rel(bad)


# --- ids are checked ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    (lambda c, g: c.update(eos_token_id=TINY_REGULAR + 1), "eos_token_id"),
    (lambda c, g: c.update(vocab_size=TINY_REGULAR + 10), "vocab_size"),
    (lambda c, g: g.update(eos_token_id=[151645, 151643]), "eos_token_id"),
    (lambda c, g: g.update(eos_token_id=TINY_REGULAR), "eos_token_id"),  # an int must be <|im_end|>
    (lambda c, g: g.update(eos_token_id=[TINY_REGULAR]), "eos_token_id"),
    (lambda c, g: g.update(eos_token_id=True), "eos_token_id"),
    (lambda c, g: g.update(pad_token_id=0), "pad_token_id"),
    (lambda c, g: c.update(bos_token_id=12), "bos_token_id"),
])
def test_mismatched_ids_are_refused(change, match, tmp_path):
    config, generation = qwen_config("tiny")
    change(config, generation)
    with pytest.raises(ValueError, match=match):
        write_qwen_folder(tmp_path / "q", config, generation, 0)
    assert not (tmp_path / "q").exists()  # checked before anything is written


@pytest.mark.parametrize("eos", [TINY_REGULAR + 2, [TINY_REGULAR + 2], [TINY_REGULAR + 2, TINY_REGULAR]])
def test_eos_forms_accepted(eos):
    """generation_config.json's eos_token_id: <|im_end|> alone (the published form) or a list holding it."""
    from indextts2_onnx.export import qwen_folder

    config, generation = qwen_config("tiny")
    qwen_folder.check_token_ids(config, dict(generation, eos_token_id=eos), build_tokenizer(TINY_REGULAR, seed=0))


# --- read back with transformers ---------------------------------------------------------------------------


def test_transformers_loads_the_model(folder, hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.Qwen3ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32,
                                                                output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    ids = hf_tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids.input_ids.shape[1], qwen_config("tiny")[0]["vocab_size"])
    assert torch.isfinite(logits).all() and 0.3 < logits.std().item() < 3  # O(1), not degenerate


def test_weights_file(folder):
    config, _ = qwen_config("tiny")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(qwen_state_layout(config))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    for key, t in tensors.items():
        t = t.float()
        if t.ndim == 1:  # RMSNorm gains 1 + 0.1 N(0, 1)
            assert abs(t.mean().item() - 1) < 0.1 and 0.05 < t.std().item() < 0.2, key
        else:  # N(0, 1/in_features)
            assert t.std().item() == pytest.approx(1 / math.sqrt(t.shape[1]), rel=0.2), key


def test_special_ids(folder, hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    tok = hf_tokenizer
    assert tok.convert_tokens_to_ids("</think>") == TINY_REGULAR + 25
    assert tok.convert_tokens_to_ids([t for t, _ in ADDED_TOKENS]) == [TINY_REGULAR + i for i in range(26)]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == TINY_REGULAR + 2
    assert tok.pad_token_id == TINY_REGULAR and tok.bos_token is None
    assert set(tok.additional_special_tokens) == set(ADDITIONAL_SPECIAL_TOKENS)
    generation = transformers.GenerationConfig.from_pretrained(folder)
    assert generation.eos_token_id == tok.eos_token_id
    assert generation.bos_token_id == generation.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    # no sampling keys: transformers' defaults, i.e. greedy decoding
    assert generation.do_sample is False and generation.num_beams == 1
    assert generation.get_generation_mode() == transformers.generation.configuration_utils.GenerationMode.GREEDY_SEARCH


def test_chat_template(hf_tokenizer):
    assert hf_tokenizer.chat_template == CHAT_TEMPLATE  # read from chat_template.jinja
    render = hf_tokenizer.apply_chat_template
    assert render(MESSAGES, tokenize=False, add_generation_prompt=True, enable_thinking=False) == PROMPT
    no_think = PROMPT.removesuffix("<think>\n\n</think>\n\n")
    assert render(MESSAGES, tokenize=False, add_generation_prompt=True) == no_think
    assert render(MESSAGES, tokenize=False, add_generation_prompt=True, enable_thinking=True) == no_think
    assert render(MESSAGES, tokenize=False) == no_think.removesuffix("<|im_start|>assistant\n")


# --- read back without transformers ----------------------------------------------------------------------


def test_tokenizers_library_matches_transformers(folder, hf_tokenizer):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    assert ids == hf_tokenizer(PROMPT).input_ids
    assert ids[0] == TINY_REGULAR + 1 and ids.count(TINY_REGULAR + 2) == 2  # <|im_start|>, <|im_end|> x2
    assert TINY_REGULAR + 24 in ids and TINY_REGULAR + 25 in ids  # <think>, </think>
    assert tok.decode(ids, skip_special_tokens=False) == PROMPT
    for text in PLAIN_TEXTS:
        encoded = tok.encode(text).ids
        assert encoded == hf_tokenizer(text).input_ids, text
        assert tok.decode(encoded, skip_special_tokens=True) == text
    answer = tok.encode('</think>\n\n{"高兴": 1.0}<|im_end|>').ids
    assert tok.decode(answer, skip_special_tokens=True) == '</think>\n\n{"高兴": 1.0}'  # </think> is not special
    assert hf_tokenizer.decode(answer, skip_special_tokens=True) == '</think>\n\n{"高兴": 1.0}'


def test_tokenizer_json_is_qwen_shaped(folder):
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["normalizer"] == {"type": "NFC"}
    split, byte_level = data["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["behavior"] == "Isolated" and not split["invert"]
    assert split["pattern"]["Regex"].startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+")
    assert byte_level == data["decoder"] == data["post_processor"] == QWEN_BYTE_LEVEL
    model = data["model"]
    assert model["type"] == "BPE" and model["unk_token"] is None and not model["byte_fallback"]
    vocab, merges = model["vocab"], model["merges"]
    assert len(vocab) == TINY_REGULAR and sorted(vocab.values()) == list(range(TINY_REGULAR))
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:256] == byte_alphabet()  # the byte alphabet first, in Qwen's order ('!' = 0)
    assert len(merges) == TINY_REGULAR - 256
    assert all(isinstance(m, str) for m in merges)  # "a b", as Qwen's file (and every tokenizers release) has them
    for i, (a, b) in enumerate(m.split(" ") for m in merges):  # one token per merge, in merge order
        assert a in vocab and b in vocab and vocab[a + b] == 256 + i
    added = [(t["id"], t["content"], t["special"]) for t in data["added_tokens"]]
    assert added == [(TINY_REGULAR + i, t, special) for i, (t, special) in enumerate(ADDED_TOKENS)]
    assert not any(t["normalized"] or t["lstrip"] or t["rstrip"] for t in data["added_tokens"])


def test_official_tokenizer():
    """The official size: 151,643 regular tokens (~0.5 s), so every added id is Qwen3's."""
    tok = build_tokenizer(OFFICIAL_REGULAR, seed=0)
    assert tok.get_vocab_size(with_added_tokens=False) == OFFICIAL_REGULAR
    assert tok.get_vocab_size(with_added_tokens=True) == 151669
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")] == \
        [151643, 151644, 151645, 151667, 151668]
    ids = tok.encode(PROMPT).ids
    assert ids[0] == 151644 and ids.count(151645) == 2 and 151668 in ids
    assert tok.decode(ids, skip_special_tokens=False) == PROMPT
    for text in PLAIN_TEXTS:
        assert tok.decode(tok.encode(text).ids) == text
