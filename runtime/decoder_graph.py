"""The decoder graph's calls in either KV-cache layout, behind one small interface.

The decode loop (gpt.CodeGenerator) needs four things of the decoder: `start` a sequence from host rows
(conditioning, text) followed by mel codes, `step` every row by one code, `extend` one row by several codes
(the streaming latent pass), and `reorder` rows (beam search). Both layouts do them:

    concat  the first-generation graph: mel codes embedded on the host (gpt_tables.npz), the cache fed as
            numpy arrays and returned one position longer (presents = past + new) every call.
    shared  the second-generation graph: mel codes embedded in the graph, GroupQueryAttention over one
            max-length buffer per layer and kind that ONNX Runtime reads and writes in place (IOBinding
            binds the same memory as past and present); nothing is allocated or copied per step but the
            logits. Buffers are numpy arrays sized for the longest call of the sequence up front: pages
            that are never written are never touched (calloc), so the reservation costs address space only.

A state (`KVCache` or `SharedKV`) belongs to one sequence and one thread; the decoder objects hold only the
graph, the tables and the names, so concurrent calls share nothing mutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from .kv_cache import DecoderIO, KVCache, reorder_rows
from .manifest import GPTDims
from .sessions import Graph


@dataclass
class SharedKV:
    """The shared layout's cache of one sequence: per layer and kind a (rows, heads, capacity, head_dim)
    buffer, every row holding `length` tokens, and the OrtValues over the buffers (same memory)."""

    buffers: list[np.ndarray]
    length: int = 0
    values: list[ort.OrtValue] = field(default_factory=list)

    def __post_init__(self):
        self._wrap()

    def _wrap(self) -> None:
        """OrtValues over the current buffers (no copy: ONNX Runtime reads and writes the numpy memory)."""
        self.values = [ort.OrtValue.ortvalue_from_numpy(b) for b in self.buffers]

    @staticmethod
    def empty(count: int, rows: int, heads: int, capacity: int, head_dim: int, dtype) -> "SharedKV":
        return SharedKV([np.zeros((rows, heads, capacity, head_dim), dtype) for _ in range(count)])

    @property
    def rows(self) -> int:
        return self.buffers[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.buffers[0].shape[2]

    @property
    def dtype(self) -> np.dtype:
        return self.buffers[0].dtype

    def reorder(self, rows: np.ndarray) -> None:
        """Row `rows[i]` becomes row i: in place over the filled positions when the row count is kept
        (beam steps), into new buffers otherwise (tiling a one-row prefill to the beams)."""
        rows = [int(r) for r in np.asarray(rows, dtype=np.int64)]
        n = self.length
        if len(rows) != self.rows:
            new = []
            for b in self.buffers:
                out = np.zeros((len(rows), *b.shape[1:]), b.dtype)
                out[:, :, :n] = b[rows, :, :n]
                new.append(out)
            self.buffers = new
            self._wrap()
            return
        for b in self.buffers:
            reorder_rows(b[:, :, :n], rows)


def shared_binding(graph: Graph, io: DecoderIO, values: list[ort.OrtValue], lengths: np.ndarray, new: int,
                   outputs: list[str]) -> ort.IOBinding:
    """A binding of a shared-layout graph (the GPT decoder, the emotion model's decoder): `outputs` to the
    host, first, so that `get_outputs()[:len(outputs)]` are they; then its buffers `values` as both past
    and present, and GroupQueryAttention's lengths for rows holding `lengths` tokens that get `new` more
    (seqlens_k = lengths + new - 1, total_sequence_length = their largest + 1). The caller binds its
    token inputs."""
    lengths = np.asarray(lengths, dtype=np.int64)
    binding = graph.binding()
    for name in outputs:
        binding.bind_output(name, "cpu")
    binding.bind_cpu_input(io.seqlens_k, (lengths + new - 1).astype(np.int32))
    binding.bind_cpu_input(io.total_length, np.array(int(lengths.max()) + new, dtype=np.int32))
    for past, present, value in zip(io.past, io.present, values):
        binding.bind_ortvalue_input(past, value)
        binding.bind_ortvalue_output(present, value)
    return binding


def _feed(x: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=dtype)


@dataclass(frozen=True)
class ConcatDecoder:
    """The concat layout: host-side mel embeddings, numpy caches (KVCache)."""

    graph: Graph
    io: DecoderIO
    dims: GPTDims
    mel_embedding: np.ndarray  # (number_mel_codes, d)
    mel_pos_embedding: np.ndarray  # (max_mel_tokens + 3, d)

    def _mel(self, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self.mel_embedding[codes] + self.mel_pos_embedding[positions]

    def _call(self, x: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        io = self.io
        out = dict(zip(self.graph.outputs, self.graph.run({io.embeds: _feed(x, np.float32), **cache.feeds()})))
        cache.update([out[name] for name in io.present])
        return out[io.logits], out[io.hidden]

    def empty_cache(self, rows: int) -> KVCache:
        d = self.dims
        return KVCache.empty(self.io.past, rows, d.heads, d.head_dim, dtype=self.graph.input_dtype(self.io.past[0]))

    def start(self, rows: np.ndarray, codes: np.ndarray, positions: np.ndarray,
              capacity: int) -> tuple[np.ndarray, np.ndarray, KVCache]:
        """One row: host rows (1, E, d) then codes (M,) at mel positions (M,) -> logits (1, V) at the last
        position, hidden (1, E + M, d), and the new sequence's cache. `capacity` is unused here."""
        cache = self.empty_cache(1)
        x = np.concatenate([rows, self._mel(codes, positions)[None]], axis=1)
        logits, hidden = self._call(x, cache)
        return logits, hidden, cache

    def step(self, cache: KVCache, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Every row one code: codes, positions (R,) -> logits (R, V)."""
        return self._call(self._mel(codes, positions)[:, None, :], cache)[0]

    def extend(self, cache: KVCache, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """One row several codes: (n,) -> hidden (1, n, d)."""
        return self._call(self._mel(codes, positions)[None], cache)[1]

    @staticmethod
    def reorder(cache: KVCache, rows: np.ndarray) -> None:
        cache.reorder(rows)


@dataclass(frozen=True)
class SharedDecoder:
    """The shared layout: codes embedded in the graph, buffers bound in place (SharedKV)."""

    graph: Graph
    io: DecoderIO
    dims: GPTDims

    def run(self, values: list[ort.OrtValue], lengths: np.ndarray, rows: np.ndarray, codes: np.ndarray,
            positions: np.ndarray, logits_only: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """One call over R rows of shared buffers (`values`: per layer and kind an OrtValue of shape
        (R, heads, capacity, head_dim), bound as past and present). Row r holds `lengths[r]` tokens;
        rows (R, E, d) then codes (R, M) at positions (R, M) are appended after them, each row at its own
        length (GroupQueryAttention's per-row `seqlens_k`). -> logits (R, V) at each row's last new
        position, hidden (R, E + M, d) (None with logits_only: not copied to the host)."""
        io, g = self.io, self.graph
        new = rows.shape[1] + codes.shape[1]
        lengths = np.asarray(lengths, dtype=np.int64)
        capacity = values[0].shape()[2]
        if int(lengths.max()) + new > capacity:
            raise ValueError(f"gpt_decoder: {int(lengths.max()) + new} positions, the cache holds {capacity}")
        binding = shared_binding(g, io, values, lengths, new, [io.logits, io.hidden])
        binding.bind_cpu_input(io.embeds, _feed(rows, g.input_dtype(io.embeds)))
        binding.bind_cpu_input(io.codes, _feed(codes, np.int64))
        binding.bind_cpu_input(io.positions, _feed(positions, np.int64))
        g.run_bound(binding)
        logits, hidden = binding.get_outputs()[:2]  # in binding order
        return logits.numpy(), None if logits_only else hidden.numpy()

    def _call(self, kv: SharedKV, rows: np.ndarray, codes: np.ndarray, positions: np.ndarray,
              logits_only: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """`run` over every row of one sequence's state, all rows at `kv.length`; advances kv.length."""
        out = self.run(kv.values, np.full(kv.rows, kv.length), rows, codes, positions, logits_only)
        kv.length += rows.shape[1] + codes.shape[1]
        return out

    def start(self, rows: np.ndarray, codes: np.ndarray, positions: np.ndarray,
              capacity: int) -> tuple[np.ndarray, np.ndarray, SharedKV]:
        """As ConcatDecoder.start; the cache is sized for `capacity` positions in all."""
        d = self.dims
        kv = SharedKV.empty(len(self.io.past), 1, d.heads, capacity, d.head_dim,
                            self.graph.input_dtype(self.io.past[0]))
        logits, hidden = self._call(kv, rows, codes[None], positions[None])
        return logits, hidden, kv

    def step(self, kv: SharedKV, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        d = self.dims
        empty = np.zeros((kv.rows, 0, d.model_dim), dtype=np.float32)
        return self._call(kv, empty, codes[:, None], positions[:, None], logits_only=True)[0]

    def extend(self, kv: SharedKV, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        empty = np.zeros((1, 0, self.dims.model_dim), dtype=np.float32)
        return self._call(kv, empty, codes[None], positions[None])[1]

    @staticmethod
    def reorder(kv: SharedKV, rows: np.ndarray) -> None:
        kv.reorder(rows)


def open_decoder(graph: Graph, io: DecoderIO, dims: GPTDims, mel_embedding: np.ndarray,
                 mel_pos_embedding: np.ndarray) -> ConcatDecoder | SharedDecoder:
    """The decoder calls for the graph's layout (io.layout)."""
    if io.layout == "shared":
        return SharedDecoder(graph, io, dims)
    return ConcatDecoder(graph, io, dims, mel_embedding, mel_pos_embedding)
