"""Batched decoding of independent requests: one decoder call per step for every sequence in flight.

A serving process holds many requests at once; decoding them one after another leaves the decoder's
weights to be read once per request and step. `BatchedGenerator` instead keeps every request's rows in
one set of shared KV buffers (per layer and kind, (max_rows, heads, capacity, head_dim)) and advances all
of them with one call of the shared-layout decoder per step: GroupQueryAttention's per-row `seqlens_k`
lets each row sit at its own length, and each row's codes and mel positions are its own.

    gen = BatchedGenerator(code_generator, BatchOptions(max_rows=12))
    h = gen.add(request)             # prefills the request alone (one call) into free rows -> handle
    updates = gen.step()             # {handle: CodeUpdate(codes final since the last step, done, error)}
    gen.cancel(h)                    # frees its rows; the others go on

Requests join and leave between steps (continuous batching). A request occupies `num_beams` contiguous
rows; when one leaves, the rows after it move down (only their filled positions are copied), so a step
always calls the decoder on rows 0..R-1 with no idle row. Every request keeps its own TokenDecoder,
sampling options and RNG, and takes exactly the steps `CodeGenerator.runs` takes alone: its codes are the
same as decoding it alone with the same seed (the logits of a row do not depend on the other rows; tests
hold it to identical codes).

One BatchedGenerator belongs to one thread (the serving loop): it owns its buffers and request states.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnxruntime as ort

from .errors import BundleError, GenerationError, IndexTTS2Error, InputError, non_finite
from .gpt import CodeGenerator, ban_early_stop
from .kv_cache import reorder_rows
from .sampling import NonFiniteScores, SamplingOptions, TokenDecoder

STAGE = "gpt decode"  # the stage a failed request's error names (pipeline.STAGES[3])


@dataclass(frozen=True)
class BatchOptions:
    """How big the batch is. `max_rows` bounds the sum of the active requests' beams (a greedy or plainly
    sampled request takes one row); `capacity` is the positions each row can hold (None: the model's
    longest sequence: conditioning, the longest text and every mel position). Buffers are reserved for
    max_rows x capacity up front; pages never written are never touched, so an unused reservation costs
    address space only."""

    max_rows: int = 8
    capacity: int | None = None

    def __post_init__(self):
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise InputError(f"BatchOptions.max_rows must be an integer >= 1, got {self.max_rows!r}")
        if self.capacity is not None and (not isinstance(self.capacity, int) or self.capacity < 2):
            raise InputError(f"BatchOptions.capacity must be None or an integer >= 2, got {self.capacity!r}")


@dataclass(frozen=True)
class CodeRequest:
    """One segment to decode: what `CodeGenerator.runs` takes (IndexTTS2.code_request builds it from a
    Speaker, an emotion vector and token ids, with the pipeline's checks).

    prefix   : conditioning rows (CodeGenerator.prefix (1, 34, d); campplus_prefix (1, 3, d) for 2.5)
    text_ids : the segment's BPE ids (start / stop text tokens are added, as in runs)
    language : 2.5's language row (d,) added to every text row (CodeGenerator.language); None for 2.0
    rng      : the request's own generator (None for greedy decoding); decoding draws from it, so a request
               is decoded once (build a new one, with a fresh generator, to decode again)"""

    prefix: np.ndarray
    text_ids: Sequence[int]
    options: SamplingOptions
    max_codes: int
    rng: np.random.Generator | None = None
    min_codes: int = 0
    language: np.ndarray | None = None


@dataclass(frozen=True)
class CodeUpdate:
    """What one step decided for one request. `codes`: int64 codes that became final this step (often
    none with beams), in order; concatenated over the request's updates they are `CodeGenerator.generate`'s
    result. `done`: the request has finished (or failed: `error`) and left the batch."""

    handle: int
    codes: np.ndarray
    done: bool
    error: IndexTTS2Error | None = None


@dataclass
class _Sequence:
    """A request in flight: its rows [first, first + rows) of the buffers, each holding `length` tokens."""

    handle: int
    decoder: TokenDecoder
    first: int
    rows: int
    length: int
    logits: np.ndarray  # (rows, V): the last call's logits, not yet given to the decoder
    min_codes: int
    step: int = 1  # the code number the next update decides (k in CodeGenerator.runs)
    emitted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tokens: np.ndarray | None = None  # (rows,) the codes fed at the next call


class BatchedGenerator:
    """Continuous batching over a shared-layout decoder (see the module docstring)."""

    def __init__(self, generator: CodeGenerator, options: BatchOptions = BatchOptions()):
        if generator.io.layout != "shared":
            raise BundleError("batched decoding needs the shared-buffer decoder; this bundle has the "
                              f"{generator.io.layout} one", "re-export the bundle (export --decoder shared)")
        self.generator, self.options = generator, options
        d, t = generator.dims, generator.tables
        capacity = options.capacity or (d.condition_num_latent + 2 + t.text_pos_embedding.shape[0]
                                        + t.mel_pos_embedding.shape[0])
        io = generator.io
        dtype = generator.decoder.input_dtype(io.past[0])
        self._buffers = [np.zeros((options.max_rows, d.heads, capacity, d.head_dim), dtype) for _ in io.past]
        self._views: dict[tuple[int, int], list[ort.OrtValue]] = {}
        self._active: list[_Sequence] = []  # in row order, rows contiguous from 0
        self._handles = itertools.count()

    # --- state ----------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Positions each row holds."""
        return self._buffers[0].shape[2]

    @property
    def rows_in_use(self) -> int:
        return sum(s.rows for s in self._active)

    @property
    def free_rows(self) -> int:
        return self.options.max_rows - self.rows_in_use

    @property
    def handles(self) -> list[int]:
        """The requests in flight, oldest first."""
        return [s.handle for s in self._active]

    def _values(self, first: int, rows: int) -> list[ort.OrtValue]:
        """OrtValues over rows [first, first + rows) of every buffer (the same memory: no copy)."""
        key = (first, rows)
        if key not in self._views:
            self._views[key] = [ort.OrtValue.ortvalue_from_numpy(b[first:first + rows]) for b in self._buffers]
        return self._views[key]

    # --- requests -------------------------------------------------------------------------------

    def add(self, request: CodeRequest) -> int:
        """Prefill `request` alone into the next free rows (one decoder call) -> its handle. It takes
        part in the next `step`. InputError when it does not fit (rows or positions)."""
        gen, d = self.generator, self.generator.dims
        beams = request.options.num_beams
        if beams > self.free_rows:
            raise InputError(f"batch: the request needs {beams} rows, {self.free_rows} of "
                             f"{self.options.max_rows} are free", "step until a request finishes, or raise max_rows")
        ids = [t for t in request.text_ids if t not in (d.start_text_token, d.stop_text_token)]
        rows = gen._rows(request.prefix, ids, request.language)  # (1, E, d)
        length = rows.shape[1] + 1  # the host rows and the start mel token
        if length + request.max_codes > self.capacity:
            raise InputError(f"batch: the request reaches {length + request.max_codes} positions, rows hold "
                             f"{self.capacity}", "lower max_codes or raise BatchOptions.capacity")
        decoder = gen.token_decoder(length, request.options, request.max_codes, request.rng)
        first = self.rows_in_use
        start = np.array([[d.start_mel_token]], dtype=np.int64)
        logits, _ = gen.calls.run(self._values(first, 1), np.zeros(1), rows, start, np.zeros((1, 1), np.int64),
                                  logits_only=True)
        for b in self._buffers:  # every beam starts from the same prefix: tile row `first`
            b[first + 1:first + decoder.rows, :, :length] = b[first:first + 1, :, :length]
        seq = _Sequence(next(self._handles), decoder, first, decoder.rows, length,
                        np.repeat(logits, decoder.rows, axis=0), int(request.min_codes))
        self._active.append(seq)
        return seq.handle

    def cancel(self, handle: int) -> None:
        """Drop a request in flight (its rows are reused); unknown or finished handles are an InputError."""
        kept = [s for s in self._active if s.handle != handle]
        if len(kept) == len(self._active):
            raise InputError(f"batch: no request with handle {handle} in flight", "it finished or was cancelled")
        self._active = kept
        self._compact()

    def _compact(self) -> None:
        """Move every request's rows down so that rows 0..rows_in_use-1 are all in use (filled positions
        only; numpy copies overlapping ranges correctly)."""
        row = 0
        for s in self._active:
            if s.first != row:
                for b in self._buffers:
                    b[row:row + s.rows, :, :s.length] = b[s.first:s.first + s.rows, :, :s.length]
                s.first = row
            row += s.rows

    # --- decoding -------------------------------------------------------------------------------

    def step(self) -> dict[int, CodeUpdate]:
        """Advance every request by one code: each decides its codes from its pending logits (and may
        finish), then one decoder call computes the next logits of all that go on.
        -> {handle: CodeUpdate} for every request that was in flight."""
        updates = {s.handle: self._decide(s) for s in self._active}
        self._active = [s for s in self._active if not updates[s.handle].done]
        self._compact()
        if self._active:
            self._advance()
        return updates

    def _decide(self, s: _Sequence) -> CodeUpdate:
        """One request's update from its pending logits (CodeGenerator.runs' loop body)."""
        try:
            step = s.decoder.update(ban_early_stop(s.logits, s.step, s.min_codes, self.generator.dims.stop_mel_token))
        except NonFiniteScores as e:
            error = non_finite(STAGE)
            error.__cause__ = e
            return CodeUpdate(s.handle, np.zeros(0, dtype=np.int64), True, error)
        settled = s.decoder.settled()
        new = settled[s.emitted.size:]
        s.emitted = settled if settled.size > s.emitted.size else s.emitted
        if not step.done:
            rows = [int(r) for r in step.source_rows]
            for b in self._buffers:  # the request's beams, in place over its filled positions
                reorder_rows(b[s.first:s.first + s.rows, :, :s.length], rows)
            s.tokens = np.asarray(step.tokens, dtype=np.int64)
            return CodeUpdate(s.handle, new, False)
        codes = self.generator.final_codes(s.decoder)
        if not np.array_equal(codes[: s.emitted.size], s.emitted):
            error = GenerationError(f"the decoder's result does not start with the {s.emitted.size} codes it settled")
            return CodeUpdate(s.handle, new, True, error)
        return CodeUpdate(s.handle, np.concatenate([new, codes[s.emitted.size:]]), True)

    def _advance(self) -> None:
        """One decoder call over rows 0..R-1: every request's tokens at its own next mel position."""
        codes = np.concatenate([s.tokens for s in self._active])[:, None]  # (R, 1)
        positions = np.concatenate([np.full(s.rows, s.step + 1) for s in self._active])[:, None]  # (R, 1)
        lengths = np.concatenate([np.full(s.rows, s.length) for s in self._active])  # (R,)
        empty = np.zeros((codes.shape[0], 0, self.generator.dims.model_dim), dtype=np.float32)
        logits, _ = self.generator.calls.run(self._values(0, codes.shape[0]), lengths, empty, codes, positions,
                                             logits_only=True)
        for s in self._active:
            s.logits = logits[s.first:s.first + s.rows]
            s.length += 1
            s.step += 1

    def run(self, requests: Sequence[CodeRequest]) -> list[np.ndarray]:
        """Decode every request, admitting each (in order) as soon as its rows are free -> their codes,
        in request order. The first failed request's error is raised once every request is done. For an
        idle batch (no request in flight)."""
        if self._active:
            raise InputError("batch: run() needs an idle batch", "use add / step while requests are in flight")
        waiting = list(enumerate(requests))
        handles: dict[int, int] = {}
        codes: dict[int, list[np.ndarray]] = {i: [] for i in range(len(requests))}
        errors: list[IndexTTS2Error] = []
        while waiting or self._active:
            while waiting and waiting[0][1].options.num_beams <= self.free_rows:
                i, request = waiting.pop(0)
                handles[self.add(request)] = i
            if not self._active:  # the next request can never fit
                self.add(waiting[0][1])  # raises its InputError
            for handle, update in self.step().items():
                codes[handles[handle]].append(update.codes)
                if update.error is not None:
                    errors.append(update.error)
        if errors:
            raise errors[0]
        return [np.concatenate(parts) for parts in codes.values()]

