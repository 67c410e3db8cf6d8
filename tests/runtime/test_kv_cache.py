"""The KV cache: the decoder's cache names by role from the manifest's patterns, and KVCache.reorder (in-place
row moves must equal a gathered copy for every mapping beam search makes)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from indextts2_onnx.runtime.kv_cache import (LEGACY_KV_CACHE, KVCache, cache_names, decoder_io, is_kv_cache,
                                             is_pattern)
from indextts2_onnx.runtime.manifest import GPTDims, GraphEntry

DIMS = GPTDims(model_dim=8, heads=2, layers=2, head_dim=4, semantic_dim=8, condition_num_latent=32,
               number_text_tokens=10, number_mel_codes=12, start_mel_token=10, stop_mel_token=11,
               start_text_token=0, stop_text_token=1, max_mel_tokens=20, max_text_tokens=20)


def test_patterns_expand_in_graph_order():
    assert cache_names("past_{kind}_{layer}", 2) == ["past_key_0", "past_value_0", "past_key_1", "past_value_1"]
    assert cache_names("L{layer}.{kind}", 1) == ["L0.key", "L0.value"]
    assert cache_names("past_{kind}_{layer}", 0) == []


def test_decoder_io_from_the_entry_or_the_legacy_names():
    entry = GraphEntry(file="gpt_decoder.onnx", inputs=[], outputs=[])
    legacy = decoder_io(entry, DIMS)
    assert legacy == decoder_io(None, DIMS)  # no entry (a graph opened without its manifest): the same names
    assert legacy.past == ("past_key_0", "past_value_0", "past_key_1", "past_value_1")
    assert legacy.present == tuple(cache_names(LEGACY_KV_CACHE["present"], 2))
    assert (legacy.embeds, legacy.logits, legacy.hidden) == ("inputs_embeds", "logits", "hidden_states")
    declared = decoder_io(replace(entry, kv_cache={"past": "in.{layer}.{kind}", "present": "out.{layer}.{kind}"}),
                          replace(DIMS, layers=3))
    assert declared.past[:3] == ("in.0.key", "in.0.value", "in.1.key") and len(declared.past) == 6
    assert declared.present[5] == "out.2.value" and declared.role(5) == "layer 2 value"


@pytest.mark.parametrize("pattern, ok", [
    ("past_{kind}_{layer}", True), ("{layer}{kind}", True), ("a{{b}}_{kind}_{layer}", True),
    ("past_{kind}", False), ("past_{layer}_{layer}_{kind}", False), ("past_{kind}_{layer}_{head}", False),
    ("past_{kind!r}_{layer}", False), ("past_{kind}_{layer:02d}", False), ("past_{kind_{layer}", False),
    ("past_{}_{kind}_{layer}", False), (3, False),
])
def test_pattern_needs_kind_and_layer_once(pattern, ok):
    assert is_pattern(pattern) is ok


def test_kv_cache_declaration():
    assert is_kv_cache({}) and is_kv_cache(LEGACY_KV_CACHE)
    assert not is_kv_cache({"past": "p_{kind}_{layer}"})  # both roles or none
    assert not is_kv_cache({**LEGACY_KV_CACHE, "extra": "e_{kind}_{layer}"})
    assert not is_kv_cache({"past": "p_{kind}_{layer}", "present": "p_{kind}_{layer}"})  # one name for both
    assert not is_kv_cache(["past_{kind}_{layer}"])


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
