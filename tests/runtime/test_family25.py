"""IndexTTS-2.5 through the runtime: every stage against the torch reference, every language end to end.

The tiny 2.5 bundle (tests/conftest.py `tiny25_bundle`) is exported from a random-weight folder in upstream's
2.5 layout. Tolerances: stage outputs within 1e-4 of torch (fp32, the graphs' parity atol); greedy codes
equal token for token.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from indextts2_onnx.export import reference, torch_pipeline  # noqa: E402
from indextts2_onnx.runtime import IndexTTS2, InputError, SynthesisOptions  # noqa: E402
from indextts2_onnx.runtime.audio import synthetic_voice, write_wav  # noqa: E402
from indextts2_onnx.runtime.multilingual import LANGUAGES_25  # noqa: E402
from indextts2_onnx.runtime.s2mel import target_frames, target_frames_25  # noqa: E402

SR = 22050
TEXTS = {  # one sentence per language, with the features of its front end
    "en": "Hello world! It's 8:00 AM.",
    "zh": "今天天气很好，我们去<行|XING2>走吧！",
    "ja": "今日は良い天気です。",
    "es": "Hola, ¿cómo estás? Son 3 gatos.",
    "ar": "مرحبا بالعالم.",
    "zhen": "我们用 GPT 写代码。",
}


@pytest.fixture(scope="module")
def tts25(tiny25_bundle) -> IndexTTS2:
    return IndexTTS2(tiny25_bundle, threads=1)


@pytest.fixture(scope="module")
def ref25(tiny25_checkpoint, one_thread) -> torch_pipeline.TorchReference:
    return torch_pipeline.TorchReference.load(tiny25_checkpoint)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice25") / "voice.wav"
    write_wav(path, synthetic_voice(3.0, 24000), 24000)
    return path


@pytest.fixture(scope="module")
def pair(tts25, ref25, voice):
    """The same voice prepared by the runtime and by torch."""
    return tts25.prepare_speaker(voice), torch_pipeline.prepare_speaker(ref25, voice)


def test_the_bundle_is_a_2_5_bundle_with_its_own_graph_set(tts25):
    assert tts25.manifest.family == "2.5"
    assert tts25.family.name == "2.5" and not tts25.family.latent_pass
    assert set(tts25.manifest.graphs) == {"gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "campplus",
                                          "length_regulator", "codec_decoder", "dit", "bigvgan",
                                          "qwen_emotion"}  # + the emotion model, which 2.0 bundles have too
    assert tts25.manifest.gpt.condition_num_latent == 1


def test_the_prompt_condition_regulates_the_unquantised_features(pair):
    spk, tspk = pair
    # 2.5 conditions the DiT's prompt on the w2v-BERT features themselves (no codec quantizer)
    for name in ("semantic", "emotion_semantic", "style", "ref_mel", "prompt_condition"):
        np.testing.assert_allclose(getattr(spk, name), getattr(tspk, name).numpy(), atol=1e-4, err_msg=name)


def test_the_prefix_is_the_projected_style_plus_the_emotion_vector_then_two_zero_rows(tts25, ref25, pair):
    spk, tspk = pair
    emovec = tts25.emotion_vector(spk)
    prefix = tts25._prefix(spk, emovec, None)  # (1, 3, d)
    want = ref25.models.gpt.campplus_prefix(tspk.style, torch.from_numpy(emovec)).detach().numpy()
    assert prefix.shape == (1, 3, tts25.manifest.gpt.model_dim)
    np.testing.assert_allclose(prefix, want, atol=1e-5)
    assert not prefix[:, 1:].any()


@pytest.mark.parametrize("lang", ["en", "zh", "ja"])
def test_greedy_codes_equal_the_torch_reference_of_the_2_5_prefix_rules(tts25, ref25, pair, lang):
    """The KV-cache decode loop against a cache-free torch loop built from upstream's 2.5 rules: campplus
    prefix, language row on every text position, ids 0 and 1 dropped (a `!` is in the en text)."""
    spk, tspk = pair
    ids = tts25.tokenize(TEXTS[lang], lang=lang)[0]
    if lang == "en":
        assert 0 in ids  # "!" is id 0 in this vocabulary: upstream drops it from the GPT input
    emovec = tts25.emotion_vector(spk)
    codes, latent = tts25.generate_codes(ids, spk, emovec, greedy=True, max_codes=24, lang=lang)
    assert latent is None  # 2.5 has no latent pass
    gpt = ref25.models.gpt
    lang_id = tts25._tokenizer.language_id(lang)
    emb, seen = reference.campplus_decode_prefix(gpt, tspk.style, torch.from_numpy(emovec), ids, lang_id)
    want = reference.greedy_from(gpt, emb, seen, 24)
    if want and want[-1] == gpt.cfg.stop_mel_token:
        want = want[:-1]
    assert codes.tolist() == want
    assert len(want) > 0


def test_the_language_changes_the_codes(tts25, pair):
    """The language row is really added: the same ids under another language decode differently."""
    spk, _ = pair
    ids = tts25.tokenize(TEXTS["en"], lang="en")[0]
    emovec = tts25.emotion_vector(spk)
    en = tts25.generate_codes(ids, spk, emovec, greedy=True, max_codes=16, min_codes=16, lang="en")[0]
    zh = tts25.generate_codes(ids, spk, emovec, greedy=True, max_codes=16, min_codes=16, lang="zh")[0]
    assert en.shape == zh.shape == (16,)
    assert not np.array_equal(en, zh)


@pytest.mark.parametrize("factor", [1.0, 0.5, 1.37])
def test_decode_mel_equals_torch_codec_decoder_regulator_and_cfm(tts25, ref25, pair, factor):
    spk, tspk = pair
    codes = np.random.default_rng(3).integers(0, tts25.manifest.acoustic.codebook_size, 21)
    mel = tts25.decode_mel(codes, None, spk, steps=3, seed=7, duration_factor=factor)
    want = torch_pipeline.decode_mel(ref25, codes, None, tspk, 3, 0.7, 7, duration_factor=factor).numpy()
    assert mel.shape == (1, 80, target_frames_25(21, factor)) == want.shape
    np.testing.assert_allclose(mel, want, atol=1e-4)


def test_target_frames_follow_upstreams_float64_rule():
    """int(2N * 1.72 * df) in Python floats, left to right: 2.0's float32 int(N * 1.72) rounds differently."""
    assert target_frames_25(100) == 344 and target_frames_25(100, 0.5) == 172
    assert target_frames_25(1500, 2.0) == 10320
    # a float32 product rounds differently at some lengths: N = 375 at df 0.7 (and 1.3)
    assert target_frames_25(375, 0.7) == int(2 * 375 * 1.72 * 0.7) == 902
    assert int(np.float32(750) * np.float32(1.72) * np.float32(0.7)) == 903
    assert target_frames_25(875, 1.3) == int(2 * 875 * 1.72 * 1.3)
    assert target_frames(50) == int(np.float32(50) * np.float32(1.72))


@pytest.mark.parametrize("lang", LANGUAGES_25)
def test_every_language_synthesizes_end_to_end(tts25, voice, lang):
    result = tts25.synthesize(TEXTS[lang], voice, SynthesisOptions(lang=lang, seed=1, steps=2, max_codes=12,
                                                                   min_codes=6, preset="fast"))
    assert len(tts25.tokenize(TEXTS[lang], lang=lang)) == 1  # one segment: no 200 ms gaps in the length
    assert result.sample_rate == SR
    assert result.audio.dtype == np.float32 and np.all(np.isfinite(result.audio))
    assert np.abs(result.audio).max() > 0
    assert 6 <= result.metrics.codes <= 12
    assert result.audio.shape[0] == target_frames_25(result.metrics.codes) * 256


def test_the_duration_factor_stretches_the_audio_by_its_rule(tts25, voice):
    opts = SynthesisOptions(lang="en", seed=2, steps=2, max_codes=10, min_codes=10, preset="fast")
    one = tts25.synthesize("Hello there.", voice, opts)
    slow = tts25.synthesize("Hello there.", voice, opts.with_overrides(duration_factor=1.5))
    assert one.metrics.codes == slow.metrics.codes == 10
    assert one.audio.shape[0] == target_frames_25(10) * 256
    assert slow.audio.shape[0] == target_frames_25(10, 1.5) * 256


def test_stream_with_one_chunk_equals_synthesize_and_chunks_add_up(tts25, voice):
    opts = SynthesisOptions(lang="zh", seed=4, steps=2, max_codes=30, min_codes=30, preset="fast")
    whole = tts25.synthesize("今天天气很好。", voice, opts)
    one = list(tts25.stream("今天天气很好。", voice, opts.with_overrides(first_chunk_codes=40, chunk_codes=40,
                                                                         overlap_codes=0)))
    np.testing.assert_array_equal(np.concatenate([c.audio for c in one]), whole.audio)
    chunks = list(tts25.stream("今天天气很好。", voice, opts.with_overrides(first_chunk_codes=8, chunk_codes=16,
                                                                            overlap_codes=2)))
    assert len(chunks) > 1 and chunks[-1].final
    assert sum(c.audio.shape[0] for c in chunks) == whole.audio.shape[0]


def test_batched_decoding_gives_the_codes_of_the_local_loop(tts25, pair):
    spk, _ = pair
    emovec = tts25.emotion_vector(spk)
    segs = [tts25.tokenize(TEXTS[lang], lang=lang)[0] for lang in ("en", "ja", "ar")]
    langs = ("en", "ja", "ar")
    local = [tts25.generate_codes(ids, spk, emovec, max_codes=15, seed=i, lang=lang)[0]
             for i, (ids, lang) in enumerate(zip(segs, langs))]
    gen = tts25.batched_generator()
    requests = [tts25.code_request(ids, spk, emovec, tts25_options(), 15, i, lang=lang)
                for i, (ids, lang) in enumerate(zip(segs, langs))]
    got = gen.run(requests)
    for want, have in zip(local, got):
        np.testing.assert_array_equal(have, want)


def tts25_options():
    from indextts2_onnx.runtime import SamplingOptions

    return SamplingOptions()


def test_2_5_errors_name_the_option_and_the_fix(tts25, pair, voice):
    spk, _ = pair
    with pytest.raises(InputError, match="lang: an IndexTTS-2.5 bundle needs the text's language"):
        tts25.synthesize("Hello.", voice)
    with pytest.raises(InputError, match="lang: 'fr'"):
        tts25.tokenize("Bonjour.", lang="fr")
    with pytest.raises(InputError, match="latent: an IndexTTS-2.5 bundle has no latent pass"):
        tts25.decode_mel(np.arange(5), np.zeros((1, 5, tts25.manifest.gpt.model_dim)), spk)
    with pytest.raises(InputError, match="duration_factor"):
        SynthesisOptions(lang="en", duration_factor=3.0)


def test_2_0_bundles_refuse_2_5_options(tiny_bundle, voice):
    tts = IndexTTS2(tiny_bundle, threads=1)
    assert tts.family.name == "2.0"
    with pytest.raises(InputError, match="lang: 'ja' is not a language of this IndexTTS2 \\(2.0\\) bundle"):
        tts.tokenize("今日は。", lang="ja")
    with pytest.raises(InputError, match="duration_factor: 1.5 needs an IndexTTS-2.5 bundle"):
        tts.synthesize("Hello.", voice, duration_factor=1.5)
    assert tts.tokenize("Hello.", lang="en") == tts.tokenize("Hello.")
