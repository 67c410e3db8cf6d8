"""Token selection for the GPT decode loop, reproducing upstream IndexTTS2's generation (numpy only).

Upstream `UnifiedVoice.inference_speech` calls a vendored copy of HuggingFace's `GenerationMixin`
(`_beam_search` with `transformers.BeamSearchScorer`, transformers 4.52.1) with `do_sample=True,
num_beams=3, top_k=30, top_p=0.8, temperature=0.8, repetition_penalty=10.0, length_penalty=0.0`
(architecture.md §2.1.5). This module rebuilds those semantics without torch:

* `process_scores`: the logits-processor chain `RepetitionPenalty -> Temperature -> TopK -> TopP`.
  Beam search applies it to log-probabilities; plain sampling and greedy apply it to raw logits
  (HF `_sample`), which is not the same thing for the repetition penalty.
* `GreedyDecoder`, `SamplingDecoder`, `BeamSearchDecoder` share whisper's `TokenDecoder` seam:
  `update(logits) -> Step` once per model step, then `finalize()`.

All randomness goes through a passed-in `numpy.random.Generator` and one injectable `draw` function,
so tests can feed the same candidates to this module and to the torch reference.

Known, deliberate differences from upstream (all on implementation-defined or numerically fuzzy points):
* Top-p breaks ties in the sort by index (stable sort); torch's CPU sort is not stable for large rows.
* When fewer candidates than requested have non-zero probability, `torch.multinomial` (CPU, no
  replacement) returns arbitrary zero-probability indices (its top-k over `p / Exp(1)` keys, all 0);
  here they are the best-scored zero-probability entries, lowest index first (`select_candidates`).
* Exponentials and sums come from numpy, so scores can differ from torch's by an ulp or so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import InputError
from .presets import DEFAULT_PRESET, LIMITS, is_int as _is_int

BEAM_INIT_SCORE = -1e9  # upstream `beam_scores[:, 1:] = -1e9`: only beam 0 is live on the first step
BEAM_MIN_TOKENS_TO_KEEP = 2  # HF: 1 + number of eos ids when num_beams > 1, else 1

# draw(probs f64/f32 [N], k, rng) -> int64 [<= k] distinct indices, drawn without replacement
DrawFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


class NonFiniteScores(ValueError):
    """The scores of a step hold NaN / +inf, or no finite value: the model, not the options, is at fault."""


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick codes. Defaults are upstream `infer()`'s (it always beam-samples).

    `greedy` means HF `do_sample=False`: with `num_beams == 1` it is argmax after the repetition
    penalty; with `num_beams > 1` it is deterministic beam search (top-k candidates instead of a draw).
    Temperature, top-k and top-p only act when sampling.
    """

    greedy: bool = False
    num_beams: int = DEFAULT_PRESET.num_beams  # defaults: presets/default.yaml (upstream's 3, 30, 0.8, 0.8, 10)
    # sampling-related options (HF semantics: top_k 0 and top_p 1.0 switch the filter off)
    top_k: int = DEFAULT_PRESET.top_k
    top_p: float = DEFAULT_PRESET.top_p
    temperature: float = DEFAULT_PRESET.temperature
    # applied to every id already in the row, prompt ids included (CTRL, arXiv:1909.05858)
    repetition_penalty: float = DEFAULT_PRESET.repetition_penalty
    # beam hypotheses are ranked by sum_logprobs / generated_len ** length_penalty
    length_penalty: float = 0.0

    def __post_init__(self):
        """Every field within `presets.LIMITS` (InputError naming the field and its range)."""
        if not isinstance(self.greedy, (bool, np.bool_)):
            raise InputError(f"SamplingOptions: greedy must be a bool, got {self.greedy!r}")
        for name in ("num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "length_penalty"):
            LIMITS[name].check(name, getattr(self, name))


@dataclass(frozen=True)
class Step:
    """What one `update` decided."""

    tokens: np.ndarray  # int64 [rows]: the token appended to each row this step
    source_rows: np.ndarray  # int64 [rows]: previous row each new row continues (reorder the KV cache by it)
    done: bool  # True: stop; don't run the model again


# --------------------------------------------------------------------------------------------------
# Pure pieces: scores are float32 [rows, V] (or [N] where noted); nothing here mutates its input.


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-softmax over the last axis (HF beam search: `log_softmax(logits.float())`)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)  # [.., V]
    lse = np.log(np.exp(shifted.astype(np.float64)).sum(axis=-1, keepdims=True))  # [.., 1], f64 for accuracy
    return shifted - lse.astype(np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis; -inf gives exactly 0 and so does float32 underflow."""
    x = np.asarray(scores, dtype=np.float32)
    top = x.max(axis=-1, keepdims=True)
    if not np.all(np.isfinite(top)):
        raise NonFiniteScores("softmax: a row has no finite score")
    e = np.exp((x - top).astype(np.float64))  # [.., V]
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def apply_repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> np.ndarray:
    """HF `RepetitionPenaltyLogitsProcessor`: each id present in a row's sequence, once, gets
    `s * penalty` if `s < 0` else `s / penalty`.

    scores f32 [rows, V]; sequences int [rows, L] (prompt ids included, as upstream's input_ids are).
    """
    scores = np.asarray(scores, dtype=np.float32)
    if penalty == 1.0:
        return scores
    seen = np.zeros(scores.shape, dtype=bool)  # [rows, V]
    seen[np.arange(scores.shape[0])[:, None], np.asarray(sequences, dtype=np.int64)] = True
    p = np.float32(penalty)  # torch computes a float32 tensor op python-float in float32
    penalised = np.where(scores < 0, scores * p, scores / p)
    return np.where(seen, penalised, scores)


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """HF `TemperatureLogitsWarper`: `s / T` (in float32, as torch does with a python scalar)."""
    return np.asarray(scores, dtype=np.float32) / np.float32(temperature)


def top_k_filter(scores: np.ndarray, top_k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """HF `TopKLogitsWarper`: keep every entry >= the k-th largest (ties at the k-th are all kept),
    k = min(max(top_k, min_tokens_to_keep), V); the rest become -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    vocab = scores.shape[-1]
    k = min(max(int(top_k), int(min_tokens_to_keep)), vocab)
    kth = np.partition(scores, vocab - k, axis=-1)[..., vocab - k, None]  # [rows, 1]
    return np.where(scores < kth, np.float32(-np.inf), scores)


def top_p_filter(scores: np.ndarray, top_p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """HF `TopPLogitsWarper` (nucleus): sort ascending, drop entries whose cumulative probability is
    <= 1 - top_p, but never the `min_tokens_to_keep` largest; dropped entries become -inf.

    Only entries above -inf are sorted (after top-k that is ~30 of 8194): the others have probability 0,
    sort first and are already filtered, so the result is the same. The cumulative sum runs in float64
    and is rounded to float32, as torch's CPU cumsum does; the threshold `1 - top_p` is rounded to
    float32 like torch's tensor-vs-scalar compare. Ties sort by index (torch's sort is not stable).
    """
    scores = np.asarray(scores, dtype=np.float32)
    out = scores.copy()
    threshold = np.float32(1.0 - top_p)
    for line, kept in zip(scores.reshape(-1, scores.shape[-1]), out.reshape(-1, scores.shape[-1])):
        live = np.flatnonzero(line > -np.inf)  # [n]
        if live.size == 0:
            continue
        order = live[np.argsort(line[live], kind="stable")]  # [n] ascending, ties by index
        cumulative = np.cumsum(softmax(line[order]).astype(np.float64)).astype(np.float32)  # [n]
        drop = cumulative <= threshold
        drop[max(live.size - int(min_tokens_to_keep), 0):] = False  # keep the largest ones
        kept[order[drop]] = -np.inf
    return out


def process_scores(scores: np.ndarray, sequences: np.ndarray, options: SamplingOptions,
                   min_tokens_to_keep: int) -> np.ndarray:
    """The processor chain HF builds for upstream's `generate` call, in its order.

    scores f32 [rows, V] (log-probs for beam search, raw logits otherwise); sequences int [rows, L].
    The warpers (temperature, top-k, top-p) only exist when sampling (HF adds them iff `do_sample`),
    and only when they do something (`T != 1`, `top_k != 0`, `top_p < 1`).
    """
    scores = apply_repetition_penalty(scores, sequences, options.repetition_penalty)
    if options.greedy:
        return scores
    if options.temperature != 1.0:
        scores = apply_temperature(scores, options.temperature)
    if options.top_k != 0:
        scores = top_k_filter(scores, options.top_k, min_tokens_to_keep)
    if options.top_p < 1.0:
        scores = top_p_filter(scores, options.top_p, min_tokens_to_keep)
    return scores


def draw_without_replacement(probs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw up to k distinct indices from probs [N], in draw order -> int64 [min(k, nonzero)].

    Exponential race, the same trick torch uses: the keys `p_i / E_i` with `E_i ~ Exp(1)` sorted
    descending are distributed exactly like successive sampling without replacement (each next index
    drawn with probability proportional to p among those left), i.e. `torch.multinomial(probs, k)`.
    Zero-probability entries are never drawn; the caller decides how to fill the missing slots.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    live = np.flatnonzero(probs > 0)
    with np.errstate(divide="ignore"):
        keys = probs[live] / rng.standard_exponential(live.size)  # [nonzero]
    if live.size > k:
        top = np.argpartition(-keys, k - 1)[:k]
        return live[top[np.argsort(-keys[top], kind="stable")]]
    return live[np.argsort(-keys, kind="stable")]


def select_candidates(scores: np.ndarray, k: int, rng: np.random.Generator | None,
                      draw: DrawFn = draw_without_replacement, sample: bool = True):
    """Pick k beam candidates from the flattened scores [N] -> (indices int64 [k], scores f32 [k]),
    best score first (ties keep draw order).

    Sampling (HF beam-sample): `draw` k indices from `softmax(scores)`, then sort them by score.
    When fewer than k entries have non-zero probability (upstream's first step with a strict top-p:
    beams 1.. carry -1e9 and underflow to 0), the draw yields fewer; the free slots get the
    best-scored zero-probability entries (lowest index first on ties). Their scores are ~-1e9 or
    -inf, so they rank last; torch would pick arbitrary zero-probability entries here, possibly -inf
    ones, which could leave a running beam at -inf.
    Not sampling (HF beam search): the k best scores, lowest index first on ties.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if not sample:
        picked = np.argsort(-scores, kind="stable")[:k]
        return picked.astype(np.int64), scores[picked]
    probs = softmax(scores)
    picked = np.asarray(draw(probs, k, rng), dtype=np.int64).reshape(-1)
    if picked.size > k or np.unique(picked).size != picked.size:
        raise ValueError(f"draw returned {picked.size} indices for k={k} or repeated one: {picked}")
    if picked.size < k:
        spare = np.setdiff1d(np.flatnonzero(probs == 0), picked)  # ascending index
        spare = spare[np.argsort(-scores[spare], kind="stable")][: k - picked.size]
        picked = np.concatenate([picked, spare])
    ranked = np.argsort(-scores[picked], kind="stable")
    return picked[ranked], scores[picked[ranked]]


# --------------------------------------------------------------------------------------------------
# Decoders


class TokenDecoder:
    """One search strategy. The decode loop runs the model on `rows` rows, calls `update` with the
    last-position logits, reorders its KV cache by `Step.source_rows`, feeds `Step.tokens`, and stops
    when `Step.done`; then `finalize` gives the result."""

    rows: int

    def update(self, logits: np.ndarray) -> Step:
        """logits float [rows, V] of the last position -> the tokens appended this step."""
        raise NotImplementedError

    def finalize(self) -> np.ndarray:
        """int64 generated ids of the best hypothesis (no prompt ids), ending with eos iff it finished."""
        raise NotImplementedError

    def settled(self) -> np.ndarray:
        """int64 generated ids (no eos) that every possible result starts with, whatever later steps
        decide: what a streaming caller may hand on now. It only ever grows, and `finalize()` starts
        with it."""
        raise NotImplementedError


def _check_logits(logits: np.ndarray, rows: int) -> np.ndarray:
    """Raw logits as float32 [rows, V]. NaN or +inf (a broken model step) raises NonFiniteScores, which
    IndexTTS2 reports as a GenerationError; -inf is a banned token (ban_early_stop) and stays."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise ValueError(f"logits must be [rows={rows}, V], got shape {logits.shape}")
    logits = logits.astype(np.float32, copy=False)  # HF: `.float()` / `.to(dtype=float32)`
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise NonFiniteScores("logits: NaN or +inf from the model")
    return logits


class _SingleRowDecoder(TokenDecoder):
    """HF `_sample` with one sequence: process raw logits, choose one token, stop on eos or length."""

    rows = 1

    def __init__(self, options: SamplingOptions, prompt_ids: np.ndarray, eos_ids: tuple[int, ...],
                 max_new_tokens: int, rng: np.random.Generator | None, draw: DrawFn):
        self.options, self.eos_ids, self.max_new_tokens = options, eos_ids, max_new_tokens
        self.rng, self.draw = rng, draw
        self._sequence = prompt_ids.copy()  # [P + generated]
        self._prompt_len = prompt_ids.size
        self._done = False

    def _choose(self, scores: np.ndarray) -> int:
        """scores f32 [V] after the processors -> token id."""
        raise NotImplementedError

    def update(self, logits: np.ndarray) -> Step:
        if self._done:
            raise RuntimeError("update() called after the decoder reported done")
        logits = _check_logits(logits, self.rows)
        scores = process_scores(logits, self._sequence[None], self.options, min_tokens_to_keep=1)  # [1, V]
        token = self._choose(scores[0])
        self._sequence = np.append(self._sequence, np.int64(token))
        generated = self._sequence.size - self._prompt_len
        self._done = token in self.eos_ids or generated >= self.max_new_tokens
        return Step(np.array([token], dtype=np.int64), np.zeros(1, dtype=np.int64), self._done)

    def finalize(self) -> np.ndarray:
        return self._sequence[self._prompt_len:].copy()

    def settled(self) -> np.ndarray:
        """One sequence: every token is final as soon as it is chosen (the eos is not a code)."""
        generated = self._sequence[self._prompt_len:]
        return generated[:-1].copy() if generated.size and generated[-1] in self.eos_ids else generated.copy()


class GreedyDecoder(_SingleRowDecoder):
    """`do_sample=False, num_beams=1`: argmax after the repetition penalty (first index on ties)."""

    def _choose(self, scores: np.ndarray) -> int:
        return int(np.argmax(scores))


class SamplingDecoder(_SingleRowDecoder):
    """`do_sample=True, num_beams=1`: one draw from softmax of the processed raw logits."""

    def _choose(self, scores: np.ndarray) -> int:
        picked = np.asarray(self.draw(softmax(scores), 1, self.rng), dtype=np.int64).reshape(-1)
        if picked.size != 1:
            raise ValueError(f"draw returned {picked.size} indices for k=1")
        return int(picked[0])


class _BeamHypotheses:
    """HF `BeamHypotheses` (early_stopping=False): the n best finished hypotheses.

    Scores are Python floats, as HF's (`next_score.item() / generated_len ** length_penalty`).
    """

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, float(length_penalty)
        self.beams: list[tuple[float, np.ndarray]] = []  # (score, generated ids without eos)
        self.worst_score = 1e9

    def add(self, tokens: np.ndarray, sum_logprobs: float, generated_len: int) -> None:
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]  # lowest score; the earliest added among equals
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, generated_len: int) -> bool:
        """Full, and no running beam can beat the worst stored one (HF's early_stopping=False heuristic)."""
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / (generated_len ** self.length_penalty)

    def best(self) -> tuple[float, np.ndarray]:
        """Highest score; on ties the one added last (HF: stable sort, then `pop()`)."""
        best = 0
        for i, (score, _) in enumerate(self.beams):
            if score >= self.beams[best][0]:
                best = i
        return self.beams[best]


class BeamSearchDecoder(TokenDecoder):
    """HF beam search (`BeamSearchScorer`, batch 1, early_stopping=False, one returned sequence).

    Per step: log_softmax -> processors (min_tokens_to_keep=2) -> + beam scores -> flatten ->
    2·beams candidates (drawn, or top-k when greedy) sorted by score -> an eos candidate ranked in the
    first `beams` becomes a finished hypothesis, the others fill the next beams in rank order.
    """

    def __init__(self, options: SamplingOptions, prompt_ids: np.ndarray, eos_ids: tuple[int, ...],
                 max_new_tokens: int, rng: np.random.Generator | None, draw: DrawFn):
        if len(eos_ids) != 1:
            raise InputError(f"beam search takes one eos id, got {list(eos_ids)}")
        self.options, self.eos_id, self.max_new_tokens = options, eos_ids[0], max_new_tokens
        self.rng, self.draw = rng, draw
        self.rows = options.num_beams
        self._prompt_len = prompt_ids.size
        self._sequences = np.tile(prompt_ids, (self.rows, 1))  # [beams, P + step]
        self._beam_scores = np.full(self.rows, BEAM_INIT_SCORE, dtype=np.float32)  # [beams]
        self._beam_scores[0] = 0.0
        self._hypotheses = _BeamHypotheses(self.rows, options.length_penalty)
        self._step = 0  # tokens generated so far (HF: cur_len - decoder_prompt_len)
        self._done = False  # HF `beam_scorer.is_done`
        self._result: np.ndarray | None = None

    @property
    def beam_scores(self) -> np.ndarray:
        """float32 [beams]: cumulative processed log-prob of each running row."""
        return self._beam_scores.copy()

    @property
    def finished(self) -> list[tuple[float, np.ndarray]]:
        """The stored finished hypotheses: (score, generated ids without eos), in insertion order."""
        return [(score, tokens.copy()) for score, tokens in self._hypotheses.beams]

    def update(self, logits: np.ndarray) -> Step:
        if self._done or self._step >= self.max_new_tokens:
            raise RuntimeError("update() called after the decoder reported done")
        logits = _check_logits(logits, self.rows)
        scores = process_scores(log_softmax(logits), self._sequences, self.options,
                                min_tokens_to_keep=BEAM_MIN_TOKENS_TO_KEEP)  # [beams, V]
        scores = scores + self._beam_scores[:, None]  # [beams, V]
        vocab = scores.shape[1]
        flat, cand_scores = select_candidates(scores.reshape(-1), 2 * self.rows, self.rng, self.draw,
                                              sample=not self.options.greedy)  # [2·beams] each
        cand_rows, cand_tokens = np.divmod(flat, vocab)
        self._step += 1
        tokens, rows, beam_scores = self._advance(cand_tokens, cand_rows, cand_scores)
        self._sequences = np.concatenate([self._sequences[rows], tokens[:, None]], axis=1)
        self._beam_scores = beam_scores
        return Step(tokens, rows, bool(self._done or self._step >= self.max_new_tokens))

    def _advance(self, cand_tokens: np.ndarray, cand_rows: np.ndarray, cand_scores: np.ndarray):
        """`BeamSearchScorer.process` for one batch item -> (tokens, source rows, scores) [beams] each."""
        tokens, rows, scores = [], [], []
        for rank, (token, row, score) in enumerate(zip(cand_tokens, cand_rows, cand_scores)):
            if token == self.eos_id:
                if rank < self.rows:  # an eos ranked below the first `beams` candidates is dropped
                    self._hypotheses.add(self._sequences[row, self._prompt_len:], float(score), self._step)
            else:
                tokens.append(token)
                rows.append(row)
                scores.append(score)
            if len(tokens) == self.rows:
                break
        if len(tokens) < self.rows:  # unreachable: each row has one eos, so >= beams candidates are not eos
            raise RuntimeError(f"only {len(tokens)} non-eos candidates for {self.rows} beams")
        # HF compares against the best of *all* candidates of the step, eos and unused ones included.
        self._done = self._done or self._hypotheses.is_done(float(cand_scores.max()), self._step)
        return (np.array(tokens, dtype=np.int64), np.array(rows, dtype=np.int64),
                np.array(scores, dtype=np.float32))

    def settled(self) -> np.ndarray:
        """The longest prefix shared by every candidate result: each running beam and each stored
        finished hypothesis (`finalize` picks one of them, and later steps only extend running beams or
        drop candidates, so this prefix never shrinks)."""
        candidates = [self._sequences[row, self._prompt_len:] for row in range(self.rows)]
        candidates += [tokens for _, tokens in self._hypotheses.beams]
        shortest = min(c.size for c in candidates)
        agree = np.all([c[:shortest] == candidates[0][:shortest] for c in candidates[1:]], axis=0)
        length = shortest if np.all(agree) else int(np.argmin(agree))
        return candidates[0][:length].astype(np.int64)

    def finalize(self) -> np.ndarray:
        """Best hypothesis; running beams compete too unless the scorer was done. Like HF's finalize,
        one eos is appended when the result is shorter than max_new_tokens (so a length-capped result
        has none)."""
        if self._result is None:
            if not self._done:
                generated = self._sequences.shape[1] - self._prompt_len
                for row in range(self.rows):
                    self._hypotheses.add(self._sequences[row, self._prompt_len:],
                                         float(self._beam_scores[row]), generated)
            _, best = self._hypotheses.best()
            if best.size < self.max_new_tokens:
                best = np.append(best, np.int64(self.eos_id))
            self._result = best.astype(np.int64)
        return self._result.copy()


def make_decoder(options: SamplingOptions, *, prompt_ids: Sequence[int] | np.ndarray, eos_id: int | Sequence[int],
                 max_new_tokens: int, rng: np.random.Generator | None,
                 draw: DrawFn | None = None) -> TokenDecoder:
    """Build the decoder upstream's options imply.

    prompt_ids: the prompt's ids (the GPT's fake prefill ids: all 1, last = start mel token): part of
    every row's sequence for the repetition penalty, never part of the result. eos_id: the id that ends a
    sequence, or several (HF's list `eos_token_id`; one row only). rng feeds `draw` (default
    `draw_without_replacement`); it may be None for greedy decoding or with a `draw` that needs none.
    """
    prompt = np.asarray(prompt_ids)
    is_ints = prompt.size == 0 or np.issubdtype(prompt.dtype, np.integer)
    if prompt.ndim != 1 or not is_ints or np.any(prompt < 0):
        raise InputError(f"prompt_ids must be a 1-D sequence of non-negative ints, got {prompt_ids!r}")
    eos_ids = (eos_id,) if _is_int(eos_id) else tuple(eos_id) if isinstance(eos_id, (list, tuple)) else ()
    if not eos_ids or not all(_is_int(i) and i >= 0 for i in eos_ids):
        raise InputError(f"eos_id must be a non-negative int or a non-empty list of them, got {eos_id!r}")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if rng is None and not options.greedy and draw is None:
        raise InputError("sampling needs rng (a numpy.random.Generator)")
    args = (options, prompt.astype(np.int64), tuple(int(i) for i in eos_ids), int(max_new_tokens), rng,
            draw or draw_without_replacement)
    if options.num_beams > 1:
        return BeamSearchDecoder(*args)
    if options.greedy:
        return GreedyDecoder(*args)
    return SamplingDecoder(*args)
