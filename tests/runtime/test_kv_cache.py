"""KVCache.reorder: in-place row moves must equal a gathered copy for every mapping beam search makes."""

from __future__ import annotations

import itertools

import numpy as np

from indextts2_onnx.runtime.kv_cache import KVCache


def _cache(rows: int, seed: int = 0) -> KVCache:
    rng = np.random.default_rng(seed)
    return KVCache(["k0", "v0", "k1", "v1"], [rng.standard_normal((rows, 2, 5, 3)).astype(np.float32)
                                              for _ in range(4)])


def test_every_mapping_of_three_beams():
    for rows in itertools.product(range(3), repeat=3):  # all 27 source maps, repeats included
        cache = _cache(3)
        want = [a[list(rows)].copy() for a in cache.arrays]
        before = [id(a) for a in cache.arrays]
        cache.reorder(np.array(rows))
        for a, w in zip(cache.arrays, want):
            np.testing.assert_array_equal(a, w, err_msg=str(rows))
        assert [id(a) for a in cache.arrays] == before  # moved in place, no new arrays


def test_tiling_and_read_only_arrays():
    cache = _cache(1)
    cache.reorder(np.zeros(4, dtype=np.int64))  # one-row prefill tiled to 4 beams
    assert cache.rows == 4 and all(np.array_equal(a[0], a[3]) for a in cache.arrays)
    frozen = _cache(3, seed=1)
    for a in frozen.arrays:
        a.flags.writeable = False  # e.g. arrays a runtime hands out read-only: copied instead
    want = [a[[2, 2, 0]].copy() for a in frozen.arrays]
    frozen.reorder(np.array([2, 2, 0]))
    for a, w in zip(frozen.arrays, want):
        np.testing.assert_array_equal(a, w)
