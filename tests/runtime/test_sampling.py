"""runtime/sampling.py against upstream's generation code (transformers 4.52.1, torch as the reference).

The reference for beam search is the loop of upstream's vendored `_beam_search` (log_softmax,
processors, + beam scores, view, multinomial/topk, sort, `BeamSearchScorer.process`, `finalize`)
written out here with transformers' own processors and scorer; greedy and plain sampling run
transformers' real `generate` on a table-driven toy model. The "model" everywhere is `table_logits`:
random logits seeded by a row's whole sequence, so a wrong KV-cache reorder shows up as different
logits.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

transformers = pytest.importorskip(
    "transformers", reason="reference tests need transformers==4.52.1 (pip install '.[test]')")
torch = pytest.importorskip("torch", reason="reference tests need torch")
if transformers.__version__ != "4.52.1":
    pytest.skip(f"the reference is transformers 4.52.1, found {transformers.__version__}",
                allow_module_level=True)

from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers.generation import BeamSearchScorer, LogitsProcessorList  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import CausalLMOutput  # noqa: E402

from indextts2_onnx.runtime import sampling as S  # noqa: E402

VOCAB = 64
EOS = VOCAB - 1  # plays upstream's stop mel token 8193 (also the pad id, as upstream)
START = VOCAB - 2  # plays the start mel token 8192
PROMPT = [1] * 8 + [START]  # upstream's fake prefill ids: all 1, last = start token

# Tolerances, stated once. Both sides do the same float32 ops, but numpy's and torch's exp/log/sum
# differ by an ulp or so.
SCORE_RTOL, SCORE_ATOL = 1e-5, 1e-4  # cumulative beam scores (sums of up to ~40 processed log-probs)
PROB_ATOL = 1e-6  # probabilities handed to the draw


def table_logits(seed: int, sequences, eos_bias: float = 0.0, scale: float = 3.0,
                 vocab: int = VOCAB, eos: int = EOS) -> np.ndarray:
    """Toy model: float32 [rows, vocab] logits, a pure function of (seed, each row's whole sequence)."""
    out = np.empty((len(sequences), vocab), dtype=np.float32)
    for r, seq in enumerate(sequences):
        x = np.random.default_rng([seed, *(int(t) for t in seq)]).standard_normal(vocab) * scale
        x[eos] += eos_bias
        out[r] = x
    return out


def hf_apply(processor, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Run one transformers processor on numpy inputs."""
    return processor(torch.from_numpy(sequences), torch.from_numpy(scores)).numpy()


def hf_processors(opts: S.SamplingOptions, min_tokens_to_keep: int) -> LogitsProcessorList:
    """The list upstream's `_get_logits_processor` builds for these options."""
    procs = LogitsProcessorList()
    if opts.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(opts.repetition_penalty)))
    if not opts.greedy:
        if opts.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(float(opts.temperature)))
        if opts.top_k != 0:
            procs.append(TopKLogitsWarper(opts.top_k, min_tokens_to_keep=min_tokens_to_keep))
        if opts.top_p < 1.0:
            procs.append(TopPLogitsWarper(opts.top_p, min_tokens_to_keep=min_tokens_to_keep))
    return procs


def assert_same_filter(ours: np.ndarray, ref: np.ndarray):
    """Same -inf pattern and equal kept values (exact: both sides pass values through untouched)."""
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref))
    np.testing.assert_array_equal(ours[~np.isneginf(ours)], ref[~np.isneginf(ref)])


# --------------------------------------------------------------------------------------------------
# 1. Processors vs transformers


def _random_case(seed: int, ties: bool, rows: int = 5, vocab: int = 50, seq_len: int = 12):
    """Random logits [rows, vocab] with some -inf, and random sequences [rows, seq_len].
    ties=True: integer logits, so many exactly equal values, also across the top-k/top-p cut."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, vocab)).astype(np.float32) * 4
    if ties:
        logits = np.round(logits / 2).astype(np.float32)
        logits[0, :3] = 0.0  # zero raw logits (the repetition penalty divides them: they stay 0)
    logits[1, 5:9] = -np.inf  # already filtered entries
    sequences = rng.integers(0, vocab, size=(rows, seq_len))
    sequences[:, :4] = 1  # duplicates inside a row: penalised once
    return logits, sequences


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("penalty", [10.0, 1.3, 0.7, 1.0])
def test_repetition_penalty_matches_hf(seed, ties, penalty):
    logits, seqs = _random_case(seed, ties)
    for scores in (logits, S.log_softmax(logits)):  # raw logits (sampling) and log-probs (beams)
        ref = hf_apply(RepetitionPenaltyLogitsProcessor(penalty), seqs, scores)
        np.testing.assert_array_equal(S.apply_repetition_penalty(scores, seqs, penalty), ref)  # exact


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temperature", [0.8, 0.3, 1.7])
def test_temperature_matches_hf(seed, temperature):
    logits, seqs = _random_case(seed, ties=False)
    ref = hf_apply(TemperatureLogitsWarper(temperature), seqs, logits)
    np.testing.assert_array_equal(S.apply_temperature(logits, temperature), ref)  # exact


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("top_k,min_keep", [(1, 1), (1, 2), (5, 1), (30, 2), (3, 7), (50, 1), (80, 2)])
def test_top_k_matches_hf(seed, ties, top_k, min_keep):
    logits, seqs = _random_case(seed, ties)
    ref = hf_apply(TopKLogitsWarper(top_k, min_tokens_to_keep=min_keep), seqs, logits)
    assert_same_filter(S.top_k_filter(logits, top_k, min_keep), ref)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_p", [0.0, 1e-6, 0.1, 0.5, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("min_keep", [1, 2, 5])
def test_top_p_matches_hf(seed, top_p, min_keep):
    logits, seqs = _random_case(seed, ties=False)
    for scores in (logits, S.log_softmax(logits) / np.float32(0.8)):
        ref = hf_apply(TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep), seqs, scores)
        assert_same_filter(S.top_p_filter(scores, top_p, min_keep), ref)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_p", [0.3, 0.8])
def test_top_p_with_ties_keeps_the_same_values(seed, top_p):
    """With ties across the cut, torch's unstable sort decides *which* equal entry goes; the kept
    multiset of values (and so the distribution up to relabelling of equal logits) must agree."""
    logits, seqs = _random_case(seed, ties=True)
    ours = S.top_p_filter(logits, top_p, 2)
    ref = hf_apply(TopPLogitsWarper(top_p, min_tokens_to_keep=2), seqs, logits)
    for o, r in zip(ours, ref):
        np.testing.assert_array_equal(np.sort(o[np.isfinite(o)]), np.sort(r[np.isfinite(r)]))


@pytest.mark.parametrize("top_p,min_keep", [(0.5, 1), (0.75, 1), (0.25, 1), (0.5, 3), (0.875, 2)])
def test_top_p_cumulative_exactly_at_threshold_is_dropped(top_p, min_keep):
    """Equal logits give exact probabilities (1/4, 1/8), so cumulative sums hit 1 - top_p exactly:
    HF drops an entry whose cumulative probability is <= 1 - top_p (not <)."""
    logits = np.full((2, 8), -np.inf, dtype=np.float32)
    logits[0, :4] = 1.5  # four entries of probability 1/4
    logits[1, :] = -2.0  # eight of 1/8
    ref = hf_apply(TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep), np.zeros((2, 0), np.int64), logits)
    ours = S.top_p_filter(logits, top_p, min_keep)
    np.testing.assert_array_equal(np.isfinite(ours).sum(1), np.isfinite(ref).sum(1))


def test_beam_hypotheses_match_hf_with_ties():
    """The n-best list (add / worst_score / is_done / best), with many exactly tied scores."""
    from transformers.generation.beam_search import BeamHypotheses

    rng = np.random.default_rng(0)
    for length_penalty in (0.0, 1.0, -0.5):
        for _ in range(50):
            ours = S._BeamHypotheses(3, length_penalty)
            ref = BeamHypotheses(3, length_penalty, early_stopping=False)
            for i in range(int(rng.integers(1, 12))):
                score, length = float(rng.integers(-6, 0)), int(rng.integers(1, 4))
                ours.add(np.array([i]), score, length)
                ref.add(torch.tensor([i]), score, generated_len=length)
                assert [(s, int(h[0])) for s, h in ours.beams] == [(s, int(h[0])) for s, h, _ in ref.beams]
                assert ours.worst_score == ref.worst_score
                best_sum, length = float(rng.integers(-8, 0)), int(rng.integers(1, 4))
                assert ours.is_done(best_sum, length) == ref.is_done(best_sum, length, 0)
            best_ref = sorted(ref.beams, key=lambda x: x[0]).pop()  # what BeamSearchScorer.finalize does
            assert int(ours.best()[1][0]) == int(best_ref[1][0])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beam", [True, False])
def test_process_scores_matches_hf_chain(seed, beam):
    """The whole chain in HF's order: on log-probs with min_tokens_to_keep=2 (beams), on raw logits
    with 1 (plain sampling)."""
    logits, seqs = _random_case(seed, ties=False)
    opts = S.SamplingOptions(num_beams=3 if beam else 1, top_k=20)
    keep = 2 if beam else 1
    scores = S.log_softmax(logits) if beam else logits
    ref = hf_apply(hf_processors(opts, keep), seqs, scores)
    ours = S.process_scores(scores, seqs, opts, keep)
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=0)  # exact: same float32 ops


@pytest.mark.parametrize("seed", range(4))
def test_log_softmax_and_softmax_match_torch(seed):
    logits = (np.random.default_rng(seed).standard_normal((4, 8194)) * 6).astype(np.float32)
    logits[0, :10] = -np.inf
    ref = torch.log_softmax(torch.from_numpy(logits), -1).numpy()
    ours = S.log_softmax(logits)
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-6, atol=1e-6)  # ~1 ulp
    np.testing.assert_allclose(S.softmax(logits), torch.softmax(torch.from_numpy(logits), -1).numpy(),
                               rtol=1e-5, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# 2. Beam search vs BeamSearchScorer


@dataclasses.dataclass
class RefStep:
    tokens: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    done: bool
    finished: list  # [(score, generated ids without eos)]
    eos_ranks: list  # ranks at which an eos candidate appeared this step


def reference_beam_search(opts: S.SamplingOptions, model, max_new: int, pick, prompt=PROMPT, eos=EOS):
    """Upstream's vendored `_beam_search` loop (batch 1), with transformers 4.52.1's processors and
    `BeamSearchScorer`. `pick(probs [1, N], scores [1, N], k) -> LongTensor [1, k]` replaces
    `torch.multinomial(probs, k)`. Returns (steps, finalized generated ids, scorer done)."""
    beams = opts.num_beams
    prompt_len, max_length = len(prompt), len(prompt) + max_new
    procs = hf_processors(opts, min_tokens_to_keep=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = BeamSearchScorer(batch_size=1, num_beams=beams, device="cpu",
                                  length_penalty=opts.length_penalty, do_early_stopping=False,
                                  num_beam_hyps_to_keep=1, max_length=max_length)
    input_ids = torch.tensor([list(prompt)] * beams)
    beam_scores = torch.zeros(beams, dtype=torch.float)
    beam_scores[1:] = -1e9
    steps = []
    while True:
        logits = torch.from_numpy(model(input_ids.numpy()))
        scores = torch.nn.functional.log_softmax(logits.float(), dim=-1)
        scores = procs(input_ids, scores)
        scores = scores + beam_scores[:, None].expand_as(scores)
        vocab = scores.shape[-1]
        scores = scores.view(1, beams * vocab)
        k = 2 * beams
        if opts.greedy:
            next_scores, next_tokens = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        else:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            next_tokens = pick(probs, scores, k)
            next_scores = torch.gather(scores, -1, next_tokens)
            next_scores, order = torch.sort(next_scores, descending=True, dim=1)
            next_tokens = torch.gather(next_tokens, -1, order)
        next_indices = torch.div(next_tokens, vocab, rounding_mode="floor")
        next_tokens = next_tokens % vocab
        out = scorer.process(input_ids, next_scores, next_tokens, next_indices, pad_token_id=eos,
                             eos_token_id=eos, decoder_prompt_len=prompt_len)
        beam_scores = out["next_beam_scores"]
        beam_tokens, beam_idx = out["next_beam_tokens"], out["next_beam_indices"]
        input_ids = torch.cat([input_ids[beam_idx, :], beam_tokens.unsqueeze(-1)], dim=-1)
        finished = [(s, h[prompt_len:].numpy()) for s, h, _ in scorer._beam_hyps[0].beams]
        eos_ranks = [r for r, t in enumerate(next_tokens[0].tolist()) if t == eos]
        done = bool(scorer.is_done) or input_ids.shape[-1] >= max_length
        steps.append(RefStep(beam_tokens.numpy(), beam_idx.numpy(), beam_scores.numpy().copy(), done,
                             finished, eos_ranks))
        if done:
            break
    final = scorer.finalize(input_ids, beam_scores, next_tokens, next_indices, pad_token_id=eos,
                            eos_token_id=eos, max_length=max_length, decoder_prompt_len=prompt_len)
    return steps, final["sequences"][0, prompt_len:].numpy(), bool(scorer.is_done)


def run_ours(opts: S.SamplingOptions, model, max_new: int, rng=None, draw=None, prompt=PROMPT, eos=EOS):
    """Drive our decoder like the runtime's loop: rows follow `source_rows`, then append tokens."""
    dec = S.make_decoder(opts, prompt_ids=prompt, eos_id=eos, max_new_tokens=max_new,
                         rng=rng or np.random.default_rng(0), draw=draw)
    rows = np.tile(np.array(prompt, dtype=np.int64), (dec.rows, 1))
    steps = []
    while True:
        step = dec.update(model(rows))
        rows = np.concatenate([rows[step.source_rows], step.tokens[:, None]], axis=1)
        steps.append((step, getattr(dec, "beam_scores", None), getattr(dec, "finished", None)))
        if step.done:
            return steps, dec.finalize()


def torch_multinomial_picker(seed: int, log: list):
    """Upstream's draw (torch.multinomial without replacement), recording what it hands out."""
    gen = torch.Generator().manual_seed(seed)

    def pick(probs, scores, k):
        idx = torch.multinomial(probs, num_samples=k, generator=gen)
        log.append((probs[0].numpy().copy(), idx[0].numpy().copy()))
        return idx
    return pick


def replay_draw(log: list):
    """Our `draw`: hand out the reference's indices, checking our probabilities match its own."""
    queue = list(log)

    def draw(probs, k, rng):
        ref_probs, idx = queue.pop(0)
        np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=PROB_ATOL)
        assert idx.size == k
        return idx
    return draw


def assert_same_run(ref_steps, ref_final, our_steps, our_final):
    """Per step: tokens, source rows, beam scores, done, finished hypotheses; then the result."""
    assert len(our_steps) == len(ref_steps)
    for t, ((step, scores, finished), ref) in enumerate(zip(our_steps, ref_steps)):
        np.testing.assert_array_equal(step.tokens, ref.tokens, err_msg=f"step {t}")
        np.testing.assert_array_equal(step.source_rows, ref.rows, err_msg=f"step {t}")
        np.testing.assert_allclose(scores, ref.scores, rtol=SCORE_RTOL, atol=SCORE_ATOL, err_msg=f"step {t}")
        assert step.done == ref.done, f"step {t}"
        assert len(finished) == len(ref.finished), f"step {t}"
        for (s, h), (rs, rh) in zip(finished, ref.finished):
            np.testing.assert_array_equal(h, rh)
            np.testing.assert_allclose(s, rs, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    np.testing.assert_array_equal(our_final, ref_final)
    assert our_final.dtype == np.int64


BEAM_CASES = {
    # name: (options, eos_bias, max_new)
    "upstream": (S.SamplingOptions(), 4.0, 40),
    "upstream-eos-likely": (S.SamplingOptions(), 7.0, 40),
    "upstream-capped": (S.SamplingOptions(), -30.0, 12),
    "capped-with-hypotheses": (S.SamplingOptions(), 3.0, 5),
    "length-penalty+1": (S.SamplingOptions(length_penalty=1.0), 5.0, 30),
    "length-penalty-0.7": (S.SamplingOptions(length_penalty=-0.7), 5.0, 30),
    "length-penalty+2": (S.SamplingOptions(length_penalty=2.0, top_p=0.95), 6.0, 30),
    "four-beams-loose": (S.SamplingOptions(num_beams=4, top_k=0, top_p=1.0, temperature=1.3,
                                           repetition_penalty=1.0), 5.0, 25),
    "two-beams": (S.SamplingOptions(num_beams=2, top_k=5, top_p=0.5, temperature=0.6), 5.0, 25),
}


@pytest.mark.parametrize("case", list(BEAM_CASES))
def test_beam_sampling_matches_beam_search_scorer(case):
    opts, eos_bias, max_new = BEAM_CASES[case]
    seen = {"scorer_done": 0, "length_cap": 0, "eos_kept": 0, "eos_dropped": 0, "ends_with_eos": 0}
    for seed in range(12):
        model = lambda rows, seed=seed: table_logits(seed, rows, eos_bias)  # noqa: E731
        log = []
        ref_steps, ref_final, ref_done = reference_beam_search(opts, model, max_new,
                                                               torch_multinomial_picker(seed, log))
        our_steps, our_final = run_ours(opts, model, max_new, draw=replay_draw(log))
        assert_same_run(ref_steps, ref_final, our_steps, our_final)
        # Result shape rule: finished hypothesis -> ends with eos; length-capped -> exactly max_new, no eos.
        assert (our_final[-1] == EOS) == (our_final.size <= max_new and EOS in our_final)
        assert our_final.size <= max_new
        seen["scorer_done" if ref_done else "length_cap"] += 1
        seen["eos_kept"] += sum(r < opts.num_beams for s in ref_steps for r in s.eos_ranks)
        seen["eos_dropped"] += sum(r >= opts.num_beams for s in ref_steps for r in s.eos_ranks)
        seen["ends_with_eos"] += int(our_final[-1] == EOS)
    # The cases must exercise what they are named for.
    if case == "upstream-capped":
        assert seen["length_cap"] == 12 and seen["ends_with_eos"] == 0, seen
    elif case == "capped-with-hypotheses":  # finalize weighs finished hypotheses against running beams
        assert seen["length_cap"] > 0 and seen["eos_kept"] > 0 and 0 < seen["ends_with_eos"] < 12, seen
    else:
        assert seen["scorer_done"] > 0 and seen["eos_kept"] > 0, seen
    if case in ("upstream", "upstream-eos-likely"):
        assert seen["eos_dropped"] > 0 and seen["ends_with_eos"] > 0, seen


@pytest.mark.parametrize("num_beams", [2, 3, 4])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_deterministic_beam_search_matches_scorer(num_beams, length_penalty):
    """greedy=True with beams: HF `do_sample=False` beam search (top-k candidates, penalty only)."""
    opts = S.SamplingOptions(greedy=True, num_beams=num_beams, length_penalty=length_penalty)
    done = 0
    for seed in range(8):
        model = lambda rows, seed=seed: table_logits(seed, rows, eos_bias=5.0)  # noqa: E731
        ref_steps, ref_final, ref_done = reference_beam_search(opts, model, 30, pick=None)
        our_steps, our_final = run_ours(opts, model, 30, rng=None)
        assert_same_run(ref_steps, ref_final, our_steps, our_final)
        done += ref_done
    assert done > 0


def test_upstream_defaults_at_real_vocab_size():
    """Upstream's options, vocabulary (8194) and ids (8192 start, 8193 stop), 40 prompt ids."""
    vocab, eos, start = 8194, 8193, 8192
    prompt = [1] * 40 + [start]
    opts = S.SamplingOptions()
    model = lambda rows: table_logits(3, rows, 9.0, 4.0, vocab=vocab, eos=eos)  # noqa: E731
    log = []
    ref = reference_beam_search(opts, model, 30, torch_multinomial_picker(0, log), prompt=prompt, eos=eos)
    ours = run_ours(opts, model, 30, draw=replay_draw(log), prompt=prompt, eos=eos)
    assert_same_run(*ref[:2], *ours)
    assert ref[2] and ours[1][-1] == eos  # this seed finishes through the scorer


# --------------------------------------------------------------------------------------------------
# 3. Greedy and plain sampling vs transformers' own `generate`


class _TableConfig(PretrainedConfig):
    model_type = "indextts2-sampling-table"

    def __init__(self, vocab_size=VOCAB, seed=0, eos_bias=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.seed, self.eos_bias = vocab_size, seed, eos_bias


class _TableLM(PreTrainedModel, GenerationMixin):
    """A "model" whose last-position logits are `table_logits` of each row."""

    config_class = _TableConfig

    def __init__(self, config):
        super().__init__(config)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # generate() wants a device and a dtype

    def forward(self, input_ids, attention_mask=None, **kwargs):
        last = torch.from_numpy(table_logits(self.config.seed, input_ids.tolist(), self.config.eos_bias))
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size)
        logits[:, -1] = last
        return CausalLMOutput(logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids}


def hf_generate(opts: S.SamplingOptions, seed: int, eos_bias: float, max_new: int, monkeypatch, log: list):
    """transformers' `generate` (num_beams=1) with torch.multinomial seeded and recorded."""
    model = _TableLM(_TableConfig(seed=seed, eos_bias=eos_bias, eos_token_id=EOS, pad_token_id=EOS))
    real, gen = torch.multinomial, torch.Generator().manual_seed(seed)

    def multinomial(probs, num_samples, **kwargs):
        idx = real(probs, num_samples, generator=gen)
        log.append((probs[0].numpy().copy(), idx[0].numpy().copy()))
        return idx

    monkeypatch.setattr(torch, "multinomial", multinomial)
    ids = torch.tensor([PROMPT])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=not opts.greedy, num_beams=1,
                         top_k=opts.top_k, top_p=opts.top_p, temperature=opts.temperature,
                         repetition_penalty=opts.repetition_penalty, max_new_tokens=max_new, use_cache=False,
                         eos_token_id=EOS, pad_token_id=EOS)
    monkeypatch.setattr(torch, "multinomial", real)
    return out[0, len(PROMPT):].numpy()


SINGLE_CASES = {
    "greedy": (S.SamplingOptions(greedy=True, num_beams=1), 3.0),
    "greedy-no-penalty": (S.SamplingOptions(greedy=True, num_beams=1, repetition_penalty=1.0), 3.0),
    "sample-upstream-warpers": (S.SamplingOptions(num_beams=1), 1.0),
    "sample-loose": (S.SamplingOptions(num_beams=1, top_k=0, top_p=1.0, temperature=1.0,
                                       repetition_penalty=1.2), 4.0),
    "sample-tight": (S.SamplingOptions(num_beams=1, top_k=3, top_p=0.3, temperature=0.5), 3.0),
}


@pytest.mark.parametrize("case", list(SINGLE_CASES))
def test_single_row_decoders_match_hf_generate(case, monkeypatch):
    opts, eos_bias = SINGLE_CASES[case]
    ended_with_eos = capped = 0
    for seed in range(10):
        log = []
        ref = hf_generate(opts, seed, eos_bias, 20, monkeypatch, log)
        model = lambda rows, seed=seed: table_logits(seed, rows, eos_bias)  # noqa: E731
        our_steps, ours = run_ours(opts, model, 20, draw=replay_draw(log))
        np.testing.assert_array_equal(ours, ref)
        assert all(np.array_equal(s.source_rows, [0]) for s, _, _ in our_steps)
        assert [int(s.tokens[0]) for s, _, _ in our_steps] == ours.tolist()
        assert (len(log) == 0) == opts.greedy
        ended_with_eos += int(ours[-1] == EOS)
        capped += int(ours.size == 20 and ours[-1] != EOS)
    assert ended_with_eos > 0 and capped > 0, (ended_with_eos, capped)


def test_plain_sampling_penalises_raw_logits_not_logprobs():
    """HF `_sample` applies the repetition penalty to raw logits: a seen token with a positive logit is
    divided, with a negative logit multiplied (the beam path works on log-probs, which are all < 0)."""
    logits = np.array([[2.0, -1.0, 0.5, 0.0]], dtype=np.float32)
    seen = np.array([[0, 1]])
    opts = S.SamplingOptions(num_beams=1, top_k=0, top_p=1.0, temperature=1.0, repetition_penalty=2.0)
    np.testing.assert_array_equal(S.process_scores(logits, seen, opts, 1), [[1.0, -2.0, 0.5, 0.0]])
    got = []
    dec = S.make_decoder(opts, prompt_ids=[0, 1], eos_id=3, max_new_tokens=1, rng=np.random.default_rng(0),
                         draw=lambda p, k, rng: got.append(p) or np.array([2]))
    dec.update(logits)
    expected = S.softmax(np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32))
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# 4. Statistics of the draw

CHI2_DF4_P1E4 = 23.51  # chi-square critical value, 4 degrees of freedom, p = 1e-4


def test_single_draw_frequencies():
    p = np.array([0.05, 0.0, 0.1, 0.2, 0.25, 0.4])
    rng = np.random.default_rng(1234)
    n = 20000
    draws = np.array([S.draw_without_replacement(p, 1, rng)[0] for _ in range(n)])
    counts = np.bincount(draws, minlength=p.size)
    assert counts[1] == 0  # zero probability: never drawn
    live = p > 0
    chi2 = np.sum((counts[live] - n * p[live]) ** 2 / (n * p[live]))
    assert chi2 < CHI2_DF4_P1E4, (chi2, counts)


def test_pair_draws_follow_successive_sampling():
    """First draw ~ p; second given first = i ~ p_j / (1 - p_i) (torch.multinomial without replacement)."""
    p = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
    rng = np.random.default_rng(99)
    n = 40000
    pairs = np.array([S.draw_without_replacement(p, 2, rng) for _ in range(n)])
    assert np.all(pairs[:, 0] != pairs[:, 1])
    joint = np.zeros((5, 5))
    np.add.at(joint, (pairs[:, 0], pairs[:, 1]), 1)
    expected = p[:, None] * p[None, :] / (1 - p[:, None]) * n
    np.fill_diagonal(expected, 0)
    sigma = np.sqrt(expected * (1 - expected / n))
    off = ~np.eye(5, dtype=bool)
    assert np.all(np.abs(joint - expected)[off] <= 5 * sigma[off]), (joint, expected)  # 5 sigma per bin
    np.testing.assert_allclose(joint.sum(1) / n, p, atol=5 * np.sqrt(p * (1 - p) / n).max())


def test_draw_is_reproducible_and_seed_dependent():
    p = np.random.default_rng(0).dirichlet(np.ones(100))
    a = [S.draw_without_replacement(p, 6, np.random.default_rng(7)) for _ in range(2)]
    b = S.draw_without_replacement(p, 6, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.array_equal(a[0], b)
    assert a[0].dtype == np.int64 and np.unique(a[0]).size == 6


def test_decoders_are_reproducible_with_the_same_seed():
    model = lambda rows: table_logits(5, rows, eos_bias=-30.0)  # noqa: E731  (no eos: always 30 steps)
    for opts in (S.SamplingOptions(), S.SamplingOptions(num_beams=1)):
        runs = []
        for seed in (11, 11, 12):
            steps, _ = run_ours(opts, model, 30, rng=np.random.default_rng(seed))
            runs.append(np.stack([s.tokens for s, _, _ in steps]))  # [30, rows]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert not np.array_equal(runs[0], runs[2])


# --------------------------------------------------------------------------------------------------
# 5. Fewer than 2·beams candidates with non-zero probability


def test_draw_returns_only_nonzero_entries():
    p = np.zeros(20)
    p[[3, 11]] = [0.25, 0.75]
    got = S.draw_without_replacement(p, 6, np.random.default_rng(0))
    assert sorted(got.tolist()) == [3, 11]


def test_select_candidates_fills_with_best_scored_zero_probability_entries():
    vocab = 10
    scores = np.full(3 * vocab, -np.inf, dtype=np.float32)
    scores[[2, 7]] = [-0.1, -1.5]  # beam 0: the only live entries
    scores[vocab + np.array([4, 1, 8])] = np.float32(-1e9)  # beam 1: ties (float32 swallows small offsets)
    scores[2 * vocab + 5] = np.float32(-1e9) - np.float32(128.0)  # beam 2: slightly worse
    idx, sc = S.select_candidates(scores, 6, np.random.default_rng(0))
    assert idx.tolist() == [2, 7, vocab + 1, vocab + 4, vocab + 8, 2 * vocab + 5]
    np.testing.assert_array_equal(sc, scores[idx])
    # Only -inf left for the last slots: lowest flat index first among them.
    scores[vocab:] = -np.inf
    idx, _ = S.select_candidates(scores, 6, np.random.default_rng(0))
    assert idx.tolist() == [2, 7, 0, 1, 3, 4]


@pytest.mark.parametrize("seed", range(6))
def test_first_step_with_strict_top_p_fills_from_dead_beams(seed):
    """top_p tiny leaves beam 0 with min_tokens_to_keep=2 live entries; beams 1-2 (-1e9) underflow to
    probability 0. The 4 free slots take beam-1/2 entries at ~-1e9; the scorer then continues a beam
    from row 1 with a -1e9 score. Checked against BeamSearchScorer fed with the same candidates."""
    opts = S.SamplingOptions(top_p=1e-6)
    model = lambda rows: table_logits(seed, rows)  # noqa: E731
    partial = []

    def recording_draw(probs, k, rng):
        got = S.draw_without_replacement(probs, k, rng)
        partial.append(got)
        return got

    our_steps, our_final = run_ours(opts, model, 8, rng=np.random.default_rng(seed), draw=recording_draw)
    first, scores, _ = our_steps[0]
    assert partial[0].size == 2  # only two entries had non-zero probability
    assert 1 in first.source_rows.tolist() and np.isclose(scores.min(), -1e9, rtol=1e-6)

    queue = list(partial)

    def pick(probs, flat_scores, k):  # the same rule, computed on torch's side
        drawn = torch.from_numpy(queue.pop(0))
        assert bool((probs[0, drawn] > 0).all())
        zero = torch.nonzero(probs[0] == 0).flatten()
        zero = zero[~torch.isin(zero, drawn)]
        order = torch.sort(flat_scores[0, zero], descending=True, stable=True).indices
        return torch.cat([drawn, zero[order][: k - drawn.numel()]])[None]

    ref_steps, ref_final, _ = reference_beam_search(opts, model, 8, pick)
    assert_same_run(ref_steps, ref_final, our_steps, our_final)


# --------------------------------------------------------------------------------------------------
# 6. Validation and misuse


@pytest.mark.parametrize("field,value", [
    ("greedy", 1), ("num_beams", 0), ("num_beams", 2.0), ("num_beams", True), ("top_k", -1), ("top_k", 3.5),
    ("top_p", -0.1), ("top_p", 1.5), ("top_p", float("nan")), ("temperature", 0.0), ("temperature", -1.0),
    ("temperature", float("inf")), ("repetition_penalty", 0.0), ("repetition_penalty", "10"),
    ("length_penalty", float("nan")), ("length_penalty", None),
])
def test_options_validation(field, value):
    with pytest.raises(ValueError, match=field):
        S.SamplingOptions(**{field: value})


def test_options_defaults_are_upstreams():
    o = S.SamplingOptions()
    got = (o.greedy, o.num_beams, o.top_k, o.top_p, o.temperature, o.repetition_penalty, o.length_penalty)
    assert got == (False, 3, 30, 0.8, 0.8, 10.0, 0.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt_ids=[[1, 2]]), "prompt_ids"),
    (dict(prompt_ids=[1.5, 2.0]), "prompt_ids"),
    (dict(prompt_ids=[-1, 2]), "prompt_ids"),
    (dict(eos_id=-1), "eos_id"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(rng=None), "rng"),
])
def test_make_decoder_validation(kwargs, match):
    args = dict(prompt_ids=PROMPT, eos_id=EOS, max_new_tokens=5, rng=np.random.default_rng(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        S.make_decoder(S.SamplingOptions(), **args)


def test_make_decoder_picks_the_strategy():
    rng = np.random.default_rng(0)
    mk = lambda **kw: S.make_decoder(S.SamplingOptions(**kw), prompt_ids=PROMPT, eos_id=EOS,  # noqa: E731
                                     max_new_tokens=5, rng=rng)
    assert type(mk()) is S.BeamSearchDecoder and mk().rows == 3
    assert type(mk(greedy=True)) is S.BeamSearchDecoder
    assert type(mk(num_beams=1)) is S.SamplingDecoder and mk(num_beams=1).rows == 1
    assert type(mk(num_beams=1, greedy=True)) is S.GreedyDecoder


@pytest.mark.parametrize("num_beams", [1, 3])
def test_update_rejects_bad_logits_and_use_after_done(num_beams):
    dec = S.make_decoder(S.SamplingOptions(num_beams=num_beams), prompt_ids=PROMPT, eos_id=EOS,
                         max_new_tokens=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="logits"):
        dec.update(np.zeros((num_beams + 1, VOCAB), dtype=np.float32))
    step = dec.update(table_logits(0, [PROMPT] * num_beams))
    assert step.done and step.tokens.dtype == np.int64 and step.source_rows.dtype == np.int64
    with pytest.raises(RuntimeError):
        dec.update(table_logits(0, [PROMPT] * num_beams))
    out = dec.finalize()
    assert out.size == 1 and out.dtype == np.int64
    np.testing.assert_array_equal(dec.finalize(), out)  # idempotent


@pytest.mark.parametrize("num_beams", [2, 3, 4])
@pytest.mark.parametrize("greedy", [False, True])
def test_settled_prefix_only_grows_and_starts_the_result(num_beams, greedy):
    """`settled()` never shrinks nor changes, holds no eos, and the final result starts with it: what a
    streaming caller hands on early is never taken back. Random logits with a peaked, repeating
    favourite make the beams agree on long prefixes, and a likely eos ends some searches early."""
    eos, vocab, steps = 3, 12, 40
    settled_early = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        options = S.SamplingOptions(greedy=greedy, num_beams=num_beams, top_k=0, top_p=1.0, temperature=1.0,
                                  repetition_penalty=1.0)
        decoder = S.make_decoder(options, prompt_ids=[1, 1, 8], eos_id=eos, max_new_tokens=steps,
                               rng=np.random.default_rng(seed + 100))
        before = np.zeros(0, dtype=np.int64)
        for step in range(steps):
            logits = rng.standard_normal((num_beams, vocab)).astype(np.float32)
            logits[:, (step * 5) % vocab] += 4.0  # a favourite every beam likes
            logits[:, eos] += 1.0 if step > 20 else -3.0
            done = decoder.update(logits).done
            now = decoder.settled()
            assert now.dtype == np.int64 and eos not in now.tolist()
            assert now[: before.size].tolist() == before.tolist(), (seed, step)
            if not done and now.size > 0:
                settled_early += 1
            before = now
            if done:
                break
        result = decoder.finalize()
        assert result[: before.size].tolist() == before.tolist(), seed
    assert settled_early > 30  # over the 30 searches, codes settle before the end (not only at the end)


@pytest.mark.parametrize("greedy", [False, True])
def test_single_row_settles_every_step(greedy):
    options = S.SamplingOptions(greedy=greedy, num_beams=1, top_k=0, top_p=1.0, temperature=1.0,
                              repetition_penalty=1.0)
    decoder = S.make_decoder(options, prompt_ids=[1, 8], eos_id=0, max_new_tokens=10,
                           rng=np.random.default_rng(0))
    for step in range(1, 6):
        logits = np.full((1, 6), -5.0, dtype=np.float32)
        logits[0, 0 if step == 5 else step] = 5.0  # tokens 1, 2, 3, 4, then eos
        decoder.update(logits)
        assert decoder.settled().tolist() == list(range(1, min(step, 4) + 1))
    assert decoder.finalize().tolist() == [1, 2, 3, 4, 0]
