"""The emotion model folder read into the manifest's emotion_text: generation settings over transformers'
defaults, the prompt split from the chat template, refusals with the file named; the manifest field's
strict reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from indextts2_onnx.export.checkpoint import CheckpointError  # noqa: E402
from indextts2_onnx.export.emotion_text import generation_settings, prompt_parts, render_chat  # noqa: E402
from indextts2_onnx.runtime.errors import BundleError  # noqa: E402
from indextts2_onnx.runtime.manifest import Manifest  # noqa: E402

from conftest import REPO  # noqa: E402

WHERE = Path("qwen/generation_config.json")


def test_generation_settings_take_transformers_defaults_where_the_file_is_silent():
    got = generation_settings({"eos_token_id": 7}, {}, WHERE)
    assert got == {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0,
                   "eos_ids": [7]}
    qwen = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "eos_token_id": [5, 3],
            "bos_token_id": 3, "pad_token_id": 3, "transformers_version": "4.51.0", "max_length": 20}
    got = generation_settings(qwen, {"eos_token_id": 9}, WHERE)
    assert (got["do_sample"], got["temperature"], got["top_k"], got["top_p"], got["eos_ids"]) == (True, 0.6, 20, 0.95, [5, 3])
    assert generation_settings({}, {"eos_token_id": 9}, WHERE)["eos_ids"] == [9]  # config.json's when silent


@pytest.mark.parametrize("gen, message", [
    ({"num_beams": 4, "eos_token_id": 1}, r"num_beams=4"),
    ({"min_p": 0.1, "eos_token_id": 1}, r"min_p=0.1"),
    ({"no_repeat_ngram_size": 3, "eos_token_id": 1}, r"no_repeat_ngram_size=3"),
    ({"mystery_knob": 1, "eos_token_id": 1}, r"mystery_knob \(unknown\)"),
    ({"temperature": 0, "eos_token_id": 1}, r"temperature=0 is out of range"),
    ({"top_p": 1.5, "eos_token_id": 1}, r"top_p=1.5 is out of range"),
    ({}, r"no eos_token_id"),
])
def test_generation_settings_refuse_what_the_sampler_cannot_do(gen, message):
    with pytest.raises(CheckpointError, match=message) as e:
        generation_settings(gen, {}, WHERE)
    assert str(WHERE) in str(e.value)
    # inert values of unsupported knobs are fine
    assert generation_settings({"num_beams": 1, "min_p": None, "eos_token_id": 1}, {}, WHERE)["eos_ids"] == [1]


TEMPLATE = ("{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
            "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
            "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
            "{%- endif %}{%- endif %}")


def test_prompt_parts_split_the_rendered_template_where_the_text_goes():
    prefix, suffix = prompt_parts({"chat_template": TEMPLATE, "eos_token": "<|im_end|>"}, WHERE)
    assert prefix == "<|im_start|>system\n文本情感分类<|im_end|>\n<|im_start|>user\n"
    assert suffix == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    named = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": TEMPLATE}]
    assert prompt_parts({"chat_template": named}, WHERE) == (prefix, suffix)


@pytest.mark.parametrize("template, message", [
    (None, "no chat_template"),
    ("{{ messages[1].content }} {{ messages[1].content }}", "verbatim once"),
    ("{{ messages[1].content | upper }}", "verbatim once"),
    ("{% if %}", "does not render"),
    ("{{ raise_exception('no system role') }}", "no system role"),
])
def test_prompt_parts_refuse_templates_without_a_fixed_split(template, message):
    with pytest.raises(CheckpointError, match=message):
        prompt_parts({"chat_template": template} if template else {}, WHERE)


def test_render_chat_has_transformers_helpers():
    out = render_chat("{{ messages | tojson }}|{{ eos_token }}", [{"role": "user", "content": "悲"}],
                      {"eos_token": "<e>"})
    assert out == '[{"role": "user", "content": "悲"}]|<e>'


def _manifest(emotion) -> dict:
    dims = {"model_dim": 8, "heads": 2, "layers": 1, "head_dim": 4, "semantic_dim": 8, "condition_num_latent": 2,
            "number_text_tokens": 10, "number_mel_codes": 10, "start_mel_token": 8, "stop_mel_token": 9,
            "start_text_token": 0, "stop_text_token": 1, "max_mel_tokens": 10, "max_text_tokens": 10}
    acoustic = {"sample_rate": 22050, "hop_length": 256, "n_mels": 80, "semantic_dim": 8, "content_dim": 8,
                "style_dim": 8, "codebook_size": 10, "dit_min_frames": 0}
    return {"format_version": "1.5", "gpt": dims, "acoustic": acoustic, "emo_num": [1], "graphs": {}, "files": {},
            "tables": {}, **({} if emotion is ... else {"emotion_text": emotion})}


EMOTION = {"graph": "qwen_emotion", "tokenizer": "t.json", "source": "q", "prompt_prefix": "a", "prompt_suffix": "b",
           "think_end_id": 5, "eos_ids": [1, 2], "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
           "repetition_penalty": 1, "clean_up_tokenization_spaces": False, "vocab_size": 10, "layers": 2,
           "kv_heads": 1, "head_dim": 4, "max_positions": 64}


def test_manifest_reads_emotion_text_strictly():
    assert Manifest.from_dict(_manifest(...)).emotion_text is None  # format 1.4 and older: no field
    assert Manifest.from_dict(_manifest(None)).emotion_text is None
    e = Manifest.from_dict(_manifest(EMOTION)).emotion_text
    assert (e.temperature, e.repetition_penalty, e.do_sample, e.eos_ids) == (0.6, 1.0, True, [1, 2])
    assert json.loads(json.dumps(Manifest.from_dict(_manifest(EMOTION)).to_dict()))["emotion_text"]["top_k"] == 20
    for key, value, what in [("do_sample", 1, "true or false"), ("temperature", "hot", "a finite number"),
                             ("temperature", 0, "a positive number"), ("eos_ids", [], "a non-empty list"),
                             ("top_p", True, "a finite number")]:
        with pytest.raises(BundleError, match=f"emotion_text.{key} must be {what}"):
            Manifest.from_dict(_manifest({**EMOTION, key: value}))
    with pytest.raises(BundleError, match=r"unknown keys \['extra'\]"):
        Manifest.from_dict(_manifest({**EMOTION, "extra": 1}))


def test_the_template_file_wins_over_the_configs_template(tmp_path):
    """As transformers' from_pretrained: chat_template.jinja, where it exists, replaces tokenizer_config.json's
    chat_template (upstream's published folder keeps its template only there)."""
    import shutil

    from indextts2_onnx.export.emotion_text import read_emotion_folder

    src = REPO / "configs" / "tiny"
    folder = tmp_path / "qwen"
    folder.mkdir()
    shutil.copyfile(src / "qwen_emo_config.json", folder / "config.json")
    shutil.copyfile(src / "qwen_generation_config.json", folder / "generation_config.json")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ 'old' }}"}))
    assert read_emotion_folder(folder).tokenizer_config["chat_template"] == "{{ 'old' }}"
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    assert read_emotion_folder(folder).tokenizer_config["chat_template"] == TEMPLATE
    with pytest.raises(CheckpointError, match="no such emotion model folder"):
        read_emotion_folder(tmp_path / "missing")
