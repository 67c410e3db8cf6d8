"""Batched decoding benchmark: N concurrent requests through one BatchedGenerator against the same requests
decoded one after another, on a shared-decoder bundle (torch-free).

    python tools/bench_batched.py BUNDLE [--concurrency 1 2 4 8] [--codes 100] [--beams 3] [--text 40]
        [--rounds 2] [--threads N] [--json OUT]

Each request has its own random conditioning rows, text ids and seed, beam-samples with upstream's options
and is held to exactly `--codes` codes (min_codes = max_codes), so both sides do the same work. Per round
and concurrency the two sides run back to back, their order alternating between rounds (a shared machine
drifts); medians are reported. Throughput is codes per second over all requests together; a request's
latency is the time from the start of the run until its last code (one after another, request i waits
for the i before it). Both sides must produce identical codes: the table says so per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from indextts2_onnx.runtime import BatchedGenerator, BatchOptions, CodeRequest, SamplingOptions
from indextts2_onnx.runtime.gpt import CodeGenerator
from indextts2_onnx.runtime.kv_cache import decoder_io
from indextts2_onnx.runtime.pipeline import load_bundle


def make_requests(gen: CodeGenerator, count: int, codes: int, beams: int, text: int) -> list[tuple[CodeRequest, int]]:
    """`count` requests (and their seeds) with random conditioning rows and text ids."""
    d = gen.dims
    out = []
    for i in range(count):
        rng = np.random.default_rng(1000 + i)
        latent = rng.standard_normal((1, d.condition_num_latent, d.model_dim)).astype(np.float32)
        prefix = gen.prefix(latent, 0.1 * rng.standard_normal((1, d.model_dim)).astype(np.float32))
        ids = rng.integers(2, d.number_text_tokens, size=text).tolist()
        out.append((CodeRequest(prefix, ids, SamplingOptions(num_beams=beams), codes, None, codes), i))
    return out


def with_rng(request: CodeRequest, seed: int) -> CodeRequest:
    return CodeRequest(request.prefix, request.text_ids, request.options, request.max_codes,
                       np.random.default_rng(seed), request.min_codes)


def one_after_another(gen: CodeGenerator, requests) -> tuple[float, list[float], list[list[int]]]:
    """-> (wall seconds, per-request latency, codes)."""
    t0, latency, codes = time.perf_counter(), [], []
    for r, seed in requests:
        r = with_rng(r, seed)
        out = gen.generate(r.prefix, list(r.text_ids), r.options, r.max_codes, r.rng, min_codes=r.min_codes)
        latency.append(time.perf_counter() - t0)
        codes.append(out.tolist())
    return time.perf_counter() - t0, latency, codes


def batched(gen: CodeGenerator, requests) -> tuple[float, list[float], list[list[int]]]:
    rows = sum(r.options.num_beams for r, _ in requests)
    capacity = max(gen._rows(r.prefix, list(r.text_ids)).shape[1] for r, _ in requests) + requests[0][0].max_codes + 2
    batch = BatchedGenerator(gen, BatchOptions(max_rows=rows, capacity=capacity))
    t0 = time.perf_counter()
    handles = {batch.add(with_rng(r, seed)): i for i, (r, seed) in enumerate(requests)}
    latency, codes = [0.0] * len(requests), [[] for _ in requests]
    while batch.handles:
        for h, u in batch.step().items():
            codes[handles[h]] += u.codes.tolist()
            if u.done:
                latency[handles[h]] = time.perf_counter() - t0
    return time.perf_counter() - t0, latency, codes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--codes", type=int, default=100)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--text", type=int, default=40, help="text tokens per request")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    manifest, graphs, tables = load_bundle(a.bundle, threads=a.threads)
    gen = CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt,
                        decoder_io(manifest.graphs["gpt_decoder"], manifest.gpt))
    results = {n: {"alone": [], "batched": [], "same_codes": True} for n in a.concurrency}
    for rnd in range(a.rounds):
        for n in a.concurrency:
            reqs = make_requests(gen, n, a.codes, a.beams, a.text)
            sides = [("alone", one_after_another), ("batched", batched)]
            codes = {}
            for name, run in (sides if rnd % 2 == 0 else sides[::-1]):
                wall, latency, codes[name] = run(gen, reqs)
                results[n][name].append((wall, latency))
                print(f"round {rnd} n={n} {name:8s} {wall:7.2f} s", flush=True)
            results[n]["same_codes"] &= codes["alone"] == codes["batched"]
    print(f"\n{a.codes} codes per request, {a.beams} beams, {a.text} text tokens, {a.rounds} rounds (medians)")
    print(f"{'requests':>8} {'alone codes/s':>14} {'batched codes/s':>16} {'throughput x':>13} "
          f"{'alone mean latency':>19} {'batched mean latency':>21} {'same codes':>10}")
    table = []
    for n in a.concurrency:
        row = {"requests": n, "same_codes": results[n]["same_codes"]}
        for name in ("alone", "batched"):
            wall = statistics.median(w for w, _ in results[n][name])
            row[f"{name}_codes_per_s"] = n * a.codes / wall
            row[f"{name}_mean_latency_s"] = statistics.median(float(np.mean(lat)) for _, lat in results[n][name])
        row["throughput_ratio"] = row["batched_codes_per_s"] / row["alone_codes_per_s"]
        table.append(row)
        print(f"{n:>8} {row['alone_codes_per_s']:>14.1f} {row['batched_codes_per_s']:>16.1f} "
              f"{row['throughput_ratio']:>12.2f}x {row['alone_mean_latency_s']:>18.2f}s "
              f"{row['batched_mean_latency_s']:>20.2f}s {str(row['same_codes']):>10}")
    if a.json:
        a.json.write_text(json.dumps({"codes": a.codes, "beams": a.beams, "text": a.text, "rounds": a.rounds,
                                      "threads": a.threads, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
