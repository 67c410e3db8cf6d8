"""Chunked (streaming) acoustic decoding: the incremental latent pass, chunk plans, cross-fades, and the
streamed waveform against the non-streamed one on the tiny random-weight bundle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from indextts2_onnx.runtime import IndexTTS2
from indextts2_onnx.runtime.audio import synthetic_voice
from indextts2_onnx.runtime.chunked import ChunkedDecoder, ChunkPlan, crossfade, fade_in, noise_columns
from indextts2_onnx.runtime.gpt import CodeGenerator
from indextts2_onnx.runtime.kv_cache import decoder_io
from indextts2_onnx.runtime.pipeline import load_bundle
from indextts2_onnx.runtime.s2mel import MelDecoder, target_frames
from indextts2_onnx.runtime.sessions import Graph

N_CODES = 120
STEPS = 4

# Floor for the SNR of a 40-code-chunk, 5-code-overlap stream against the non-streamed decode (same codes,
# latent and noise). Measured on the tiny random-weight bundle: 9-10 dB (tools/stream_quality.py: 9.4 dB at
# 200 codes / 10 steps); chunking is not exact (the length regulator's GroupNorm and the DiT's attention see
# the chunk only), so the floor is the measurement minus ~3 dB of headroom, not a quality target.
SNR_FLOOR_DB = 6.0


@dataclass(frozen=True)
class Stages:
    """The stage objects a stream is built from, over the bundle's graphs (as IndexTTS2 builds them)."""

    codes: CodeGenerator
    mel: MelDecoder
    vocoder: Graph
    speaker: Graph  # gpt_speaker_conditioning
    hop: int

    def prefix(self, seg: dict) -> np.ndarray:
        """The GPT conditioning rows of the segment's speaker and emotion vector."""
        latent = self.speaker.run({"semantic": seg["spk"].semantic})[0]
        return self.codes.prefix(latent, seg["emovec"])


@pytest.fixture(scope="module")
def parts(tiny_bundle):
    """The tiny bundle's manifest, graphs and tables, opened once for IndexTTS2 and the stage objects."""
    return load_bundle(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def tts(parts):
    return IndexTTS2.from_graphs(*parts)


@pytest.fixture(scope="module")
def stages(parts) -> Stages:
    manifest, graphs, tables = parts
    io = decoder_io(manifest.graphs["gpt_decoder"], manifest.gpt)
    return Stages(CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt, io),
                  MelDecoder(graphs["latent_projector"], graphs["length_regulator"], graphs["dit"]),
                  graphs["bigvgan"], graphs["gpt_speaker_conditioning"], manifest.acoustic.hop_length)


@pytest.fixture(scope="module")
def segment(tts):
    """A fixed speaker, N_CODES greedy codes with their latent, and the whole-segment noise."""
    sr = tts.manifest.acoustic.sample_rate
    spk = tts.prepare_speaker((synthetic_voice(2.0, sr), sr))
    emovec = tts.emotion_vector(spk)
    ids = tts.tokenize("chunked decoding test")[0]
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=True, max_codes=N_CODES, min_codes=N_CODES)
    shape = (1, tts.manifest.acoustic.n_mels, spk.ref_mel.shape[2] + target_frames(N_CODES))
    noise = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    ref = tts.vocode(tts.decode_mel(codes, latent, spk, STEPS, 0.7, noise=noise))
    return dict(ids=ids, spk=spk, emovec=emovec, codes=codes, latent=latent, noise=noise, ref=ref)


def slicer(latent: np.ndarray):
    """A `latents` callback handing out consecutive rows of a precomputed (1, N, d) latent."""
    pos = [0]

    def take(codes):
        i = pos[0]
        pos[0] += len(codes)
        return latent[:, i:i + len(codes)]
    return take


def decoder(stages: Stages, seg, plan, latents=None) -> ChunkedDecoder:
    return ChunkedDecoder(stages.mel, stages.vocoder, latents or slicer(seg["latent"]), seg["spk"], seg["noise"],
                          STEPS, 0.7, plan, stages.hop)


def run(dec: ChunkedDecoder, codes: np.ndarray, run_size: int) -> list[np.ndarray]:
    pieces = []
    for i in range(0, len(codes), run_size):
        pieces += dec.feed(codes[i:i + run_size])
    return pieces + dec.finish()


def snr_db(ref, x) -> float:
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((x.astype(np.float64) - ref) ** 2))


# --- the incremental latent pass ---------------------------------------------------------------------------

@pytest.mark.parametrize("cuts", [[N_CODES], [1, N_CODES - 1], [25, 50, 45], [7] * 17 + [1]])
def test_latent_stream_equals_full_latent(stages, segment, cuts):
    stream = stages.codes.latent_stream(stages.prefix(segment), segment["ids"])
    bounds = np.cumsum([0] + cuts)
    rows = [stream.extend(segment["codes"][a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    got = np.concatenate(rows, axis=1)
    assert [r.shape[1] for r in rows] == cuts
    np.testing.assert_allclose(got, segment["latent"], atol=1e-5, rtol=0)
    assert stream.extend(np.zeros(0, np.int64)).shape == (1, 0, segment["latent"].shape[2])


# --- plans and cross-fades ---------------------------------------------------------------------------------

def test_default_plan_gives_at_least_three_chunks_for_200_codes():
    cuts = ChunkPlan().boundaries(200)
    assert cuts == [0, 25, 75, 175, 200]  # 25, 50, 100 (cap), then the 25 left
    assert len(cuts) - 1 >= 3


@pytest.mark.parametrize("n", [1, 24, 25, 26, 199, 200, 1000])
@pytest.mark.parametrize("plan", [ChunkPlan(), ChunkPlan(10, 10, 2, 1.0), ChunkPlan(8, 60, 0, 1.5)])
def test_plan_covers_every_code_once(plan, n):
    cuts = plan.boundaries(n)
    assert cuts[0] == 0 and cuts[-1] == n
    sizes = np.diff(cuts)
    assert np.all(sizes > 0)
    assert np.all(sizes[:-1] == [plan.size(j) for j in range(len(sizes) - 1)])
    assert np.all(sizes <= plan.chunk_codes)


def test_plan_sizes_are_configurable_and_checked():
    assert ChunkPlan(10, 40, 3, 2.0).boundaries(100) == [0, 10, 30, 70, 100]
    assert ChunkPlan(30, 30, 5, 1.0).boundaries(100) == [0, 30, 60, 90, 100]
    for bad in (dict(first_chunk_codes=5, overlap_codes=5), dict(first_chunk_codes=200), dict(growth=0.5),
                dict(fade="cosine")):
        with pytest.raises(ValueError):
            ChunkPlan(**bad)


@pytest.mark.parametrize("kind", ["hann", "linear"])
def test_crossfade_weights_sum_to_one(kind):
    w = fade_in(2048, kind)
    out = fade_in(2048, kind)[::-1]  # the fade-out is the mirror image ...
    np.testing.assert_allclose(w + out, 1.0, atol=1e-6)  # ... and the two sum to 1 at every sample
    assert np.all(np.diff(w) > 0) and 0 < w[0] < 0.01 and 0.99 < w[-1] < 1
    x = np.random.default_rng(0).standard_normal(2048).astype(np.float32)
    np.testing.assert_allclose(crossfade(x, x, kind), x, atol=1e-6)  # equal signals pass unchanged


def test_noise_columns_take_prompt_and_chunk_frames():
    noise = np.arange(2 * 3 * 20, dtype=np.float32).reshape(2, 3, 20)[:1]
    got = noise_columns(noise, 4, 5, 9)
    np.testing.assert_array_equal(got, np.concatenate([noise[:, :, :4], noise[:, :, 9:13]], axis=2))
    with pytest.raises(ValueError):
        noise_columns(noise, 4, 10, 17)


# --- streamed against non-streamed ---------------------------------------------------------------------------

def test_one_chunk_equals_non_streamed_decode(stages, segment):
    """One chunk covering every code is the non-streamed decode (same projector, regulator length, noise,
    DiT and vocoder inputs): this pins the plumbing."""
    plan = ChunkPlan(N_CODES + 1, N_CODES + 1, 5, 1.0)  # the segment ends before the first cut
    pieces = run(decoder(stages, segment, plan), segment["codes"], 13)
    assert len(pieces) == 1
    np.testing.assert_allclose(pieces[0], segment["ref"], atol=1e-6, rtol=0)
    # a segment ending exactly on a cut: the chunk is decoded before the end is known, so its overlap
    # frames are held back and come out of finish() as a second piece; together they are the same audio
    pieces = run(decoder(stages, segment, ChunkPlan(N_CODES, N_CODES, 5, 1.0)), segment["codes"], 13)
    held = target_frames(N_CODES) - target_frames(N_CODES - 5)  # frames of the last 5 codes on the grid
    assert len(pieces) == 2 and pieces[1].shape[0] == held * stages.hop
    np.testing.assert_allclose(np.concatenate(pieces), segment["ref"], atol=1e-6, rtol=0)


def test_several_chunks_keep_length_and_stay_close(stages, segment):
    plan = ChunkPlan(40, 40, 5, 1.0)
    dec = decoder(stages, segment, plan)
    pieces = run(dec, segment["codes"], 40)
    wav = np.concatenate(pieces)
    hop = stages.hop
    assert dec.chunks == 3
    # exact length rule: every piece ends on the segment's frame grid, so the total is target_frames(N) * hop
    assert wav.shape == segment["ref"].shape == (target_frames(N_CODES) * hop,)
    # the first piece is chunk 0 minus its held-back overlap frames: audio of frames [0, f(35))
    assert pieces[0].shape[0] == target_frames(40 - 5) * hop
    snr = snr_db(segment["ref"], wav)
    assert SNR_FLOOR_DB < snr < 60, snr  # close to, but not identical with, the non-streamed decode
    # the first chunk's audio before its overlap is not affected by later chunks, but differs from the
    # non-streamed one (the DiT sees no right context): a real change, not a plumbing accident
    assert not np.allclose(pieces[0], segment["ref"][:pieces[0].shape[0]], atol=1e-4)


def test_output_does_not_depend_on_how_codes_arrive(stages, segment):
    """Runs of 1, 7 or whole chunks: the same cuts, so the same audio (and the lead's LatentStream path gives
    the same latent rows as the full second pass)."""
    plan = ChunkPlan(30, 60, 5, 2.0)
    base = np.concatenate(run(decoder(stages, segment, plan), segment["codes"], N_CODES))
    stream = stages.codes.latent_stream(stages.prefix(segment), segment["ids"])
    got = np.concatenate(run(decoder(stages, segment, plan), segment["codes"], 7))
    np.testing.assert_allclose(got, base, atol=1e-6, rtol=0)  # same cuts, same inputs: the same audio
    # the KV-cached latent differs from the full pass by float rounding (~1e-6); the random-weight DiT and
    # vocoder amplify that to ~2e-4 in samples in [-1, 1] (measured), hence 1e-3 here
    got = np.concatenate(run(decoder(stages, segment, plan, stream.extend), segment["codes"], 1))
    np.testing.assert_allclose(got, base, atol=1e-3, rtol=0)
