"""The bench's orchestrator: one child process per variant on the same voice and work, then the ratios.

It never imports torch (the torch worker is only started as a child process) nor a worker module.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..runtime.audio import synthetic_voice, write_wav
from ..runtime.errors import InputError
from ..runtime.manifest import load_manifest
from ..runtime.text import Tokenizer
from .workload import RUNTIME, TIME_METRICS, TORCH, BenchError, Job, Workload, one_segment

# Each variant kind's worker module (`python -m MODULE --job JSON`).
WORKERS = {TORCH: "indextts2_onnx.bench.torch_worker", RUNTIME: "indextts2_onnx.bench.runtime_worker"}
VOICE_SR = 24_000  # the synthetic prompt's rate: not 22.05 kHz, so both resamplers do real work


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # TORCH or RUNTIME
    path: Path  # checkpoint folder or bundle folder


def parse_bundle(text: str) -> Variant:
    """`NAME=PATH` or `PATH` (named after its folder) -> a runtime variant."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).name, text
    if not name or not path:
        raise InputError(f"--bundle {text!r}: expected NAME=PATH or PATH")
    return Variant(name, RUNTIME, Path(path))


def check_text(text: str, variants: list[Variant]) -> None:
    """Fail early, before any model loads, when the text is not one segment (first bundle's tokenizer)."""
    bundles = [v.path for v in variants if v.kind == RUNTIME]
    if bundles:
        m = load_manifest(bundles[0])
        one_segment(Tokenizer.load(bundles[0] / m.tables["tokenizer"]).segments(text), text)


def run_worker(job: Job) -> dict:
    """Run one variant in a child process; its stderr goes through, its stdout's last line is the report."""
    cmd = [sys.executable, "-m", WORKERS[job.kind], "--job", job.to_json()]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        raise BenchError(f"variant {job.variant!r}: the {job.kind} worker failed (exit {out.returncode})",
                         "its error is printed above")
    return json.loads(lines[-1])


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def compare(row: dict, ref: dict) -> dict:
    """Ratios of a variant to the torch reference: speedup = torch / variant, memory and size variant / torch."""
    speedup = {k: ratio(ref["median"][k], row["median"][k]) for k in TIME_METRICS}
    speedup["load_s"] = ratio(ref["load_s"], row["load_s"])
    return {"speedup": speedup, "peak_rss_ratio": ratio(row["peak_rss_mib"], ref["peak_rss_mib"]),
            "peak_gpu_ratio": ratio(row["peak_gpu_mib"], ref["peak_gpu_mib"]),
            "size_ratio": ratio(row["size_mib"], ref["size_mib"])}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(rows: list[dict], device: str, threads: int | None) -> dict:
    """Where and with what the bench ran (the torch version as its worker reported it)."""
    import onnxruntime as ort

    torch_rows = [r for r in rows if r["kind"] == TORCH]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "device": device, "threads": threads,
        "gpu": torch_rows[0].get("gpu") if torch_rows else None,
        "versions": {"python": platform.python_version(), "indextts2-onnx": _version("indextts2-onnx"),
                     "numpy": np.__version__, "onnxruntime": ort.__version__,
                     "torch": torch_rows[0]["versions"]["torch"] if torch_rows else _version("torch")},
    }


def run_bench(variants: list[Variant], workload: Workload = Workload(), device: str = "cpu",
              threads: int | None = None, repeats: int = 1, voice: Path | None = None,
              voice_seconds: float = 10.0, progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Run every variant, one child process each, on the same voice and work -> the report (JSON-able).

    voice: a prompt file to use instead of the synthetic one (written once into a temporary folder)."""
    if not any(v.kind == RUNTIME for v in variants):
        raise InputError("nothing to compare: pass at least one --bundle")
    if len({v.name for v in variants}) != len(variants):
        raise InputError(f"variant names must differ: {[v.name for v in variants]}", "use --bundle NAME=PATH")
    if workload.codes < 1 or workload.steps < 1 or workload.beams < 1 or repeats < 1:
        raise InputError("--codes, --steps, --beams and --repeats must be >= 1")
    workload.options()  # every option in range (InputError naming it) before any model loads
    for v in variants:  # the folders, before any worker starts
        need = "config.yaml" if v.kind == TORCH else "manifest.json"
        if not (Path(v.path) / need).is_file():
            what = "--checkpoint: a checkpoint folder" if v.kind == TORCH else f"--bundle {v.name}: a bundle folder"
            raise InputError(f"{v.path}: no {need} there", f"pass {what}")
    check_text(workload.text, variants)
    synthetic = voice is None
    with tempfile.TemporaryDirectory(prefix="indextts2-bench-") as tmp:
        if synthetic:
            voice = Path(tmp) / "voice.wav"
            write_wav(voice, synthetic_voice(voice_seconds, VOICE_SR), VOICE_SR)
        rows = []
        for v in variants:
            progress(f"bench {v.name} ({v.kind}, {device}): load, warm-up, {repeats} timed run(s)")
            job = Job(v.name, v.kind, str(v.path), str(voice), device, threads, repeats, workload)
            rows.append(run_worker(job))
            m = rows[-1]["median"]
            progress(f"  {v.name}: {m['total_s']:.2f} s for {m['audio_s']:.2f} s of audio (RTF {m['rtf']:.2f})")
    ref = next((r for r in rows if r["kind"] == TORCH), None)
    for row in rows:
        row["vs_torch"] = compare(row, ref) if ref is not None else None
    return {"bench": "indextts2-onnx bench", **environment(rows, device, threads), "repeats": repeats,
            "voice": f"synthetic {voice_seconds:g} s at {VOICE_SR} Hz" if synthetic else "given",
            "workload": asdict(workload), "variants": rows}
