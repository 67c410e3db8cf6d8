"""Semantic-code generation: the KV-cache decode loop and upstream's second "latent" pass.

The decoder graph holds the GPT body once; this module builds its inputs with upstream's rules
(architecture §2.1.2, §2.1.5-2.1.6; upstream-quirks 2 and 4) from the embedding tables in the bundle:

    prefix  = [speaker latents + emovec (32) | speed rows 1, 0]                (2.0: 34 rows)
            = [style @ speaker_projection + bias + emovec | 0 | 0]               (2.5: 3 rows)
    prefill = [prefix | text [0, ids without 0/1, 1] at text positions (+ the language row, 2.5)
               | start mel at mel position 0]
    step k  = mel_embedding[code_k] + mel_pos[k + 1]      (k-th generated code, k >= 1: position 1 unused)
    latent  = [prefix | text [0, ids, 1] | mel [start, codes, stop] at positions 0..N+1] -> hidden states
              (2.0 only: 2.5 has no latent pass)

In 2.5's vocabulary ids 0 and 1 are `!` and `"`: upstream drops them from the GPT input all the same (its
start/stop text tokens keep the numbers 0 and 1), and so does `runs` (spec indextts25.md §2). Upstream
then left-pads the shortened text with one masked row per dropped id; a masked row changes nothing the
GPT computes (no position embedding on the body, mel positions counted after the text), so none is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .decoder_graph import open_decoder
from .kv_cache import DecoderIO, decoder_io
from .manifest import GPTDims
from .sampling import SamplingOptions, TokenDecoder, make_decoder
from .sessions import Graph

TABLES = ("text_embedding", "text_pos_embedding", "mel_embedding", "mel_pos_embedding")
# per family: 2.0's two speed rows; 2.5's language rows and the projection of the CAMPPlus style
FAMILY_TABLES = {"2.0": ("speed_embedding",),
                 "2.5": ("lang_embedding", "speaker_projection", "speaker_projection_bias")}


def join_runs(runs: Iterator[np.ndarray], on_codes: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Every run of final codes (`CodeGenerator.runs`, or another code source) as one int64 array, each
    run handed to `on_codes` first when given."""
    out = []
    for run in runs:
        if on_codes is not None:
            on_codes(run)
        out.append(run)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def ban_early_stop(logits: np.ndarray, step: int, min_codes: int, stop_token: int) -> np.ndarray:
    """HF `min_new_tokens`: before code `min_codes` is reached (steps 1..min_codes) the stop token's raw
    logit is -inf, so a fixed number of codes can be asked for. Returns a copy only when it changes."""
    if step > min_codes:
        return logits
    logits = np.array(logits, dtype=np.float32)
    logits[:, stop_token] = -np.inf
    return logits


@dataclass(frozen=True)
class GptTables:
    """The GPT's embedding tables (outside the decoder graph so one graph serves every call)."""

    text_embedding: np.ndarray  # (number_text_tokens + 1, d)
    text_pos_embedding: np.ndarray  # (max_text_tokens + 2, d)
    mel_embedding: np.ndarray  # (number_mel_codes, d)
    mel_pos_embedding: np.ndarray  # (max_mel_tokens + 3, d)
    speed_embedding: np.ndarray | None = None  # (2, d)                        2.0
    lang_embedding: np.ndarray | None = None  # (languages + 1, d)            2.5
    speaker_projection: np.ndarray | None = None  # (style_dim, d)            2.5: spk_emb_proj, transposed
    speaker_projection_bias: np.ndarray | None = None  # (d,)                 2.5

    @staticmethod
    def load(path: Path, family: str = "2.0") -> "GptTables":
        """The tables of a `family` bundle (a missing one is a KeyError naming it)."""
        with np.load(path, allow_pickle=False) as z:
            return GptTables(**{name: np.ascontiguousarray(z[name], dtype=np.float32)
                                for name in TABLES + FAMILY_TABLES[family]})


@dataclass
class CodeGenerator:
    """The decode loop over the decoder graph, which it addresses by role (`io`) in the graph's cache
    layout (decoder_graph: concat or shared). `io` defaults to the names the decoder's manifest entry
    declares (`kv_cache.decoder_io`; a graph opened without one has the legacy names). `calls` is the
    layout's decoder interface (start, step, extend, reorder), also for tools that time single steps."""

    decoder: Graph
    tables: GptTables
    dims: GPTDims
    io: DecoderIO | None = None

    def __post_init__(self):
        if self.io is None:
            self.io = decoder_io(getattr(self.decoder, "entry", None), self.dims)
        self.calls = open_decoder(self.decoder, self.io, self.dims, self.tables.mel_embedding,
                                  self.tables.mel_pos_embedding)

    def prefix(self, speaker_latent: np.ndarray, emovec: np.ndarray) -> np.ndarray:
        """(1, 32, d) speaker latents and (1, d) emotion vector -> the (1, 34, d) conditioning rows."""
        speed = self.tables.speed_embedding[[1, 0]][None]  # (1, 2, d)
        return np.concatenate([speaker_latent + emovec[:, None, :], speed], axis=1).astype(np.float32)

    def campplus_prefix(self, style: np.ndarray, emovec: np.ndarray) -> np.ndarray:
        """2.5: (1, style_dim) CAMPPlus style and (1, d) emotion vector -> the (1, 3, d) conditioning rows
        [spk_emb_proj(style) + emovec, 0, 0] (upstream's speed rows are zeros in 2.5)."""
        t = self.tables
        speaker = style.astype(np.float32) @ t.speaker_projection + t.speaker_projection_bias  # (1, d)
        rows = np.zeros((1, 3, t.speaker_projection.shape[1]), dtype=np.float32)
        rows[:, 0] = speaker + emovec
        return rows

    def language(self, lang_id: int | None) -> np.ndarray | None:
        """2.5: the language embedding row (d,) upstream adds to every text position; None for 2.0."""
        return None if lang_id is None else self.tables.lang_embedding[lang_id]

    def _rows(self, prefix: np.ndarray, ids: list[int], language: np.ndarray | None = None) -> np.ndarray:
        """[prefix | start text, ids, stop text at text positions (+ `language`, 2.5)] -> (1, P+L+2, d): the
        host-built rows before the mel tokens."""
        d, t = self.dims, self.tables
        ids = [d.start_text_token, *ids, d.stop_text_token]
        text = t.text_embedding[ids] + t.text_pos_embedding[: len(ids)]  # (L+2, d)
        if language is not None:
            text = text + language
        return np.concatenate([prefix, text[None]], axis=1).astype(np.float32)

    def _capacity(self, rows: np.ndarray) -> int:
        """Positions a sequence can reach: its host rows and every mel position (start, codes, stop)."""
        return rows.shape[1] + self.tables.mel_pos_embedding.shape[0]

    def _start(self, prefix: np.ndarray, ids: list[int], language: np.ndarray | None = None):
        """The rows up to the start mel token (at mel position 0) through the decoder -> (logits, hidden,
        state)."""
        rows = self._rows(prefix, ids, language)
        start = np.array([self.dims.start_mel_token], dtype=np.int64)
        return self.calls.start(rows, start, np.zeros(1, dtype=np.int64), self._capacity(rows))

    def token_decoder(self, positions: int, options: SamplingOptions, max_codes: int,
                      rng: np.random.Generator | None) -> TokenDecoder:
        """The search for a sequence whose prefill filled `positions` (host rows and the start mel token):
        upstream's fake prompt ids (all 1, the last the start mel token) count for the repetition penalty."""
        d = self.dims
        fake_ids = [1] * (positions - 1) + [d.start_mel_token]
        return make_decoder(options, prompt_ids=fake_ids, eos_id=d.stop_mel_token, max_new_tokens=max_codes, rng=rng)

    def final_codes(self, decoder: TokenDecoder) -> np.ndarray:
        """A finished search's result cut before its first stop token -> int64 (N,)."""
        codes = np.asarray(decoder.finalize(), dtype=np.int64)
        stops = np.flatnonzero(codes == self.dims.stop_mel_token)
        return codes[: stops[0]] if stops.size else codes

    def generate(self, prefix: np.ndarray, text_ids: list[int], options: SamplingOptions, max_codes: int,
                 rng: np.random.Generator, trace: list | None = None, min_codes: int = 0,
                 on_codes: Callable[[np.ndarray], None] | None = None,
                 language: np.ndarray | None = None) -> np.ndarray:
        """Decode codes for one segment -> int64 (N,), cut before the first stop token.

        min_codes: the stop token is banned for the first `min_codes` codes (HF `min_new_tokens`; 0 = upstream).
        Benchmarks use it to generate a fixed number of codes from random weights.
        `trace`, when given, receives each step's raw last-position logits (rows, V) (for tests).
        `on_codes`, when given, receives codes as soon as they are final (`runs`), in order, each code
        once; together they are the returned codes. It does not change what is generated.
        `language`: 2.5's language row added to the text rows (`language(lang_id)`); None for 2.0."""
        return join_runs(self.runs(prefix, text_ids, options, max_codes, rng, trace, min_codes, language), on_codes)

    def runs(self, prefix: np.ndarray, text_ids: list[int], options: SamplingOptions, max_codes: int,
             rng: np.random.Generator, trace: list | None = None, min_codes: int = 0,
             language: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The decode loop as a generator of runs of final codes (non-empty int64 arrays, in order):
        every step with one row (greedy, plain sampling); with beams, as soon as every candidate result
        agrees on them (`TokenDecoder.settled`). Concatenated they are `generate`'s codes. A consumer that
        stops iterating stops the decoding."""
        d = self.dims
        ids = [t for t in text_ids if t not in (d.start_text_token, d.stop_text_token)]
        calls = self.calls
        # Prefill once with one row; every beam starts from the same prefix, so the cache is tiled.
        logits, hidden, cache = self._start(prefix, ids, language)
        decoder = self.token_decoder(hidden.shape[1], options, max_codes, rng)
        calls.reorder(cache, np.zeros(decoder.rows, dtype=np.int64))
        logits = np.repeat(logits, decoder.rows, axis=0)
        emitted = np.zeros(0, dtype=np.int64)  # codes yielded so far
        for k in range(1, max_codes + 1):
            if trace is not None:
                trace.append(logits)
            step = decoder.update(ban_early_stop(logits, k, min_codes, d.stop_mel_token))
            settled = decoder.settled()
            if settled.size > emitted.size:
                yield settled[emitted.size:]
                emitted = settled
            if step.done:
                break
            calls.reorder(cache, step.source_rows)
            logits = calls.step(cache, np.asarray(step.tokens, dtype=np.int64), np.full(len(step.tokens), k + 1))
        codes = self.final_codes(decoder)
        if not np.array_equal(codes[: emitted.size], emitted):  # settled() promises a prefix of the result
            raise RuntimeError(f"the decoder's result does not start with the {emitted.size} codes it settled")
        if codes.size > emitted.size:
            yield codes[emitted.size:]

    def latent(self, prefix: np.ndarray, text_ids: list[int], codes: np.ndarray) -> np.ndarray:
        """Upstream's second pass: final-normed hidden states that predicted each code -> (1, N, d)."""
        d = self.dims
        mel_ids = np.concatenate([[d.start_mel_token], codes, [d.stop_mel_token]]).astype(np.int64)
        rows = self._rows(prefix, list(text_ids))
        n = mel_ids.shape[0]
        _, hidden, _ = self.calls.start(rows, mel_ids, np.arange(n), rows.shape[1] + n)  # (1, 34+L+2+N+2, d)
        return np.ascontiguousarray(hidden[:, -n:-2])

    def latent_stream(self, prefix: np.ndarray, text_ids: list[int]) -> "LatentStream":
        """An incremental `latent`: prefill the conditioning once, then `extend` with codes as they arrive.

        The GPT is causal and latent row i is the hidden state at the token *before* code i (start mel
        token for i = 0), so the rows for codes[:k] never depend on later codes or on the stop token;
        the concatenated `extend` outputs equal `latent(prefix, text_ids, codes)` up to float rounding."""
        _, hidden, cache = self._start(prefix, list(text_ids))  # the first rows of latent()'s input
        return LatentStream(self, cache, np.ascontiguousarray(hidden[:, -1:]), 1)


@dataclass
class LatentStream:
    """KV-cached second pass for streaming (CodeGenerator.latent_stream): `extend(codes)` -> their latent rows.

    pending : (1, 1, d) hidden state at the last token fed: the latent row of the next code
    position: mel position the next code is fed at (the start token is at 0, code i at i + 1, as in latent)"""

    generator: CodeGenerator
    cache: object  # the layout's state: KVCache or SharedKV
    pending: np.ndarray
    position: int

    def extend(self, codes: np.ndarray) -> np.ndarray:
        """(n,) new codes -> (1, n, d) float32 latent rows for them, in order (n = 0 gives (1, 0, d))."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        n = codes.shape[0]
        if n == 0:
            return self.pending[:, :0].astype(np.float32)
        positions = np.arange(self.position, self.position + n)
        hidden = self.generator.calls.extend(self.cache, codes, positions)  # (1, n, d): row j predicts code j + 1
        rows = np.concatenate([self.pending, hidden[:, :-1]], axis=1).astype(np.float32)  # (1, n, d)
        self.pending = np.ascontiguousarray(hidden[:, -1:])
        self.position += n
        return rows
