"""GPT decode-step benchmark: the bundle's ONNX decoder against our torch module, in one process.

    python tools/bench_gpt.py CKPT BUNDLE [--codes 100] [--beams 3] [--text 40] [--repeats 3] [--json OUT]

Both sides run the same work: a prefill of the conditioning + text prefix (batch 1, tiled to the beams)
and `--codes` single-token steps with a growing KV cache (batch = beams), teacher-forced with random
codes so both do exactly the same number of steps. Runs are interleaved and the median is reported, as
timings on a shared machine drift between runs; compare the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from indextts2_onnx.export.checkpoint import CheckpointPaths, load_gpt
from indextts2_onnx.export.config import load_config
from indextts2_onnx.runtime.gpt import CodeGenerator
from indextts2_onnx.runtime.kv_cache import decoder_io
from indextts2_onnx.runtime.pipeline import load_bundle


def torch_loop(gpt, prefix: torch.Tensor, steps: torch.Tensor) -> float:
    """Seconds for prefill + steps with our torch module's KV cache (eager, fp32)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        _, _, past = gpt.decode(prefix, gpt.empty_past(1))
        past = [p.expand(steps.shape[1], -1, -1, -1).contiguous() for p in past]
        for x in steps:
            _, _, past = gpt.decode(x[:, None, :], past)
    return time.perf_counter() - t0


def onnx_loop(gen: CodeGenerator, prefix: np.ndarray, steps: np.ndarray) -> float:
    """Seconds for the same work through the runtime's decoder graph and KV cache."""
    t0 = time.perf_counter()
    cache = gen.empty_cache(1)
    _, _, presents = gen.step(prefix, cache)
    cache.update(presents)
    cache.reorder(np.zeros(steps.shape[1], dtype=np.int64))
    for x in steps:
        _, _, presents = gen.step(x[:, None, :], cache)
        cache.update(presents)
    return time.perf_counter() - t0


def open_generator(bundle: Path, threads: int | None) -> CodeGenerator:
    """The runtime's code generator over the bundle's decoder graph and GPT tables (every check passed)."""
    manifest, graphs, tables = load_bundle(bundle, threads=threads)
    io = decoder_io(manifest.graphs["gpt_decoder"], manifest.gpt)
    return CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt, io)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("bundle")
    p.add_argument("--codes", type=int, default=100)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--text", type=int, default=40, help="text tokens in the prefix")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(Path(args.checkpoint) / "config.yaml")
    t0 = time.perf_counter()
    gpt = load_gpt(CheckpointPaths.of(args.checkpoint, cfg), cfg)
    torch_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = open_generator(Path(args.bundle), args.threads)
    onnx_load_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    d = cfg.gpt.model_dim
    prefix = rng.standard_normal((1, cfg.gpt.prefix_rows + args.text + 3, d)).astype(np.float32)
    steps = rng.standard_normal((args.codes, args.beams, d)).astype(np.float32)
    runs = {"torch": [], "onnx": []}
    for _ in range(args.repeats):  # interleaved
        runs["torch"].append(torch_loop(gpt, torch.from_numpy(prefix), torch.from_numpy(steps)))
        runs["onnx"].append(onnx_loop(gen, prefix, steps))
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "codes": args.codes, "beams": args.beams, "prefix_rows": prefix.shape[1], "threads": args.threads,
        "torch_s": med["torch"], "onnx_s": med["onnx"],
        "torch_ms_per_code": 1000 * med["torch"] / args.codes, "onnx_ms_per_code": 1000 * med["onnx"] / args.codes,
        "speedup_onnx_vs_torch": med["torch"] / med["onnx"], "runs": runs,
        "torch_load_s": torch_load_s, "onnx_load_s": onnx_load_s,
    }
    print(f"{args.codes} codes x {args.beams} beams, prefix {prefix.shape[1]} rows (medians of {args.repeats}):")
    print(f"  torch eager  {result['torch_ms_per_code']:8.2f} ms/code")
    print(f"  onnx runtime {result['onnx_ms_per_code']:8.2f} ms/code   ({result['speedup_onnx_vs_torch']:.2f}x torch)")
    print(f"  load: torch {torch_load_s:.1f} s, onnx sessions {onnx_load_s:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
