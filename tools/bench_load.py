"""What sha256 verification costs when a bundle loads: `IndexTTS2(bundle)` with and without `verify`.

    python tools/bench_load.py BUNDLE [--rounds 7] [--device cpu] [--threads N] [--json OUT]

One untimed load first (so every timed load finds the files in the page cache), then `rounds` rounds,
each timing one load with verify=True and one with verify=False in alternating order, so that drift on a
shared machine hits both alike. Also times hashing every listed file alone, one thread, for reference:
verification runs in a background thread while the sessions are created, so the load grows by less; and
reading the graphs' external-data locations, which every load does, verify or not.

Prints the medians and their ratio (verify / no verify). A first load from a cold disk is not measured:
there the hash pass reads the files from disk and the sessions then find them in the cache.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

from indextts2_onnx.runtime import IndexTTS2
from indextts2_onnx.runtime.integrity import graph_data_files
from indextts2_onnx.runtime.manifest import load_manifest, verify_checksums


def time_load(bundle: Path, verify: bool, device: str, threads: int | None) -> float:
    """Seconds for one `IndexTTS2(...)`; the object is freed before returning."""
    t0 = time.perf_counter()
    tts = IndexTTS2(bundle, device=device, threads=threads, verify=verify)
    seconds = time.perf_counter() - t0
    del tts
    gc.collect()
    return seconds


def time_hashing(bundle: Path) -> float:
    """Seconds to hash every listed file in this thread (what the background thread does)."""
    manifest = load_manifest(bundle)
    t0 = time.perf_counter()
    bad = verify_checksums(bundle, manifest)
    seconds = time.perf_counter() - t0
    if bad:
        raise SystemExit(f"{bundle}: sha256 differs for {', '.join(bad)}; measure an intact bundle")
    return seconds


def time_locations(bundle: Path) -> float:
    """Seconds to read every graph's external-data locations (done on every load, verify or not)."""
    manifest = load_manifest(bundle)
    t0 = time.perf_counter()
    for name in manifest.graphs:
        graph_data_files(bundle, manifest, name)
    return time.perf_counter() - t0


def bench(bundle: Path, rounds: int, device: str, threads: int | None) -> dict:
    """Median load seconds with and without verification, interleaved, and their ratio."""
    time_load(bundle, True, device, threads)  # warm-up: page cache, ONNX Runtime's one-time setup
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for verify in ((True, False) if r % 2 == 0 else (False, True)):
            times[verify].append(time_load(bundle, verify, device, threads))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    manifest = load_manifest(bundle)
    return {
        "bundle": str(bundle), "device": device, "threads": threads, "rounds": rounds,
        "bytes": sum(f.size for f in manifest.files.values()),
        "verify_s": on, "no_verify_s": off, "ratio": on / off, "added_s": on - off,
        "hash_only_s": time_hashing(bundle), "locations_s": time_locations(bundle),
        "all_verify_s": times[True], "all_no_verify_s": times[False],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json")
    args = p.parse_args()
    r = bench(args.bundle, args.rounds, args.device, args.threads)
    print(f"{r['bundle']}: {r['bytes'] / 1e6:.1f} MB, {r['rounds']} interleaved rounds, medians")
    print(f"  load, verify=True   {r['verify_s']:.3f} s")
    print(f"  load, verify=False  {r['no_verify_s']:.3f} s")
    print(f"  ratio {r['ratio']:.3f} (+{r['added_s']:.3f} s); hashing alone, one thread: {r['hash_only_s']:.3f} s")
    print(f"  (both loads include reading the graphs' external-data locations: {r['locations_s']:.3f} s)")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
