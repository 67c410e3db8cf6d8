"""The 1.0 API around the stage methods: SynthesisOptions in, AudioChunk / SynthesisResult out, metrics per
call, 0.x call forms, one instance shared by threads, and a stream that stops when its consumer does."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from indextts2_onnx.runtime import AudioChunk, IndexTTS2, InputError, SynthesisOptions, SynthesisResult
from indextts2_onnx.runtime.audio import synthetic_voice
from indextts2_onnx.runtime.presets import load_preset
from indextts2_onnx.runtime.pipeline import load_bundle
from indextts2_onnx.runtime.s2mel import target_frames

TEXT = "HELLO THERE, MY FRIEND. THIS IS A TEST."  # two segments at 20 tokens per segment
SHORT = "HELLO THERE."
FAST = dict(steps=2, max_tokens_per_segment=20)  # toy work: two flow steps, short segments


class Counting:
    """A graph that counts its runs (list.append is atomic, so threads may share it)."""

    def __init__(self, graph):
        self.graph, self.runs = graph, []

    def run(self, feeds):
        self.runs.append(1)
        return self.graph.run(feeds)

    def run_bound(self, binding):  # the shared-buffer decoder's calls
        self.runs.append(1)
        return self.graph.run_bound(binding)

    def __getattr__(self, name):
        return getattr(self.graph, name)


@pytest.fixture(scope="module")
def graphs(tiny_bundle):
    manifest, graphs, tables = load_bundle(tiny_bundle, threads=1)
    graphs = {**graphs, "gpt_decoder": Counting(graphs["gpt_decoder"]), "bigvgan": Counting(graphs["bigvgan"])}
    return manifest, graphs, tables


@pytest.fixture(scope="module")
def tts(graphs):
    return IndexTTS2.from_graphs(*graphs)


@pytest.fixture(scope="module")
def spk(tts):
    return tts.prepare_speaker((synthetic_voice(3.0, 22050), 22050))


@pytest.fixture(scope="module")
def emo(tts):
    return tts.prepare_speaker((synthetic_voice(2.0, 16000)[::-1].copy(), 16000))


# ---------------------------------------------------------------------------------- options


def test_defaults_are_the_default_preset_and_upstream():
    o = SynthesisOptions().resolve(max_mel_tokens=1815)
    upstream = dict(num_beams=3, top_k=30, top_p=0.8, temperature=0.8, repetition_penalty=10.0, steps=25,
                    cfg_rate=0.7, max_codes=1500)
    assert {k: getattr(o, k) for k in upstream} == upstream
    preset = load_preset("default")
    assert all(getattr(o, f.name) == getattr(preset, f.name) for f in dataclasses.fields(preset))
    assert SynthesisOptions().resolve(max_mel_tokens=400).max_codes == 400  # lowered to the checkpoint's table
    assert o.greedy is False and o.min_codes == 0 and o.seed is None and o.emotion_alpha == 1.0
    assert (o.first_chunk_codes, o.chunk_codes, o.overlap_codes, o.max_tokens_per_segment) == (25, 100, 10, 120)
    assert o.chunked is True  # stream() streams chunks unless told otherwise


def test_overrides_and_presets():
    base = SynthesisOptions(preset="fast", seed=1)
    o = base.with_overrides(steps=4, emotion_vector=[0, 0, 0, 0, 0, 0, 0, 0.5])
    assert (o.steps, o.seed, o.preset, base.steps) == (4, 1, "fast", None)
    assert o.emotion_vector == (0, 0, 0, 0, 0, 0, 0, 0.5)  # stored as a tuple: the value stays frozen
    r = o.resolve(1815)
    assert (r.num_beams, r.steps) == (load_preset("fast").num_beams, 4)
    assert o.sampling().num_beams == 1 and SynthesisOptions(greedy=True).sampling().num_beams == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 3
    with pytest.raises(TypeError, match="turbo"):
        o.with_overrides(turbo=True)


@pytest.mark.parametrize("bad, words", [
    (dict(steps=0), "steps=0"), (dict(num_beams=17), "num_beams=17"), (dict(top_p=0.0), "top_p=0.0"),
    (dict(temperature=float("nan")), "temperature=nan"), (dict(seed=-1), "seed=-1"),
    (dict(preset="turbo"), "preset 'turbo'"), (dict(greedy="yes"), "greedy must be a bool"),
    (dict(emotion_alpha=float("inf")), "emotion_alpha=inf"), (dict(emotion_vector=[1, 2]), "emotion vector"),
    (dict(max_codes=10, min_codes=11), "min_codes=11"), (dict(max_codes=0), "max_codes=0"),
    (dict(chunk_codes=0), "chunk_codes=0"), (dict(max_tokens_per_segment=0), "max_tokens_per_segment=0"),
])
def test_invalid_options_are_refused_when_built(bad, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        SynthesisOptions(**bad)
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        SynthesisOptions().with_overrides(**bad)


# ---------------------------------------------------------------------------------- results


def test_stream_chunks_and_synthesize_result(tts, spk):
    assert len(tts.tokenize(TEXT, 20)) == 2  # the checks below rely on a 2-segment text
    chunks = list(tts.stream(TEXT, spk, SynthesisOptions(seed=3, chunked=False, **FAST)))  # one per segment
    assert all(isinstance(c, AudioChunk) for c in chunks)
    assert [(c.index, c.segment, c.final) for c in chunks] == [(0, 0, False), (1, 1, True)]
    assert all(c.sample_rate == 22050 and c.audio.dtype == np.float32 and c.audio.ndim == 1 for c in chunks)
    result = tts.synthesize(TEXT, spk, SynthesisOptions(seed=3, **FAST))
    assert isinstance(result, SynthesisResult)
    sr, wav = result  # 0.x callers unpack it
    assert sr == result.sample_rate and wav is result.audio
    gap = np.zeros(int(0.2 * sr), np.float32)
    np.testing.assert_array_equal(chunks[1].audio[:gap.size], gap)  # a later segment starts with the gap
    np.testing.assert_array_equal(wav, np.concatenate([chunks[0].audio, chunks[1].audio]))
    m, first = result.metrics, chunks[0].metrics
    assert m.codes == chunks[-1].metrics.codes > first.codes > 0  # running totals: the last chunk's are the call's
    assert 0 < m.ttfa_s <= m.total_s and first.ttfa_s == first.total_s
    assert m.audio_s == pytest.approx((wav.size - gap.size) / sr) and m.rtf == pytest.approx(m.total_s / m.audio_s)
    assert m.ms_per_code > 0 and min(m.prompt_s, m.conditioning_s, m.decode_s, m.mel_s, m.vocoder_s) > 0
    assert m.as_dict()["rtf"] == m.rtf
    assert not hasattr(tts, "metrics")  # no per-call state on the object


def test_old_call_forms_give_the_same_audio(tts, spk, emo):
    new = tts.synthesize(SHORT, spk, SynthesisOptions(emotion_audio=emo, emotion_alpha=0.5, seed=7, steps=2))
    positional = tts.synthesize(SHORT, spk, emo, 0.5, None, 7, 2)  # 0.x: emotion_audio, alpha, vector, seed, steps
    keywords = tts.synthesize(SHORT, spk, emotion_audio=emo, emotion_alpha=0.5, seed=7, steps=2)
    mixed = tts.synthesize(SHORT, spk, SynthesisOptions(seed=7), emotion_audio=emo, emotion_alpha=0.5, steps=2)
    for other in (positional, keywords, mixed):
        np.testing.assert_array_equal(other.audio, new.audio)
    sr, wav = next(iter(tts.stream(SHORT, spk, emo, 0.5, seed=7, steps=2, chunked=False)))  # unpacks as (sr, wav)
    np.testing.assert_array_equal(wav, new.audio)
    fast = tts.synthesize(SHORT, spk, seed=7, steps=2, preset="fast")
    np.testing.assert_array_equal(fast.audio, tts.synthesize(SHORT, spk, SynthesisOptions(preset="fast", seed=7,
                                                                                           steps=2)).audio)
    with pytest.raises(TypeError, match="twice"):
        tts.synthesize(SHORT, spk, emo, emotion_audio=emo)
    with pytest.raises(TypeError, match="by keyword"):
        tts.synthesize(SHORT, spk, SynthesisOptions(), emo)


def test_bad_options_fail_before_any_work(tts, spk, graphs):
    vocoder = graphs[1]["bigvgan"]
    before = len(vocoder.runs)
    with pytest.raises(InputError, match="steps=0"):
        tts.stream(TEXT, spk, steps=0)  # raised by the call itself, not by the first next()
    with pytest.raises(InputError, match="max_codes=100000.*max_mel_tokens"):
        tts.stream(TEXT, spk, max_codes=100000)
    assert len(vocoder.runs) == before


def test_closing_the_stream_stops_the_work(tts, spk, graphs):
    decoder, vocoder = graphs[1]["gpt_decoder"], graphs[1]["bigvgan"]
    chunks = tts.stream(TEXT, spk, SynthesisOptions(seed=1, max_codes=20, **FAST))
    first = next(chunks)
    assert first.index == 0 and not first.final
    decoded, vocoded = len(decoder.runs), len(vocoder.runs)
    chunks.close()
    assert (len(decoder.runs), len(vocoder.runs)) == (decoded, vocoded)  # the second segment never ran
    with pytest.raises(StopIteration):
        next(chunks)


# ---------------------------------------------------------------------------------- threads


def test_one_instance_serves_many_threads(tts, spk, emo):
    """8 threads x 2 calls on one instance, each with its own text, seed and code count (min_codes =
    max_codes fixes it): every result equals the same call run alone, and every call's metrics count
    its own codes (the audio length follows from them: hop * target_frames(codes))."""
    jobs = [(SHORT if k % 2 else "GOOD MORNING.", SynthesisOptions(seed=k, steps=2, max_codes=8 + k, min_codes=8 + k,
                                                                   emotion_audio=emo if k % 3 == 0 else None))
            for k in range(16)]
    alone = [tts.synthesize(text, spk, o) for text, o in jobs]

    def two_calls(t: int) -> list:
        return [tts.synthesize(*jobs[k][:1], spk, jobs[k][1]) for k in (2 * t, 2 * t + 1)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = [r for pair in pool.map(two_calls, range(8)) for r in pair]
    hop = tts.manifest.acoustic.hop_length
    for k, (a, b) in enumerate(zip(alone, shared)):
        np.testing.assert_array_equal(b.audio, a.audio, err_msg=f"call {k}")
        assert b.metrics.codes == 8 + k and b.audio.size == hop * target_frames(8 + k)


# ---------------------------------------------------------------------------------- chunked streaming

LONG = dict(seed=5, steps=2, max_codes=200, min_codes=200)  # one segment of exactly 200 codes


def test_stream_chunks_a_segment_and_keeps_its_codes(tts, spk):
    """Default plan: a 200-code segment comes in >= 3 chunks, the first long before the GPT has finished;
    the chunks add up to synthesize's length, and the codes are synthesize's (a one-chunk plan gives
    synthesize's audio up to the float rounding of the incremental latent pass)."""
    whole = tts.synthesize(SHORT, spk, **LONG)
    chunks = list(tts.stream(SHORT, spk, **LONG))
    assert len(chunks) >= 3 and [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sum(c.audio.size for c in chunks) == whole.audio.size == target_frames(200) * 256
    first, last = chunks[0].metrics, chunks[-1].metrics
    assert first.codes < 200 // 2 and last.codes == whole.metrics.codes == 200
    assert 0 < first.ttfa_s == last.ttfa_s < last.total_s
    one = list(tts.stream(SHORT, spk, first_chunk_codes=200, chunk_codes=200, **LONG))
    streamed = np.concatenate([c.audio for c in one])
    np.testing.assert_allclose(streamed, whole.audio, atol=2e-3)  # measured 2.6e-4 on the tiny bundle
    assert not np.allclose(np.concatenate([c.audio for c in chunks]), whole.audio, atol=2e-3)  # chunking shows


def test_closing_a_chunked_stream_stops_the_gpt(graphs, tts, spk):
    decoder = graphs[1]["gpt_decoder"]
    before = len(decoder.runs)
    list(tts.stream(SHORT, spk, **LONG))
    full = len(decoder.runs) - before
    stream = tts.stream(SHORT, spk, **LONG)
    next(stream)
    stream.close()
    after = len(decoder.runs)
    partial = after - before - full
    assert 0 < partial < full // 2, (partial, full)
    assert len(decoder.runs) == after  # nothing runs on after close


def test_bad_chunk_sizes_are_refused():
    with pytest.raises(InputError, match="chunk sizes"):
        SynthesisOptions(first_chunk_codes=10, overlap_codes=10)
    with pytest.raises(InputError, match="chunked must be a bool"):
        SynthesisOptions(chunked="yes")


def test_chunks_conditioned_on_the_prompts_tail(tts, spk):
    """chunk_prompt_frames: the chunks' DiT sees only the last N prompt frames. At least the prompt's
    length changes nothing (bit for bit); fewer frames give another waveform of the same length."""
    prompt = spk.ref_mel.shape[2]
    base = np.concatenate([c.audio for c in tts.stream(SHORT, spk, **LONG)])
    same = np.concatenate([c.audio for c in tts.stream(SHORT, spk, chunk_prompt_frames=prompt, **LONG)])
    np.testing.assert_array_equal(same, base)
    cut = np.concatenate([c.audio for c in tts.stream(SHORT, spk, chunk_prompt_frames=60, **LONG)])
    assert cut.shape == base.shape and np.isfinite(cut).all()
    assert np.abs(cut - base).max() > 1e-2
    with pytest.raises(InputError, match="chunk_prompt_frames"):
        SynthesisOptions(chunk_prompt_frames=4)


def test_prompt_tail_keeps_the_target_noise(spk):
    from indextts2_onnx.runtime.chunked import prompt_tail

    noise = np.arange(80 * (spk.ref_mel.shape[2] + 30), dtype=np.float32).reshape(1, 80, -1)
    tail, tail_noise = prompt_tail(spk, noise, 50)
    assert tail.ref_mel.shape[2] == tail.prompt_condition.shape[1] == 50
    np.testing.assert_array_equal(tail.ref_mel, spk.ref_mel[:, :, -50:])
    np.testing.assert_array_equal(tail_noise[:, :, 50:], noise[:, :, -30:])  # the target columns are unchanged
    assert prompt_tail(spk, noise, None)[0] is spk and prompt_tail(spk, noise, 10**6)[1] is noise
