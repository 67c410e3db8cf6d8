"""GPT decode-step benchmark: bundles' ONNX decoders against our torch module, in one process.

    python tools/bench_gpt.py CKPT BUNDLE [BUNDLE ...] [--codes 100] [--beams 3] [--text 40] [--repeats 3]
        [--threads N] [--json OUT]

Every side runs the same work: a prefill of the conditioning + text rows and the start mel token (batch 1,
tiled to the beams) and `--codes` single-code steps (batch = beams), teacher-forced with random codes so
all do exactly the same number of steps, with beam reordering as the decode loop does it. Several
bundles compare decoders (e.g. the concat and the shared KV layout) on the same work. Runs are
interleaved and the median is reported, as timings on a shared machine drift between runs; compare the
ratios, not the absolute numbers.
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


def torch_loop(gpt, rows: torch.Tensor, codes: torch.Tensor, start: int) -> float:
    """Seconds for prefill + steps with our torch module's KV cache (eager, fp32)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        first = gpt.mel_inputs(torch.tensor([[start]]), torch.tensor([0]))
        _, _, past = gpt.decode(torch.cat([rows, first], dim=1), gpt.empty_past(1))
        past = [p.expand(codes.shape[1], -1, -1, -1).contiguous() for p in past]
        for k, step in enumerate(codes, start=1):
            x = gpt.mel_inputs(step[:, None], torch.tensor([k + 1]))
            _, _, past = gpt.decode(x, past)
            past = [p[REORDER[: p.shape[0]]] for p in past]
    return time.perf_counter() - t0


# every step's beam reordering: row 0 survives twice, the last is dropped (a copy of the cache rows each step)
REORDER = [0, 0, *range(1, 15)]


def onnx_loop(gen: CodeGenerator, rows: np.ndarray, codes: np.ndarray) -> float:
    """Seconds for the same work through the runtime's decoder calls (either KV layout)."""
    calls, beams = gen.calls, codes.shape[1]
    t0 = time.perf_counter()
    start = np.array([gen.dims.start_mel_token], dtype=np.int64)
    _, _, cache = calls.start(rows, start, np.zeros(1, dtype=np.int64), rows.shape[1] + codes.shape[0] + 2)
    calls.reorder(cache, np.zeros(beams, dtype=np.int64))
    for k, step in enumerate(codes, start=1):
        calls.step(cache, step, np.full(beams, k + 1))
        calls.reorder(cache, np.array(REORDER[:beams]))
    return time.perf_counter() - t0


def open_generator(bundle: Path, threads: int | None) -> CodeGenerator:
    """The runtime's code generator over the bundle's decoder graph and GPT tables (every check passed)."""
    manifest, graphs, tables = load_bundle(bundle, threads=threads)
    io = decoder_io(manifest.graphs["gpt_decoder"], manifest.gpt)
    return CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt, io)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE")
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
    gens, onnx_load_s = {}, {}
    for bundle in args.bundles:
        t0 = time.perf_counter()
        gens[bundle] = open_generator(Path(bundle), args.threads)
        onnx_load_s[bundle] = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    c = cfg.gpt
    rows = rng.standard_normal((1, cfg.gpt.prefix_rows + args.text + 2, c.model_dim)).astype(np.float32)
    codes = rng.integers(0, c.number_mel_codes - 2, (args.codes, args.beams)).astype(np.int64)
    runs = {"torch": [], **{b: [] for b in args.bundles}}
    for _ in range(args.repeats):  # interleaved
        runs["torch"].append(torch_loop(gpt, torch.from_numpy(rows), torch.from_numpy(codes), c.start_mel_token))
        for bundle, gen in gens.items():
            runs[bundle].append(onnx_loop(gen, rows, codes))
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "codes": args.codes, "beams": args.beams, "prefix_rows": rows.shape[1] + 1, "threads": args.threads,
        "ms_per_code": {k: 1000 * v / args.codes for k, v in med.items()},
        "speedup_vs_torch": {b: med["torch"] / med[b] for b in args.bundles},
        "layout": {b: gen.io.layout for b, gen in gens.items()}, "runs": runs,
        "torch_load_s": torch_load_s, "onnx_load_s": onnx_load_s,
    }
    print(f"{args.codes} codes x {args.beams} beams, prefix {rows.shape[1] + 1} rows (medians of {args.repeats}):")
    print(f"  torch eager          {result['ms_per_code']['torch']:8.2f} ms/code")
    for b in args.bundles:
        print(f"  {gens[b].io.layout:>7} {Path(b).name:<12} {result['ms_per_code'][b]:8.2f} ms/code   "
              f"({result['speedup_vs_torch'][b]:.2f}x torch, {med[args.bundles[0]] / med[b]:.2f}x the first bundle)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
