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
        """Keep row `rows[i]` as new row i (beam search; also tiles a one-row prefill to all beams)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.shape[0] == self.rows and np.array_equal(rows, np.arange(self.rows)):
            return
        self.arrays = [np.ascontiguousarray(a[rows]) for a in self.arrays]
