"""The bench's orchestrator: one child process per variant on the same voice and work, then the ratios.

It never imports torch (the torch worker is only started as a child process) nor a worker module.

Bundles may be of either family (IndexTTS2 2.0, IndexTTS-2.5) in one run; each row says its family. The
ratios are against one baseline row: the torch reference when there is one, else the first bundle. The
torch reference is of its checkpoint's family and is compared only with bundles of that family (its ratios
measure the runtime against torch on one model); a first-bundle baseline is compared with every bundle,
and the report says when that compares different models (`with_ratios`, `report.markdown`).
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
from ..runtime.family import FAMILIES
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


def check_text(text: str, lang: str, variants: list[Variant]) -> None:
    """Fail early, before any model loads, when a bundle does not speak `lang` or the text is not one
    segment for it: each bundle's own tokenizer, of its manifest's family (2.5: tiktoken, with `lang`)."""
    for v in variants:
        if v.kind != RUNTIME:
            continue
        m = load_manifest(v.path)
        where = f"--bundle {v.name}"
        try:
            code = FAMILIES[m.family].check_lang(lang)
        except InputError as e:
            raise InputError(f"{where}: {e.message}", e.hint) from e
        path = Path(v.path) / m.tables["tokenizer"]
        if m.family == "2.5":
            from ..runtime.multilingual import MultilingualTokenizer  # tiktoken: only for 2.5 bundles

            segments = MultilingualTokenizer.load(path, max_text_tokens=m.gpt.max_text_tokens).segments(text, code)
        else:
            segments = Tokenizer.load(path).segments(text)
        one_segment(segments, text)


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


def compare(row: dict, base: dict) -> dict:
    """Ratios of a variant to the baseline: speedup = baseline / variant, memory and size variant / baseline."""
    speedup = {k: ratio(base["median"][k], row["median"][k]) for k in TIME_METRICS}
    speedup["load_s"] = ratio(base["load_s"], row["load_s"])
    return {"speedup": speedup, "peak_rss_ratio": ratio(row["peak_rss_mib"], base["peak_rss_mib"]),
            "peak_gpu_ratio": ratio(row["peak_gpu_mib"], base["peak_gpu_mib"]),
            "size_ratio": ratio(row["size_mib"], base["size_mib"])}


def with_ratios(rows: list[dict]) -> str:
    """Set each row's `vs_baseline` (None: not compared) -> the baseline's name.

    The baseline is the torch row when there is one, else the first. Torch is compared only with bundles
    of its checkpoint's family: its speedups say what the runtime gains on one model, which a bundle of
    the other family cannot say. A bundle baseline is compared with every row, whatever its family."""
    base = next((r for r in rows if r["kind"] == TORCH), rows[0])
    for row in rows:
        same = base["kind"] != TORCH or row["family"] == base["family"]
        row["vs_baseline"] = compare(row, base) if same else None
    return base["variant"]


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
    check_text(workload.text, workload.lang, variants)
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
            progress(f"  {v.name} ({rows[-1]['family']}): {m['total_s']:.2f} s for {m['audio_s']:.2f} s of audio "
                     f"(RTF {m['rtf']:.2f}; GPT {m['ms_per_code']:.1f} ms/code, {m['ms_per_audio_s']:.0f} ms per "
                     "audio second)")
    baseline = with_ratios(rows)
    return {"bench": "indextts2-onnx bench", **environment(rows, device, threads), "repeats": repeats,
            "voice": f"synthetic {voice_seconds:g} s at {VOICE_SR} Hz" if synthetic else "given",
            "workload": asdict(workload), "baseline": baseline, "variants": rows}
