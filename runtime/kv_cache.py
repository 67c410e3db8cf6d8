"""The GPT's key/value cache as numpy arrays fed back to the decoder graph each step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
