"""The runtime's code generation against the torch reference (tests/export side builds the reference)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from indextts2_onnx.export import reference  # noqa: E402
from indextts2_onnx.runtime import IndexTTS2, InputError, SamplingOptions, Speaker  # noqa: E402
from indextts2_onnx.runtime.gpt import CodeGenerator  # noqa: E402
from indextts2_onnx.runtime.pipeline import load_bundle  # noqa: E402


def random_speaker(seed: int, frames: int = 60, emo_frames: int = 47, dim: int = 32) -> Speaker:
    rng = np.random.default_rng(seed)
    return Speaker(semantic=rng.standard_normal((1, frames, dim)),
                   emotion_semantic=rng.standard_normal((1, emo_frames, dim)),
                   style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, 12)),
                   prompt_condition=rng.standard_normal((1, 12, 32)))


@pytest.fixture(scope="module", params=["concat", "shared"])
def parts(request):
    """The tiny bundle's manifest, graphs and tables, opened once per decoder KV layout (every test below
    runs on both): the tests use the graphs and the CodeGenerator directly (logit traces) and through
    IndexTTS2."""
    return load_bundle(request.getfixturevalue({"concat": "tiny_concat_bundle", "shared": "tiny_bundle"}[request.param]))


@pytest.fixture(scope="module")
def tts(parts):
    return IndexTTS2.from_graphs(*parts)


@pytest.fixture(scope="module")
def gen(parts) -> CodeGenerator:
    manifest, graphs, tables = parts
    return CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt)


def speaker_latent(parts, spk: Speaker) -> np.ndarray:
    return parts[1]["gpt_speaker_conditioning"].run({"semantic": spk.semantic})[0]


def torch_conditioning(gpt, spk: Speaker):
    with torch.no_grad():
        latent = gpt.speaker_latent(torch.from_numpy(spk.semantic))
        emovec = gpt.emotion_vector(torch.from_numpy(spk.emotion_semantic))
    return latent, emovec


def min_margin(gpt, latent, emovec, ids, codes, logits) -> float:
    """Smallest gap between the best and second-best penalised score over the reference's steps."""
    seen = reference.decode_prefix(gpt, latent, emovec, ids)[1]
    gaps = []
    for code, step_logits in zip(codes, logits):
        top = torch.topk(reference.repetition_penalty(step_logits, seen, 10.0), 2).values
        gaps.append(float(top[0] - top[1]))
        seen.append(code)
    return min(gaps)


TEXTS = [[5, 6, 7, 8, 9, 10], [17], [40, 1, 41, 0, 42, 2, 2, 2, 99, 100, 101, 102, 103]]


@pytest.mark.parametrize("case", range(3))
def test_greedy_codes_and_latent_match_torch_reference(case, tts, tiny_gpt):
    spk, ids = random_speaker(case), TEXTS[case]
    emovec = tts.emotion_vector(spk)
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=True, max_codes=80)
    t_latent, t_emovec = torch_conditioning(tiny_gpt, spk)
    np.testing.assert_allclose(emovec, t_emovec.numpy(), atol=1e-4)
    ref, ref_logits = reference.greedy_codes(tiny_gpt, t_latent, t_emovec, ids, 80, return_logits=True)
    # fp32 ONNX and torch differ by ~1e-6: a step whose top two penalised scores are closer than that
    # could flip without any bug, so first check the case has no such near-tie.
    assert min_margin(tiny_gpt, t_latent, t_emovec, ids, ref, ref_logits) > 1e-4
    stop = tiny_gpt.cfg.stop_mel_token
    ref_codes = ref[: ref.index(stop)] if stop in ref else ref
    assert codes.dtype == np.int64
    assert codes.tolist() == ref_codes  # token for token
    assert len(ref_codes) >= 5  # a real sequence, not an immediate stop
    ref_latent = reference.latent(tiny_gpt, t_latent, t_emovec, ids, ref_codes).numpy()
    assert latent.shape == (1, len(ref_codes), tiny_gpt.cfg.model_dim) == ref_latent.shape
    np.testing.assert_allclose(latent, ref_latent, atol=1e-4)  # fp32, ONNX vs torch


def test_kv_cache_step_logits_match_reference_step_by_step(tts, gen, parts, tiny_gpt):
    spk, ids = random_speaker(7), [30, 31, 32, 33]
    emovec = tts.emotion_vector(spk)
    t_latent, t_emovec = torch_conditioning(tiny_gpt, spk)
    ref_codes, ref_logits = reference.greedy_codes(tiny_gpt, t_latent, t_emovec, ids, 40, return_logits=True)
    spk_latent = speaker_latent(parts, spk)
    prefix = gen.prefix(spk_latent, emovec)
    trace: list = []
    codes = gen.generate(prefix, ids, SamplingOptions(greedy=True, num_beams=1), 40,
                                np.random.default_rng(0), trace=trace)
    assert len(trace) == len(ref_logits) >= 10
    for step, (ours, theirs) in enumerate(zip(trace, ref_logits.numpy())):
        np.testing.assert_allclose(ours[0], theirs, atol=2e-4, err_msg=f"step {step}")  # fp32 vs no-cache torch
    assert codes.tolist() == [c for c in ref_codes if c != tiny_gpt.cfg.stop_mel_token]


def test_mel_positions_skip_one_as_upstream(gen, parts, tiny_gpt):
    """Contiguous positions in the decode loop would change the logits (upstream-quirks 2)."""
    spk, ids = random_speaker(3), [5, 6, 7]
    t_latent, t_emovec = torch_conditioning(tiny_gpt, spk)
    emb, _ = reference.decode_prefix(tiny_gpt, t_latent, t_emovec, ids)
    with torch.no_grad():
        first = int(torch.argmax(tiny_gpt.decode(emb, tiny_gpt.empty_past(1))[0]))
        tok = torch.tensor([[first]])
        right = tiny_gpt.decode(torch.cat([emb, tiny_gpt.mel_inputs(tok, torch.tensor([2]))], 1), tiny_gpt.empty_past(1))[0]
        wrong = tiny_gpt.decode(torch.cat([emb, tiny_gpt.mel_inputs(tok, torch.tensor([1]))], 1), tiny_gpt.empty_past(1))[0]
    trace: list = []
    spk_latent = speaker_latent(parts, spk)
    prefix = gen.prefix(spk_latent, t_emovec.numpy())
    gen.generate(prefix, ids, SamplingOptions(greedy=True, num_beams=1, repetition_penalty=1.0), 2,
                        np.random.default_rng(0), trace=trace)
    assert np.abs(trace[1][0] - right.numpy()[0]).max() < 2e-4
    assert np.abs(trace[1][0] - wrong.numpy()[0]).max() > 1e-2


def test_beam_sampling_is_seeded_and_valid(tts):
    spk = random_speaker(11)
    emovec = tts.emotion_vector(spk)
    a, la = tts.generate_codes([5, 6, 7, 8], spk, emovec, seed=123, max_codes=60)
    b, lb = tts.generate_codes([5, 6, 7, 8], spk, emovec, seed=123, max_codes=60)
    c, _ = tts.generate_codes([5, 6, 7, 8], spk, emovec, seed=124, max_codes=60)
    assert a.tolist() == b.tolist() and np.array_equal(la, lb)
    assert a.tolist() != c.tolist()
    stop = tts.manifest.gpt.stop_mel_token
    for codes in (a, c):
        assert 0 < len(codes) <= 60 and stop not in codes.tolist()
        assert codes.min() >= 0 and codes.max() < tts.manifest.gpt.number_mel_codes - 2


def test_plain_sampling_and_max_codes_cap(tts):
    spk = random_speaker(12)
    emovec = tts.emotion_vector(spk)
    codes, latent = tts.generate_codes([9, 10], spk, emovec, num_beams=1, seed=5, max_codes=7,
                                       repetition_penalty=1.0, temperature=1.0, top_k=0, top_p=1.0)
    assert len(codes) <= 7 and latent.shape == (1, len(codes), tts.manifest.gpt.model_dim)


def test_bad_generation_inputs_are_clear_errors(tts):
    spk = random_speaker(1)
    emovec = tts.emotion_vector(spk)
    g = tts.manifest.gpt
    with pytest.raises(InputError, match=f"max_codes=.*1..{g.max_mel_tokens}"):
        tts.generate_codes([5], spk, emovec, max_codes=g.max_mel_tokens + 1)
    with pytest.raises(InputError, match="token_ids: empty"):
        tts.generate_codes([], spk, emovec)
    with pytest.raises(InputError, match="token_ids: ids must lie"):
        tts.generate_codes([g.number_text_tokens + 1], spk, emovec)
    with pytest.raises(InputError, match="text positions allow"):
        tts.generate_codes([5] * (g.max_text_tokens + 1), spk, emovec)
    with pytest.raises(InputError, match="emovec: expected shape"):
        tts.generate_codes([5], spk, emovec[:, :3])
    with pytest.raises(InputError, match="feature width"):
        tts.generate_codes([5], random_speaker(1, dim=16), emovec)
    with pytest.raises(InputError, match="frames, at most 1024"):
        tts.generate_codes([5], random_speaker(1, frames=1100), emovec)
    with pytest.raises(InputError, match="top_p"):
        tts.generate_codes([5], spk, emovec, top_p=1.5)


@pytest.mark.parametrize("greedy", [True, False])
def test_min_codes_fixes_the_length(tts, greedy):
    """min_codes = max_codes bans the stop token throughout: exactly max_codes codes, as benchmarks need."""
    spk = random_speaker(13)
    emovec = tts.emotion_vector(spk)
    free, _ = tts.generate_codes([5, 6], spk, emovec, greedy=greedy, seed=3, max_codes=60)
    assert len(free) < 60, "the tiny GPT already runs to the cap: pick another prompt"
    codes, latent = tts.generate_codes([5, 6], spk, emovec, greedy=greedy, seed=3, max_codes=60, min_codes=60)
    assert len(codes) == 60 and latent.shape[1] == 60
    assert tts.manifest.gpt.stop_mel_token not in codes.tolist()
    if greedy:  # the ban only acts on the stop token: the codes before the free run's stop are the same
        assert codes[: len(free)].tolist() == free.tolist()
    with pytest.raises(InputError, match="min_codes=61"):
        tts.generate_codes([5], spk, emovec, max_codes=60, min_codes=61)


STREAM_CASES = {
    "greedy": dict(greedy=True),
    "plain-sampling": dict(num_beams=1, seed=5),
    "beams-seed-1": dict(seed=1),
    "beams-seed-2": dict(seed=2),
    "beams-seed-3": dict(seed=3),
    "greedy-beams": dict(greedy=False, num_beams=3, seed=4, top_k=0, top_p=1.0),
}


@pytest.mark.parametrize("case", STREAM_CASES, ids=str)
def test_streamed_codes_are_the_codes(case, tts):
    """on_codes hands on each code once, in order, as soon as it is final: the runs concatenated are the
    returned codes, which equal those of the same call without the hook (same seed, same latent)."""
    spk = random_speaker(21)
    emovec = tts.emotion_vector(spk)
    kw = dict(max_codes=120, min_codes=40) | STREAM_CASES[case]
    plain, plain_latent = tts.generate_codes([5, 6, 7, 8, 9], spk, emovec, **kw)
    runs: list[list[int]] = []
    codes, latent = tts.generate_codes([5, 6, 7, 8, 9], spk, emovec, on_codes=lambda c: runs.append(c.tolist()),
                                       **kw)
    assert codes.tolist() == plain.tolist() and np.array_equal(latent, plain_latent)
    assert [c for run in runs for c in run] == codes.tolist()
    assert all(runs)  # never an empty run
    if kw.get("num_beams", 3) == 1 or kw.get("greedy"):
        assert len(runs) == len(codes)  # one row: every step's code is final at once
    else:  # beams: codes settle while decoding, not only when the search ends
        assert len(runs) > 1 and len(runs[0]) < len(codes) - 10, [len(r) for r in runs]
