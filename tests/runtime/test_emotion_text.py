"""Emotion from text on the tiny bundles: the runtime's prompt, decode loop and sampler against
transformers (the emotion model folder make_checkpoint writes, loaded by Qwen3ForCausalLM and
AutoTokenizer), and the mode through IndexTTS2, for both families.

Tolerances: step logits within 1e-4 of transformers' (fp32); ids, answers and audio exact.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from indextts2_onnx.runtime import IndexTTS2, InputError  # noqa: E402
from indextts2_onnx.runtime.audio import synthetic_voice  # noqa: E402
from indextts2_onnx.runtime.emotion_text import EmotionFromText, EmotionModel, clean_up_spaces  # noqa: E402
from indextts2_onnx.runtime.manifest import load_manifest  # noqa: E402

FOLDER = "qwen0.6bemo4-merge"
SYSTEM = "文本情感分类"
TEXTS = ["今天真开心，我们去公园吧！", "I am so tired and gloomy today.", "他突然大喊：你怎么能这样？",
         'mixed 中英 text with "quotes" and <|im_end|> inside']
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def hf(tiny_checkpoint):
    folder = tiny_checkpoint / FOLDER
    model = transformers.Qwen3ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle)


@pytest.fixture(scope="module")
def voice():
    return synthetic_voice(3.0, 22050), 22050


def _upstream_prompt(tokenizer, text: str) -> list[int]:
    """Upstream QwenEmotion.inference's prompt ids."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=False)
    return tokenizer([rendered], return_tensors="pt").input_ids[0].tolist()


QWEN3_SAMPLING = dict(do_sample=True, temperature=0.6, top_k=20, top_p=0.95)  # Qwen3's published defaults


def _greedy(model: EmotionModel) -> EmotionModel:
    return EmotionModel(model.graph, model.tokenizer, dataclasses.replace(model.entry, do_sample=False))


def _sampling(model: EmotionModel) -> EmotionModel:
    """The same model with a generation config that samples (as Qwen3's own generation_config.json)."""
    return EmotionModel(model.graph, model.tokenizer, dataclasses.replace(model.entry, **QWEN3_SAMPLING))


def test_manifest_records_what_the_folder_decides(tiny_bundle, tiny_checkpoint, hf):
    """The published generation_config.json names no sampling (greedy: transformers' defaults), one eos."""
    e = load_manifest(tiny_bundle).emotion_text
    _, tok = hf
    gen = json.loads((tiny_checkpoint / FOLDER / "generation_config.json").read_text())
    assert e.graph == "qwen_emotion" and e.source == FOLDER
    assert e.think_end_id == tok.convert_tokens_to_ids("</think>")
    assert e.eos_ids == [gen["eos_token_id"]] == [tok.convert_tokens_to_ids("<|im_end|>")]
    assert (e.do_sample, e.temperature, e.top_k, e.top_p, e.repetition_penalty) == (False, 1.0, 50, 1.0, 1.0)
    assert e.prompt_suffix.endswith("<think>\n\n</think>\n\n") and SYSTEM in e.prompt_prefix


@pytest.mark.parametrize("text", TEXTS)
def test_prompt_ids_equal_upstreams_chat_template(tts, hf, text):
    assert tts._emotion_model.prompt_ids(text) == _upstream_prompt(hf[1], text)


@pytest.mark.parametrize("text", TEXTS[:3])
def test_greedy_ids_and_logits_match_transformers(tts, hf, text):
    model, tok = hf
    ours = _greedy(tts._emotion_model)
    prompt = ours.prompt_ids(text)
    trace = []
    got = ours.generate(prompt, NEW_TOKENS, None, trace=trace)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=tok.eos_token_id, return_dict_in_generate=True, output_logits=True)
    want = out.sequences[0, len(prompt):].numpy()
    np.testing.assert_array_equal(got, want)
    diffs = [np.abs(t[0] - w[0].numpy()).max() for t, w in zip(trace, out.logits)]
    assert len(diffs) == len(want) and max(diffs) < 1e-4


def test_decoding_stops_at_any_end_id_as_transformers(tts, hf):
    """With an end id the random model reaches (its 6th greedy token), both stop there and keep it."""
    model, tok = hf
    ours = _greedy(tts._emotion_model)
    prompt = ours.prompt_ids(TEXTS[0])
    first = ours.generate(prompt, NEW_TOKENS, None)
    stop = int(first[5])
    ends = [ours.entry.eos_ids[0], stop]
    ours = EmotionModel(ours.graph, ours.tokenizer, dataclasses.replace(ours.entry, eos_ids=ends))
    got = ours.generate(prompt, NEW_TOKENS, None)
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                              eos_token_id=ends, pad_token_id=tok.eos_token_id)
    np.testing.assert_array_equal(got, want[0, len(prompt):].numpy())
    assert got[-1] == stop and got.size == int(np.flatnonzero(first == stop)[0]) + 1


def _inverse_cdf(uniforms):
    """A draw both sides share: the next uniform u picks the first index whose cumulative probability
    exceeds u (sampling one token without replacement)."""
    it = iter(uniforms)

    def pick(probs: np.ndarray) -> int:
        c = np.cumsum(np.asarray(probs, dtype=np.float64))
        return int(min(np.searchsorted(c, next(it) * c[-1], side="right"), c.size - 1))
    return pick


@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_with_the_same_draws_matches_transformers(tts, hf, monkeypatch, seed):
    """A generation config that samples (Qwen3's: temperature 0.6, top-k 20, top-p 0.95): fed the same
    uniforms, our sampler and transformers' generate() pick the same tokens."""
    model, tok = hf
    ours = _sampling(tts._emotion_model)
    prompt = ours.prompt_ids(TEXTS[1])
    uniforms = np.random.default_rng(seed).random(NEW_TOKENS)
    mine = _inverse_cdf(uniforms)
    got = ours.generate(prompt, NEW_TOKENS, None, draw=lambda p, k, rng: np.array([mine(p)]))
    theirs = _inverse_cdf(uniforms)
    monkeypatch.setattr(torch, "multinomial",
                        lambda probs, num_samples: torch.tensor([[theirs(probs[0].double().numpy())]]))
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, pad_token_id=tok.eos_token_id,
                              **QWEN3_SAMPLING)
    np.testing.assert_array_equal(got, want[0, len(prompt):].numpy())
    assert len(set(got.tolist())) > 3  # sampled, not one repeated token


def test_answer_is_the_text_after_the_last_think_end_without_specials(tts):
    model = tts._emotion_model
    ids = model.tokenizer.encode('<think>\nhmm</think>\n\n{"高兴": 0.5, "悲伤": 2}<|im_end|>').ids
    assert model.answer(np.array(ids)) == '\n\n{"高兴": 0.5, "悲伤": 2}'
    no_think = model.tokenizer.encode('{"愤怒": 0.25}<|im_end|>').ids
    assert model.answer(np.array(no_think)) == '{"愤怒": 0.25}'
    assert clean_up_spaces("I do n't know , ok ?") == "I don't know, ok?"


def test_emotion_from_text_parses_the_answer(tts, monkeypatch):
    """A model answer (ids injected in place of decoding) becomes the parsed, clamped, reordered vector."""
    model = tts._emotion_model
    answer = model.tokenizer.encode('</think>\n\n{"悲伤": 2.0, "高兴": 0.25}<|im_end|>').ids
    monkeypatch.setattr(model, "generate", lambda *a, **k: np.array(answer))
    got = tts.emotion_from_text("a sad day")
    assert isinstance(got, EmotionFromText)
    assert got.vector == (0.25, 0.0, 1.2, 0.0, 0.0, 0.0, 0.0, 0.0) and got.parsed and got.finished
    assert got.raw == '\n\n{"悲伤": 2.0, "高兴": 0.25}' and got.new_tokens == len(answer)
    got = tts.emotion_from_text("gloomy weather")  # the melancholic words swap sad and melancholic
    assert got.vector == (0.25, 0.0, 0.0, 0.0, 0.0, 1.2, 0.0, 0.0)
    garbage = model.tokenizer.encode("no idea").ids
    monkeypatch.setattr(model, "generate", lambda *a, **k: np.array(garbage))
    got = tts.emotion_from_text("what")
    assert got.vector == (0.0,) * 7 + (1.0,) and not got.parsed and not got.finished and got.raw == "no idea"


def test_emotion_from_text_on_the_random_model(tts):
    """The real loop: bounded by max_new_tokens, greedy (seeds change nothing) as the folder says, or
    reproducible by seed when its config samples; unparseable answers are calm 1.0."""
    a = tts.emotion_from_text(TEXTS[0], seed=3, max_new_tokens=12)
    others = {tts.emotion_from_text(TEXTS[0], seed=s, max_new_tokens=12) for s in (4, None)}
    assert others == {a} and a.new_tokens == 12 and not a.finished and len(a.vector) == 8
    assert a.prompt_tokens == len(tts._emotion_model.prompt_ids(TEXTS[0]))
    assert all(0.0 <= w <= 1.2 for w in a.vector) and max(a.vector) > 0
    sampling = _sampling(tts._emotion_model)
    b, c = (sampling(TEXTS[0], seed=3, max_new_tokens=12) for _ in range(2))
    assert b == c and len({sampling(TEXTS[0], seed=s, max_new_tokens=12).raw for s in (4, 5, 6)} | {b.raw}) > 1


def test_synthesize_with_emotion_text_is_the_vector_path(tts, voice):
    """use_emotion_text = the model's vector on the vector path (emotion_alpha applied); without
    emotion_text the spoken text is read; emotion audio is dropped, as upstream."""
    text, desc = "今天天气很好。", "有点难过，很疲惫"
    common = dict(seed=7, max_codes=12, steps=3, greedy=True)
    for alpha in (1.0, 0.6):
        em = tts.emotion_from_text(desc, seed=7)
        want = tts.synthesize(text, voice, emotion_vector=em.vector, emotion_alpha=alpha, **common)
        got = tts.synthesize(text, voice, use_emotion_text=True, emotion_text=desc, emotion_alpha=alpha,
                             emotion_audio=voice, **common)
        np.testing.assert_array_equal(got.audio, want.audio)
        assert got.metrics.emotion_text_s > 0 and want.metrics.emotion_text_s == 0
    own = tts.emotion_from_text(text, seed=7)
    want = tts.synthesize(text, voice, emotion_vector=own.vector, **common)
    got = tts.synthesize(text, voice, use_emotion_text=True, **common)
    np.testing.assert_array_equal(got.audio, want.audio)
    chunks = list(tts.stream(text, voice, use_emotion_text=True, emotion_text=desc, chunked=False, **common))
    em = tts.emotion_from_text(desc, seed=7)
    np.testing.assert_array_equal(chunks[0].audio,
                                  tts.synthesize(text, voice, emotion_vector=em.vector, **common).audio)


def test_bad_requests_are_one_input_error(tts, tiny_bundle, voice):
    with pytest.raises(InputError, match="use_emotion_text"):
        tts.synthesize("你好", voice, emotion_text="sad")
    with pytest.raises(InputError, match="emotion_text must be a non-empty string"):
        tts.synthesize("你好", voice, use_emotion_text=True, emotion_text="  ")
    with pytest.raises(InputError, match="emotion text has 2001 characters"):
        tts.emotion_from_text("悲" * 2001)
    with pytest.raises(InputError, match="max_new_tokens"):
        tts.emotion_from_text("sad", max_new_tokens=0)
    unloaded = IndexTTS2(tiny_bundle, emotion_text=False)
    assert not unloaded.has_emotion_text and tts.has_emotion_text
    with pytest.raises(InputError, match="emotion_text=True"):
        unloaded.synthesize("你好", voice, use_emotion_text=True)


def test_a_bundle_without_the_model_says_so(tiny_bundle, tmp_path, voice):
    """A bundle whose manifest has no emotion model (as exported from a checkpoint without the folder):
    the mode is refused with one line naming the cause, everything else works."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in ("qwen_emotion.onnx", "qwen_emotion.onnx.data", manifest["emotion_text"]["tokenizer"]):
        manifest["files"].pop(name)
        (copy / name).unlink()
    manifest["graphs"].pop("qwen_emotion")
    manifest["emotion_text"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    plain = IndexTTS2(copy)
    assert not plain.has_emotion_text
    with pytest.raises(InputError, match="has no emotion model"):
        plain.emotion_from_text("sad")
    with pytest.raises(InputError, match="has no emotion model"):
        plain.synthesize("你好", voice, use_emotion_text=True)
    assert plain.synthesize("你好", voice, seed=1, max_codes=8, steps=2).audio.size > 0


def test_the_2_5_family_has_the_mode(tiny25_bundle, voice):
    tts = IndexTTS2(tiny25_bundle)
    assert tts.has_emotion_text
    em = tts.emotion_from_text("a happy morning", seed=2, max_new_tokens=10)
    common = dict(seed=2, max_codes=10, steps=2, greedy=True, lang="en")
    want = tts.synthesize("Hello there.", voice, emotion_vector=em.vector, **common)
    got = tts.synthesize("Hello there.", voice, use_emotion_text=True, emotion_text="a happy morning", **common)
    np.testing.assert_array_equal(got.audio, want.audio)


def test_synth_and_info_commands(tts, tiny_bundle, tmp_path, capsys):
    """synth --emotion-text / --emotion-from-text write the audio the library gives for the vector they
    print; info names the model; the emotion flags exclude each other (usage error, exit 2)."""
    import soundfile as sf

    from indextts2_onnx.runtime.cli import main

    voice = tmp_path / "voice.wav"
    sf.write(voice, synthetic_voice(3.0, 22050), 22050)
    common = ["--bundle", str(tiny_bundle), "--speaker", str(voice), "--seed", "4", "--steps", "2",
              "--max-codes", "10", "--greedy"]
    text, desc = "今天天气很好。", "有点难过"
    for flags, emotion_text in ((["--emotion-text", desc], desc), (["--emotion-from-text"], text)):
        out = tmp_path / f"{flags[0]}.wav"
        assert main(["synth", "--text", text, "--out", str(out), *common, *flags]) == 0
        assert "emotion from text:" in capsys.readouterr().out
        em = tts.emotion_from_text(emotion_text, seed=4)
        want = tts.synthesize(text, str(voice), emotion_vector=em.vector, seed=4, steps=2, max_codes=10, greedy=True)
        from indextts2_onnx.runtime.audio import to_int16
        np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], to_int16(want.audio))
    assert main(["synth", "--text", text, "--out", str(tmp_path / "x.wav"), *common, "--emotion-text", desc,
                 "--emotion-vector", "0,0,0,0,0,0,0,1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()
    assert main(["info", str(tiny_bundle)]) == 0
    assert "emotion from text: qwen_emotion from qwen0.6bemo4-merge, 2 layers, greedy" in capsys.readouterr().out
