"""CPU session settings for a bundle's hot graphs: threads, graph optimisation level, spinning.

    python tools/tune_cpu.py BUNDLE [--repeats 5] [--past 200] [--beams 3] [--frames 600] [--json OUT]

Times the two graphs that dominate synthesis on CPU (ort-notes §3.7), each under every setting, in one
process, interleaved round by round so that drift on a shared machine hits every setting alike:

    decoder step   one code for `beams` rows over a `past`-long KV cache
    dit step       one CFM step: batch 2 (CFG), `frames` mel frames

Prints the median per setting and its ratio to the runtime's default (ONNX Runtime's own thread count,
ORT_ENABLE_ALL, spinning on). Compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from indextts2_onnx.runtime.manifest import load_manifest

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
# (name, threads, level, spinning); the first is the runtime's default
SETTINGS = [("default", 0, "all", True), ("threads=1", 1, "all", True), ("threads=2", 2, "all", True),
            ("threads=2 no-spin", 2, "all", False), ("threads=2 extended", 2, "extended", True),
            ("threads=2 basic", 2, "basic", True)]


def session(path: Path, threads: int, level: str, spin: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = LEVELS[level]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def decoder_feeds(sess: ort.InferenceSession, beams: int, past: int, rng) -> dict:
    feeds = {}
    for i in sess.get_inputs():
        dtype = np.float16 if i.type == "tensor(float16)" else np.float32
        if i.name == "inputs_embeds":
            feeds[i.name] = rng.standard_normal((beams, 1, i.shape[2]), dtype=np.float32)
        else:  # past_{key,value}_i (B, H, P, Dh)
            feeds[i.name] = rng.standard_normal((beams, i.shape[1], past, i.shape[3])).astype(dtype)
    return feeds


def dit_feeds(sess: ort.InferenceSession, frames: int, rng, n_mels: int, style: int, cond: int) -> dict:
    f = np.float32
    return {"x": rng.standard_normal((2, n_mels, frames), dtype=f),
            "prompt_x": rng.standard_normal((2, n_mels, frames), dtype=f),
            "x_lens": np.full((2,), frames, np.int64), "t": np.full((2,), 0.3, f),
            "style": rng.standard_normal((2, style), dtype=f), "cond": rng.standard_normal((2, frames, cond), dtype=f)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--past", type=int, default=200)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--steps", type=int, default=10, help="decoder steps per timing")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    m = load_manifest(args.bundle)
    a = m.acoustic
    rng = np.random.default_rng(0)
    graphs = {"decoder step": m.graphs["gpt_decoder"].file, "dit step": m.graphs["dit"].file}
    sessions = {(g, s[0]): session(args.bundle / f, *s[1:]) for g, f in graphs.items() for s in SETTINGS}
    feeds = {"decoder step": decoder_feeds(sessions["decoder step", "default"], args.beams, args.past, rng),
             "dit step": dit_feeds(sessions["dit step", "default"], args.frames, rng, a.n_mels, a.style_dim,
                                   a.content_dim)}
    reps = {"decoder step": args.steps, "dit step": 1}
    times = {key: [] for key in sessions}
    for key, sess in sessions.items():  # warm-up: first runs allocate
        sess.run(None, feeds[key[0]])
    for _ in range(args.repeats):
        for key, sess in sessions.items():
            t0 = time.perf_counter()
            for _ in range(reps[key[0]]):
                sess.run(None, feeds[key[0]])
            times[key].append(1000 * (time.perf_counter() - t0) / reps[key[0]])
    result = {}
    for g in graphs:
        base = statistics.median(times[g, "default"])
        print(f"{g} ({graphs[g]}, {m.graphs['gpt_decoder' if 'decoder' in g else 'dit'].precision}):")
        for name, *_ in SETTINGS:
            med = statistics.median(times[g, name])
            result[f"{g} | {name}"] = {"ms": med, "vs_default": base / med, "runs": times[g, name]}
            print(f"  {name:22s} {med:9.1f} ms   {base / med:5.2f}x default")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
