"""The GPT's key/value cache: which decoder inputs and outputs hold it, and the numpy arrays fed back each step.

The decoder graph takes the cache as one past key and one past value input per layer and returns them
extended as presents. They are found by role, never by position: the manifest's graph entry declares the
name patterns (`graphs["gpt_decoder"].kv_cache`, e.g. {"past": "past_{kind}_{layer}", "present": ...}
with kind "key" or "value"), `cache_names` expands a pattern for the model's layers, and `decoder_io`
gathers every name the decode loop needs in a `DecoderIO`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # type hints only: manifest.py imports this module for its field check
    from .manifest import GPTDims, GraphEntry

KINDS = ("key", "value")  # per layer, in graph order
ROLES = ("past", "present")  # the keys of a kv_cache declaration

# The decoder's cache names in bundles written before the manifest declared them (format 1.1 and older,
# whose gpt_decoder entry has no kv_cache): the one place the runtime assumes names it was not told.
LEGACY_KV_CACHE = {"past": "past_{kind}_{layer}", "present": "present_{kind}_{layer}"}

# The decoder's fixed I/O names besides the cache (export/graphs.py's gpt_decoder spec).
EMBEDS, LOGITS, HIDDEN = "inputs_embeds", "logits", "hidden_states"


def is_pattern(pattern: Any) -> bool:
    """A cache name pattern: a string with the fields {kind} and {layer} once each and no other field,
    format spec or conversion (so every layer and kind gets its own name)."""
    if not isinstance(pattern, str):
        return False
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError:  # unbalanced braces
        return False
    named = [(f, spec, conv) for _, f, spec, conv in parts if f is not None]
    return sorted(f for f, _, _ in named) == ["kind", "layer"] and all(not s and c is None for _, s, c in named)


def is_kv_cache(declared: Any) -> bool:
    """A graph entry's kv_cache: {} (no cache) or {"past": pattern, "present": pattern}, two different
    patterns (`is_pattern`)."""
    if declared == {}:
        return True
    return (isinstance(declared, dict) and sorted(declared) == sorted(ROLES)
            and all(is_pattern(declared[r]) for r in ROLES) and declared["past"] != declared["present"])


KV_CACHE_RULE = ('{} or {"past": ..., "present": ...}: two different patterns naming {kind} and {layer} once '
                 'each, e.g. "past_{kind}_{layer}"')


def cache_names(pattern: str, layers: int) -> list[str]:
    """A pattern's names in graph order: layer 0 key, layer 0 value, layer 1 key, ..."""
    return [pattern.format(kind=kind, layer=layer) for layer in range(layers) for kind in KINDS]


@dataclass(frozen=True)
class DecoderIO:
    """The decoder graph's I/O names by role. past[i] and present[i] are the same layer and kind, so the
    presents of one call, in this order, are the pasts of the next."""

    past: tuple[str, ...]
    present: tuple[str, ...]
    embeds: str = EMBEDS
    logits: str = LOGITS
    hidden: str = HIDDEN

    def role(self, i: int) -> str:
        """What past[i] / present[i] holds, for messages: "layer 3 value"."""
        return f"layer {i // len(KINDS)} {KINDS[i % len(KINDS)]}"


def decoder_io(entry: GraphEntry | None, dims: GPTDims) -> DecoderIO:
    """The decoder's I/O names for `dims.layers` layers from its manifest entry's kv_cache patterns; an
    entry without them (or None: a graph opened without its manifest) has LEGACY_KV_CACHE's."""
    patterns = (entry.kv_cache if entry is not None else None) or LEGACY_KV_CACHE
    return DecoderIO(tuple(cache_names(patterns["past"], dims.layers)),
                     tuple(cache_names(patterns["present"], dims.layers)))


@dataclass
class KVCache:
    """Per-layer past keys and values, each (rows, heads, past_len, head_dim), in graph order."""

    past_names: list[str]
    arrays: list[np.ndarray]

    @staticmethod
    def empty(past_names: list[str], rows: int, heads: int, head_dim: int,
              dtype=np.float32) -> "KVCache":
        shape = (rows, heads, 0, head_dim)
        return KVCache(list(past_names), [np.zeros(shape, dtype) for _ in past_names])

    @property
    def length(self) -> int:
        return self.arrays[0].shape[2]

    @property
    def rows(self) -> int:
        return self.arrays[0].shape[0]

    def feeds(self) -> dict[str, np.ndarray]:
        return dict(zip(self.past_names, self.arrays))

    def update(self, presents: list[np.ndarray]) -> None:
        """The decoder's presents become the next step's past."""
        assert len(presents) == len(self.arrays)
        self.arrays = list(presents)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep row `rows[i]` as new row i (beam search; also tiles a one-row prefill to all beams).

        With the row count unchanged (every beam step) only the rows that change are copied, in place:
        a fresh gathered copy of the whole cache cost 3-6x more on CPU, mostly allocating and faulting in
        new memory (the cache is ~200 MB at full size with 3 beams and 300 positions)."""
        rows = [int(r) for r in np.asarray(rows, dtype=np.int64)]
        if len(rows) != self.rows or not all(a.flags.writeable for a in self.arrays):
            self.arrays = [np.ascontiguousarray(a[rows]) for a in self.arrays]
            return
        changed = [i for i, r in enumerate(rows) if r != i]
        if not changed:
            return
        for a in self.arrays:
            # sources that are overwritten before they are read are saved first
            saved = {r: a[r].copy() for r in {rows[i] for i in changed} if r in changed}
            for i in changed:
                a[i] = saved[rows[i]] if rows[i] in saved else a[rows[i]]
