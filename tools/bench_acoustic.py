"""Acoustic-graph benchmark: two exports of dit.onnx / bigvgan.onnx on the same inputs, interleaved.

    python tools/bench_acoustic.py --baseline DIR --candidate DIR [--graphs dit,bigvgan] [--rounds 5]
        [--threads 2] [--frames 1290] [--batch 2] [--mel-frames 430] [--profile] [--json OUT]

DIR is a folder holding dit.onnx and bigvgan.onnx (a bundle, or a folder of single exports). Both
variants get the runtime's session options (runtime.sessions.session_options, `--threads` intra-op
threads) and identical random inputs: the DiT at one CFG call (`--batch` 2 = conditional and
unconditional rows, `--frames` mel frames: 1290 is a 15 s prompt), BigVGAN at `--mel-frames` frames
(430 = 5 s of 22 kHz audio). Each round runs baseline and candidate once per graph, alternating which goes
first, after one warm-up call each; medians are reported with the ratio baseline / candidate (> 1: the
candidate is faster), and the max |difference| of the two outputs, so a faster graph that computes
something else shows up. Timings on a shared machine drift between runs: compare the ratios of one run.

`--profile` adds, per variant and graph, one profiled call's kernel time by op type (ONNX Runtime's
profiler; the heaviest ops first).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from indextts2_onnx.runtime.sessions import session_options

GRAPHS = ("dit", "bigvgan")


def dit_feeds(sess: ort.InferenceSession, batch: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One CFG call of the DiT: random x / prompt_x (B, 80, T), full lengths, t = 0.5, style, cond (B, T, d).

    The static widths (mels, style, content) are read from the graph's declared input shapes."""
    rng = np.random.default_rng(seed)
    dims = {i.name: i.shape for i in sess.get_inputs()}
    n_mels, style_dim, content_dim = dims["x"][1], dims["style"][1], dims["cond"][2]
    return {
        "x": rng.standard_normal((batch, n_mels, frames)).astype(np.float32),
        "prompt_x": rng.standard_normal((batch, n_mels, frames)).astype(np.float32),
        "x_lens": np.full(batch, frames, np.int64),
        "t": np.full(batch, 0.5, np.float32),
        "style": rng.standard_normal((batch, style_dim)).astype(np.float32),
        "cond": rng.standard_normal((batch, frames, content_dim)).astype(np.float32),
    }


def bigvgan_feeds(sess: ort.InferenceSession, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random natural-log-mel-like input (1, n_mels, frames): N(-5, 2), the range of real log mels."""
    rng = np.random.default_rng(seed)
    n_mels = sess.get_inputs()[0].shape[1]
    return {"mel": (rng.standard_normal((1, n_mels, frames)) * 2.0 - 5.0).astype(np.float32)}


def open_session(path: Path, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session with the runtime's options (plus ONNX Runtime's profiler when a prefix is given)."""
    opts = session_options(threads)
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    """Milliseconds of one call."""
    t0 = time.perf_counter()
    sess.run(None, feeds)
    return (time.perf_counter() - t0) * 1e3


def op_profile(path: Path, feeds: dict[str, np.ndarray], threads: int) -> list[tuple[str, float]]:
    """(op type, share of kernel time) of one profiled call after a warm-up, heaviest first."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = open_session(path, threads, os.path.join(tmp, "prof"))
        sess.run(None, feeds)
        sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_call: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_call[e["args"]["op_name"]] += e["dur"]
    total = sum(per_call.values()) or 1.0
    return [(op, us / total) for op, us in sorted(per_call.items(), key=lambda kv: -kv[1])]


def bench_graph(name: str, baseline: Path, candidate: Path, args: argparse.Namespace) -> dict:
    """Interleaved timing of one graph of both folders; returns medians, ratio, output difference."""
    paths = {"baseline": baseline / f"{name}.onnx", "candidate": candidate / f"{name}.onnx"}
    sessions = {side: open_session(p, args.threads) for side, p in paths.items()}
    first = sessions["baseline"]
    feeds = dit_feeds(first, args.batch, args.frames) if name == "dit" else bigvgan_feeds(first, args.mel_frames)
    outputs = {side: s.run(None, feeds)[0] for side, s in sessions.items()}  # warm-up, and the outputs compared
    times: dict[str, list[float]] = {side: [] for side in sessions}
    for r in range(args.rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for side in order:
            times[side].append(timed(sessions[side], feeds))
    med = {side: statistics.median(ts) for side, ts in times.items()}
    diff = float(np.max(np.abs(outputs["baseline"] - outputs["candidate"])))
    scale = float(np.max(np.abs(outputs["baseline"])))
    result = {"graph": name, "rounds": args.rounds, "threads": args.threads,
              "inputs": {k: list(v.shape) for k, v in feeds.items()},
              "median_ms": med, "all_ms": times, "ratio": med["baseline"] / med["candidate"],
              "max_abs_diff": diff, "max_abs_output": scale}
    print(f"{name}: baseline {med['baseline']:.0f} ms, candidate {med['candidate']:.0f} ms (medians of {args.rounds}), "
          f"ratio {result['ratio']:.2f}x; outputs max |diff| {diff:.2e} (max |output| {scale:.3g})", flush=True)
    if args.profile:
        del sessions
        result["profile"] = {}
        for side, p in paths.items():
            prof = op_profile(p, feeds, args.threads)
            result["profile"][side] = prof
            shares = ", ".join(f"{op} {100 * share:.1f} %" for op, share in prof[:8])
            print(f"  {side} kernel time by op: {shares}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="folder with the reference dit.onnx / bigvgan.onnx")
    ap.add_argument("--candidate", type=Path, required=True, help="folder with the graphs to compare")
    ap.add_argument("--graphs", default=",".join(GRAPHS), help="comma-separated subset of dit,bigvgan")
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per variant and graph (interleaved)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (the runtime's --threads)")
    ap.add_argument("--frames", type=int, default=1290, help="DiT mel frames (prompt + target)")
    ap.add_argument("--batch", type=int, default=2, help="DiT batch (2 = one CFG call)")
    ap.add_argument("--mel-frames", type=int, default=430, help="BigVGAN input frames (430 = 5 s)")
    ap.add_argument("--profile", action="store_true", help="also print each variant's kernel time by op type")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    names = [g for g in args.graphs.split(",") if g]
    unknown = sorted(set(names) - set(GRAPHS))
    if unknown:
        ap.error(f"unknown graphs {unknown}: use {', '.join(GRAPHS)}")
    results = [bench_graph(name, args.baseline, args.candidate, args) for name in names]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
