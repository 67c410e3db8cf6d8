"""Text to speech through the whole runtime: prepare_speaker, stream, synthesize and the synth command."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from indextts2_onnx.runtime import GenerationError, IndexTTS2, InputError, SynthesisOptions
from indextts2_onnx.runtime.audio import (emotion_waveform, kaldi_fbank, log_mel, seamless_features,
                                          speaker_waveforms)
from indextts2_onnx.runtime.cli import main
from indextts2_onnx.runtime.pipeline import load_bundle, segment_seeds

TEXT = "HELLO THERE, MY FRIEND. THIS IS A SMALL TEST OF THE WHOLE PIPELINE, WITH SEVERAL SEGMENTS."


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    """A 3 s stereo 44.1 kHz voice-like prompt (harmonics under an envelope, a little noise)."""
    sr, n = 44100, 44100 * 3
    t = np.arange(n) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = 0.2 * x + 0.01 * np.random.default_rng(0).standard_normal(n)
    path = tmp_path_factory.mktemp("voice") / "voice.wav"
    sf.write(path, np.stack([x, 0.8 * x], axis=1).astype(np.float32), sr)
    return path


def test_prepare_speaker_runs_the_front_end_then_the_encoders(tts, voice):
    spk = tts.prepare_speaker(voice)
    data, sr = sf.read(voice, dtype="float32")
    mono = data.mean(axis=1)  # librosa-style mixdown
    a22, a16 = speaker_waveforms(mono, sr)
    feats, mask = seamless_features(a16)
    emo, emo_mask = seamless_features(emotion_waveform(mono, sr))
    filterbank = np.load(tts.bundle / "mel_filterbank.npy")
    want = tts.speaker_from_features(feats, mask, emo, emo_mask, kaldi_fbank(a16), log_mel(a22, filterbank))
    for name in ("semantic", "emotion_semantic", "style", "ref_mel", "prompt_condition"):
        np.testing.assert_array_equal(getattr(spk, name), getattr(want, name))
    # upstream's shapes for a 3 s prompt (architecture §5): 149 semantic frames, 258 mel frames
    assert spk.semantic.shape[1] == 149 and spk.ref_mel.shape[2] == 258
    assert tts.prepare_speaker((mono, sr)).semantic.shape == spk.semantic.shape


def test_stream_yields_one_chunk_per_segment_and_synthesize_joins_them(tts, voice):
    segments = tts.tokenize(TEXT, max_tokens_per_segment=20)
    assert len(segments) >= 2
    chunks = [tuple(c) for c in tts.stream(TEXT, voice, seed=3, steps=3, max_tokens_per_segment=20,
                                           chunked=False)]  # 0.x form, one chunk per segment
    assert len(chunks) == len(segments)
    assert all(sr == 22050 and w.dtype == np.float32 and w.ndim == 1 for sr, w in chunks)
    result = tts.synthesize(TEXT, voice, seed=3, steps=3, max_tokens_per_segment=20)
    sr, wav = result
    gap = np.zeros(4410, np.float32)  # 200 ms at 22050 Hz, as upstream: it opens every later segment's chunk
    assert all(np.array_equal(w[:gap.size], gap) for _, w in chunks[1:])
    np.testing.assert_array_equal(wav, np.concatenate([w for _, w in chunks]))  # seeded: the same audio
    m = result.metrics
    assert m.rtf > 0 and m.audio_s == pytest.approx((wav.size - gap.size * (len(chunks) - 1)) / sr)
    assert np.abs(wav).max() <= 1.0


def test_stream_computes_the_speaker_latent_once(tiny_bundle, voice):
    """Every segment of a text shares the speaker latents: the conditioning graph runs once per Speaker."""
    manifest, graphs, tables = load_bundle(tiny_bundle)
    calls = []
    graph = graphs["gpt_speaker_conditioning"]
    run = graph.run
    graph.run = lambda feeds: calls.append(1) or run(feeds)
    tts = IndexTTS2.from_graphs(manifest, graphs, tables)
    spk = tts.prepare_speaker(voice)
    chunks = list(tts.stream(TEXT, spk, seed=3, steps=2, max_tokens_per_segment=20))
    assert len(chunks) >= 2 and len(calls) == 1
    other = tts.prepare_speaker((np.roll(sf.read(voice, dtype="float32")[0][:, 0], 5000), 44100))
    emovec = tts.emotion_vector(other)
    codes_other, _ = tts.generate_codes([5, 6], other, emovec, greedy=True, max_codes=10)
    assert len(calls) == 2  # a new Speaker gets its own latents
    fresh = IndexTTS2(tiny_bundle).generate_codes([5, 6], other, emovec, greedy=True, max_codes=10)[0]
    assert codes_other.tolist() == fresh.tolist()


def test_emotion_prompt_from_a_file_changes_the_result(tts, voice, tmp_path):
    other = tmp_path / "other.flac"
    sf.write(other, 0.1 * np.random.default_rng(1).standard_normal(16000 * 2), 16000)
    spk = tts.prepare_speaker(voice)
    a = tts.emotion_vector(spk, emotion_audio=other, alpha=0.8)
    b = tts.emotion_vector(spk, emotion_audio=tts.prepare_speaker(other), alpha=0.8)
    np.testing.assert_allclose(a, b, atol=1e-6)  # a file and a prepared Speaker give the same vector
    assert not np.allclose(a, tts.emotion_vector(spk))


def test_synth_command_writes_a_wav_and_fails_cleanly(tts, voice, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert main(["synth", "--bundle", str(tts.bundle), "--text", TEXT, "--speaker", str(voice), "--out", str(out),
                 "--seed", "0", "--steps", "3", "--emotion-vector", "0,0,0,0,0,0,0,0.5"]) == 0
    info = sf.info(out)
    assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.frames > 0
    assert "RTF" in capsys.readouterr().out
    bad = tmp_path / "bad.wav"
    assert main(["synth", "--bundle", str(tts.bundle), "--text", "   ", "--speaker", str(voice), "--out", str(bad)]) == 1
    assert "text is empty" in capsys.readouterr().err
    assert main(["synth", "--bundle", str(tts.bundle), "--text", "HI", "--speaker", str(tmp_path / "nope.wav"),
                 "--out", str(bad)]) == 1
    assert "audio file not found" in capsys.readouterr().err
    assert main(["synth", "--bundle", str(tts.bundle), "--text", "HI", "--speaker", str(voice), "--out", str(bad),
                 "--emotion-vector", "1,2"]) == 1
    assert "emotion vector" in capsys.readouterr().err
    assert not bad.exists() and not list(tmp_path.glob("*.part"))


def test_bad_preset_is_refused(tts, voice):
    with pytest.raises(InputError, match="preset 'turbo'"):
        tts.synthesize("HI", voice, preset="turbo")


def test_silent_prompt_is_refused(tts, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(22050, np.float32), 22050)
    with pytest.raises(InputError, match=r"speaker audio .*silent\.wav: the audio is silent"):
        tts.prepare_speaker(silent)
    with pytest.raises(InputError, match=r"emotion audio .*silent\.wav: the audio is silent"):
        tts.emotion_vector(tts.prepare_speaker((np.sin(np.arange(22050) * 0.05), 22050)), emotion_audio=silent)


def test_text_size_limit_is_configurable(tiny_bundle, voice):
    small = IndexTTS2(tiny_bundle, max_text_chars=20)
    with pytest.raises(InputError, match="20"):
        small.synthesize("HELLO THERE, THIS TEXT IS LONGER THAN TWENTY CHARACTERS.", voice)
    assert small.tokenize("HELLO THERE.")  # within the limit


def test_synthesize_seeds_each_segment_with_segment_seeds(tts, voice):
    """Segment i's codes and CFM noise come from row i of segment_seeds(seed, segments), the public function
    other pipelines (the benchmark's torch reference) use to reproduce a call: the stage methods seeded
    with those rows give synthesize's audio."""
    segments = tts.tokenize(TEXT, max_tokens_per_segment=20)
    seeds = segment_seeds(11, len(segments))
    assert seeds.shape == (len(segments), 2) and np.array_equal(seeds, segment_seeds(11, len(segments)))
    assert not np.array_equal(seeds, segment_seeds(12, len(segments)))
    result = tts.synthesize(TEXT, voice, seed=11, steps=2, max_codes=16, max_tokens_per_segment=20)
    spk = tts.prepare_speaker(voice)
    emovec = tts.emotion_vector(spk)
    gap = np.zeros(int(0.2 * result.sample_rate), np.float32)
    pieces = []
    for i, (ids, (code_seed, noise_seed)) in enumerate(zip(segments, seeds)):
        codes, latent = tts.generate_codes(ids, spk, emovec, max_codes=16, seed=int(code_seed))
        wav = tts.vocode(tts.decode_mel(codes, latent, spk, steps=2, seed=int(noise_seed)))
        pieces += [gap, wav] if i else [wav]
    np.testing.assert_allclose(result.audio, np.concatenate(pieces), atol=1e-6)


def force_code_from_step_2(decoder, code: int) -> None:
    """Make the GPT decoder graph put (almost) all weight on `code` in the logits of every one-position call
    on a non-empty KV cache: the decode loop's steps 2, 3, ... (step 1's logits come from the prefill).
    The latent pass's calls are changed too, but it reads only the hidden states."""
    run = decoder.run

    def forced(feeds):
        out = run(feeds)
        past = next(v for name, v in feeds.items() if name != "inputs_embeds")  # (rows, heads, past, head_dim)
        if past.shape[2] > 0 and feeds["inputs_embeds"].shape[1] == 1:
            logits = np.array(out[0])
            logits[:, code] = 1e4
            out = [logits, *out[1:]]
        return out

    decoder.run = forced


def test_a_generated_code_outside_the_codebook_is_a_generation_error(tiny_concat_bundle, voice):
    """The GPT's start mel token has no codec row: drawn (random weights can), it stops synthesize and the
    chunked stream with a GenerationError naming the code, its step and the codebook size, before the
    mel decoder (an InputError about `codes`) or ONNX Runtime (an index error) sees it."""
    manifest, graphs, tables = load_bundle(tiny_concat_bundle)  # the wrapper below edits Graph.run's logits
    start, size = manifest.gpt.start_mel_token, manifest.acoustic.codebook_size
    assert start >= size
    force_code_from_step_2(graphs["gpt_decoder"], start)
    tts = IndexTTS2.from_graphs(manifest, graphs, tables)
    want = rf"code {start} at step 2, but the codec has only {size} codes.*random weights\? try another seed"
    options = SynthesisOptions(greedy=True, max_codes=12, min_codes=12, steps=2, seed=0)
    with pytest.raises(GenerationError, match=want):
        tts.synthesize("HELLO THERE.", voice, options)
    with pytest.raises(GenerationError, match=want):
        list(tts.stream("HELLO THERE.", voice, options))  # chunked: the check runs on every run of codes
