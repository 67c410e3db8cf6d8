"""BatchedGenerator: independent requests decoded together, one decoder call per step, each with exactly the
codes it gets alone (IndexTTS2.generate_codes with the same seed); join / leave / cancel between steps,
bounds and failures of one request that leave the others alone."""

from __future__ import annotations

import numpy as np
import pytest

from indextts2_onnx.runtime import (BatchedGenerator, BatchOptions, BundleError, CodeRequest, GenerationError,
                                    IndexTTS2, InputError, SamplingOptions, Speaker)
from indextts2_onnx.runtime.gpt import CodeGenerator
from indextts2_onnx.runtime.pipeline import load_bundle


def random_speaker(seed: int) -> Speaker:
    rng = np.random.default_rng(seed)
    return Speaker(semantic=rng.standard_normal((1, 60, 32)), emotion_semantic=rng.standard_normal((1, 47, 32)),
                   style=rng.standard_normal((1, 48)), ref_mel=rng.standard_normal((1, 80, 12)),
                   prompt_condition=rng.standard_normal((1, 12, 32)))


# (sampling options, text ids, max_codes, min_codes, seed): greedy, beam sampling, plain sampling, greedy beam
# search, unfiltered beam sampling; texts and limits of different lengths so rows sit at different positions.
CASES = [
    (SamplingOptions(greedy=True, num_beams=1), [5, 6, 7], 40, 12, 0),
    (SamplingOptions(num_beams=3), [8, 9, 10, 11, 12, 13, 14, 15, 16], 47, 20, 1),
    (SamplingOptions(num_beams=1), [40, 41], 54, 5, 2),
    (SamplingOptions(greedy=True, num_beams=2), [17, 18, 19, 20, 21, 22], 36, 30, 3),
    (SamplingOptions(num_beams=3, top_k=0, top_p=1.0), [23, 24, 25, 26], 61, 0, 4),
]


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle, threads=1)


def requests(tts: IndexTTS2, cases=CASES) -> list[CodeRequest]:
    out = []
    for i, (options, ids, max_codes, min_codes, seed) in enumerate(cases):
        spk = random_speaker(i)
        out.append(tts.code_request(ids, spk, tts.emotion_vector(spk), options, max_codes, seed, min_codes))
    return out


def alone(tts: IndexTTS2, cases=CASES) -> list[list[int]]:
    """Each case decoded on its own by the decode loop (CodeGenerator.generate, the reference: it is the
    loop generate_codes runs, test_code_request_is_generate_codes' arguments), fresh RNG from its seed."""
    out = []
    for request, (*_, seed) in zip(requests(tts, cases), cases):
        codes = tts._codes.generate(request.prefix, list(request.text_ids), request.options, request.max_codes,
                                    np.random.default_rng(seed), min_codes=request.min_codes)
        out.append(codes.tolist())
    return out


def test_code_request_is_generate_codes(tts, reference):
    """code_request builds what generate_codes decodes: the same codes for the cases generate_codes can
    express (it has no greedy beam search: greedy means one row there)."""
    for i, (o, ids, max_codes, min_codes, seed) in enumerate(CASES):
        if o.greedy and o.num_beams > 1:
            continue
        spk = random_speaker(i)
        codes, _ = tts.generate_codes(ids, spk, tts.emotion_vector(spk), greedy=o.greedy, num_beams=o.num_beams,
                                      top_k=o.top_k, top_p=o.top_p, max_codes=max_codes, min_codes=min_codes,
                                      seed=seed)
        assert codes.tolist() == reference[i]


@pytest.fixture(scope="module")
def reference(tts):
    return alone(tts)


@pytest.mark.parametrize("max_rows", [10, 6, 3])
def test_codes_equal_decoding_alone(tts, reference, max_rows):
    """All requests through one batch: identical codes to decoding each alone with the same seed. With 10
    rows all five fit at once; with 6 and 3 later requests join as earlier ones leave (rows compacted)."""
    batch = tts.batched_generator(BatchOptions(max_rows=max_rows))
    got = batch.run(requests(tts))
    assert [c.tolist() for c in got] == reference
    assert [len(c) for c in reference] != [len(reference[0])] * len(reference)  # different lengths
    assert batch.handles == [] and batch.free_rows == max_rows


def test_join_leave_and_cancel_between_steps(tts, reference):
    """Requests join while others are decoding, one is cancelled mid-way (its rows reused by a newcomer,
    stale positions behind them), and every update stream adds up to the request's codes alone."""
    reqs = requests(tts)
    batch = tts.batched_generator(BatchOptions(max_rows=7))
    got: dict[int, list[np.ndarray]] = {}
    a = batch.add(reqs[1])  # 3 beams
    b = batch.add(reqs[0])  # greedy
    assert batch.handles == [a, b] and batch.free_rows == 3
    for _ in range(5):
        for h, u in batch.step().items():
            got.setdefault(h, []).append(u.codes)
    batch.cancel(a)
    assert batch.handles == [b] and batch.free_rows == 6
    c = batch.add(reqs[4])  # takes the rows a left (moved down: b is in row 0 now)
    d = batch.add(reqs[3])
    done = {}
    steps = 0
    while batch.handles:
        steps += 1
        for h, u in batch.step().items():
            assert h not in done  # a finished request is reported once, then gone
            got.setdefault(h, []).append(u.codes)
            if u.done:
                assert u.error is None
                done[h] = np.concatenate(got[h]).tolist()
    assert a not in done and set(done) == {b, c, d}
    assert (done[b], done[c], done[d]) == (reference[0], reference[4], reference[3])
    with pytest.raises(InputError, match="no request with handle"):
        batch.cancel(a)


def test_updates_stream_codes_as_they_settle(tts, reference):
    """A greedy request's codes arrive one per step; a beam request's in several runs, from before its last step."""
    batch = tts.batched_generator(BatchOptions(max_rows=4))
    g = batch.add(requests(tts, CASES[:1])[0])
    beam = batch.add(requests(tts, CASES[:2])[1])
    per_step = {g: [], beam: []}
    while batch.handles:
        for h, u in batch.step().items():
            per_step[h].append(u)
    greedy_counts = [u.codes.size for u in per_step[g]]
    assert greedy_counts[:-1] == [1] * (len(greedy_counts) - 1)
    runs = [i for i, u in enumerate(per_step[beam]) if u.codes.size]  # the steps that delivered codes
    assert len(runs) >= 2 and runs[0] < len(per_step[beam]) - 1
    assert np.concatenate([u.codes for u in per_step[beam]]).tolist() == reference[1]


def test_a_batched_call_gives_each_row_its_own_logits(tiny_bundle):
    """The decoder call under the batch: two sequences of different lengths in one call give the logits of
    two calls on their own (atol 1e-5), so one row never sees another's cache."""
    manifest, graphs, tables = load_bundle(tiny_bundle, threads=1)
    gen = CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt)
    d = manifest.gpt
    rng = np.random.default_rng(0)
    prefix = gen.prefix(rng.standard_normal((1, d.condition_num_latent, d.model_dim)).astype(np.float32),
                        np.zeros((1, d.model_dim), np.float32))
    states, solo = [], []
    for ids in ([5, 6, 7], [8, 9, 10, 11, 12, 13, 14]):
        _, _, kv = gen._start(prefix, ids)
        states.append(kv)
    codes = np.array([3, 11])
    for kv, code in zip(states, codes):
        solo.append(gen.calls.step(kv, np.array([code]), np.array([2])))
    batch = BatchedGenerator(gen, BatchOptions(max_rows=2))
    for row, ids in enumerate(([5, 6, 7], [8, 9, 10, 11, 12, 13, 14])):
        batch.add(CodeRequest(prefix, ids, SamplingOptions(greedy=True, num_beams=1), 10))
    lengths = np.array([s.length for s in batch._active])
    assert lengths[1] - lengths[0] == 4
    for s, code in zip(batch._active, codes):
        s.tokens = np.array([code])
    batch._advance()
    for s, expected in zip(batch._active, solo):
        np.testing.assert_allclose(s.logits, expected, atol=1e-5)


def test_a_failing_request_leaves_the_others_alone(tts, reference):
    """NaN conditioning rows in one request: that request ends with a GenerationError naming the decode
    stage; the request beside it decodes to its usual codes."""
    good = requests(tts, CASES[:1])[0]
    bad = CodeRequest(np.full_like(good.prefix, np.nan), [5, 6], SamplingOptions(greedy=True, num_beams=1), 20)
    batch = tts.batched_generator(BatchOptions(max_rows=2))
    hb, hg = batch.add(bad), batch.add(good)
    first = batch.step()
    assert first[hb].done and isinstance(first[hb].error, GenerationError)
    assert "gpt decode" in str(first[hb].error) and not first[hg].done
    codes = [first[hg].codes]
    while batch.handles:
        codes.append(batch.step()[hg].codes)
    assert np.concatenate(codes).tolist() == reference[0]
    with pytest.raises(GenerationError):
        tts.batched_generator().run([bad])


def test_bounds_are_clear_errors(tts, tiny_concat_bundle):
    req = requests(tts, CASES[:2])
    batch = tts.batched_generator(BatchOptions(max_rows=2))
    with pytest.raises(InputError, match="needs 3 rows, 2 of 2 are free"):
        batch.add(req[1])
    with pytest.raises(InputError, match="needs 3 rows"):
        batch.run(req)
    small = tts.batched_generator(BatchOptions(max_rows=2, capacity=50))
    with pytest.raises(InputError, match="positions, rows hold 50"):
        small.add(req[0])
    assert small.free_rows == 2
    with pytest.raises(InputError, match="max_rows"):
        BatchOptions(max_rows=0)
    with pytest.raises(BundleError, match="export --decoder shared"):
        IndexTTS2(tiny_concat_bundle, threads=1).batched_generator()
    busy = tts.batched_generator(BatchOptions(max_rows=4))
    busy.add(req[0])
    with pytest.raises(InputError, match="idle batch"):
        busy.run(req[:1])


def test_fp16_decoder_batches_too(tiny_bundle, tmp_path):
    """The CUDA bundle's decoder (fp16 weights and KV buffers, fp32 embeddings in and logits out, as
    `export --target cuda` writes it), run on the CPU execution provider: the batch allocates fp16 buffers
    and every request's codes equal its codes decoded alone through the same graph."""
    onnx = pytest.importorskip("onnx")  # the conversion is the exporter's
    from indextts2_onnx.export.quantize import convert_fp16
    from indextts2_onnx.runtime.sessions import Graph

    manifest, graphs, tables = load_bundle(tiny_bundle, threads=1)
    entry = manifest.graphs["gpt_decoder"]
    convert_fp16(tiny_bundle / entry.file, tmp_path / entry.file,
                 keep_io_types=["inputs_embeds", "logits", "hidden_states"])
    inputs = {i.name: i.type.tensor_type.elem_type
              for i in onnx.load(str(tmp_path / entry.file), load_external_data=False).graph.input}
    assert inputs["past_key_0"] == onnx.TensorProto.FLOAT16 and inputs["inputs_embeds"] == onnx.TensorProto.FLOAT
    graph = Graph.open(tmp_path, "gpt_decoder", entry, ["CPUExecutionProvider"], threads=1)
    gen = CodeGenerator(graph, tables.gpt, manifest.gpt)
    d = manifest.gpt
    cases = []
    for i, (options, ids, max_codes, min_codes, seed) in enumerate(CASES[:3]):
        rng = np.random.default_rng(i)
        prefix = gen.prefix(rng.standard_normal((1, d.condition_num_latent, d.model_dim)).astype(np.float32),
                            np.zeros((1, d.model_dim), np.float32))
        cases.append((CodeRequest(prefix, ids, options, max_codes, None, min_codes), seed))
    solo = [gen.generate(r.prefix, list(r.text_ids), r.options, r.max_codes, np.random.default_rng(seed),
                         min_codes=r.min_codes).tolist() for r, seed in cases]
    batch = BatchedGenerator(gen, BatchOptions(max_rows=5))
    assert batch._buffers[0].dtype == np.float16
    got = batch.run([CodeRequest(r.prefix, r.text_ids, r.options, r.max_codes, np.random.default_rng(seed),
                                 r.min_codes) for r, seed in cases])
    assert [c.tolist() for c in got] == solo and min(map(len, solo)) >= 5
