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
ROLES = ("past", "present")  # the name patterns of a kv_cache declaration
# "concat": presents are past + new (P + S positions); "shared": one max-length buffer per layer and kind,
# bound as both past and present (GroupQueryAttention). A declaration without "layout" is "concat".
LAYOUTS = ("concat", "shared")

# The decoder's cache names in bundles written before the manifest declared them (format 1.1 and older,
# whose gpt_decoder entry has no kv_cache): the one place the runtime assumes names it was not told.
LEGACY_KV_CACHE = {"past": "past_{kind}_{layer}", "present": "present_{kind}_{layer}"}

# The decoder's other I/O by role (the manifest's `roles`). Bundles written before format 1.3 do not declare
# them; their (concat) decoders have LEGACY_ROLES' names. The shared layout adds the mel codes and their
# positions, which that graph embeds itself, and GroupQueryAttention's lengths.
LEGACY_ROLES = {"embeds": "inputs_embeds", "logits": "logits", "hidden": "hidden_states"}
LAYOUT_ROLES = {"concat": tuple(LEGACY_ROLES),
                "shared": (*LEGACY_ROLES, "codes", "positions", "seqlens_k", "total_length")}


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
    patterns (`is_pattern`), optionally with "layout" (LAYOUTS)."""
    if declared == {}:
        return True
    return (isinstance(declared, dict) and set(ROLES) <= set(declared) <= {*ROLES, "layout"}
            and all(is_pattern(declared[r]) for r in ROLES) and declared["past"] != declared["present"]
            and declared.get("layout", "concat") in LAYOUTS)


KV_CACHE_RULE = ('{} or {"past": ..., "present": ...[, "layout": "concat" or "shared"]}: two different patterns '
                 'naming {kind} and {layer} once each, e.g. "past_{kind}_{layer}"')


def is_roles(declared: Any) -> bool:
    """A graph entry's roles: {} or {role: I/O name} with known roles (LAYOUT_ROLES) and distinct names."""
    known = set(LAYOUT_ROLES["shared"])
    return (isinstance(declared, dict) and set(declared) <= known
            and all(isinstance(v, str) and v for v in declared.values())
            and len(set(declared.values())) == len(declared))


ROLES_RULE = f'{{}} or {{role: name}} with roles among {", ".join(LAYOUT_ROLES["shared"])} and distinct names'


def cache_names(pattern: str, layers: int) -> list[str]:
    """A pattern's names in graph order: layer 0 key, layer 0 value, layer 1 key, ..."""
    return [pattern.format(kind=kind, layer=layer) for layer in range(layers) for kind in KINDS]


@dataclass(frozen=True)
class DecoderIO:
    """The decoder graph's I/O names by role and its cache layout. past[i] and present[i] are the same
    layer and kind, so the presents of one call, in this order, are the pasts of the next (concat), or the
    same buffer (shared). The last four roles exist in the shared layout only."""

    past: tuple[str, ...]
    present: tuple[str, ...]
    layout: str = "concat"
    embeds: str = LEGACY_ROLES["embeds"]
    logits: str = LEGACY_ROLES["logits"]
    hidden: str = LEGACY_ROLES["hidden"]
    codes: str | None = None
    positions: str | None = None
    seqlens_k: str | None = None
    total_length: str | None = None

    def names(self) -> dict[str, str]:
        """Every role this layout uses -> its name (for checks and messages)."""
        return {r: getattr(self, r) for r in LAYOUT_ROLES[self.layout]}

    def role(self, i: int) -> str:
        """What past[i] / present[i] holds, for messages: "layer 3 value"."""
        return f"layer {i // len(KINDS)} {KINDS[i % len(KINDS)]}"


def decoder_io(entry: GraphEntry | None, dims: GPTDims) -> DecoderIO:
    """The decoder's I/O names for `dims.layers` layers from its manifest entry's kv_cache patterns and
    roles; an entry without them (or None: a graph opened without its manifest) has LEGACY_KV_CACHE's and
    LEGACY_ROLES'. A role the layout needs but the entry does not name keeps its legacy name, or None
    (integrity.check_decoder refuses such a bundle)."""
    if entry is None:
        return declared_io({}, {}, dims.layers)
    return declared_io(entry.kv_cache, entry.roles, dims.layers)


def declared_io(kv_cache: dict[str, str], roles: dict[str, str], layers: int) -> DecoderIO:
    """`decoder_io` from the declarations themselves (the manifest's, or an export spec's)."""
    patterns = kv_cache or LEGACY_KV_CACHE
    roles = {**LEGACY_ROLES, **roles}
    layout = patterns.get("layout", "concat")
    return DecoderIO(tuple(cache_names(patterns["past"], layers)), tuple(cache_names(patterns["present"], layers)),
                     layout, **{r: roles.get(r) for r in LAYOUT_ROLES[layout]})


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

    @property
    def dtype(self) -> np.dtype:
        return self.arrays[0].dtype

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
        for a in self.arrays:
            reorder_rows(a, rows)


def reorder_rows(a: np.ndarray, rows: list[int]) -> None:
    """In place: row rows[i] of `a` (first axis) becomes row i; only rows that change are copied, and a
    source that is overwritten before it is read is saved first. `a` may be a view (the filled positions
    of a larger buffer)."""
    changed = [i for i, r in enumerate(rows) if r != i]
    saved = {r: a[r].copy() for r in {rows[i] for i in changed} if r in changed}
    for i in changed:
        a[i] = saved[rows[i]] if rows[i] in saved else a[rows[i]]
