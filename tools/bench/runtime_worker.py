"""The bench's ONNX Runtime worker: one bundle through the public API, in its own process.

    python -m indextts2_onnx.bench.runtime_worker --job JSON

Each timed run is one `IndexTTS2.synthesize(text, voice, Workload.options())` call; its stages are the
call's `result.metrics`, and `text_s` is what the call's wall time holds beyond them (`stage_seconds`).
Time to first audio comes from the same work through `stream()`, once per timed run (`streamed`). The
bundle may be of either family (IndexTTS2 2.0 or IndexTTS-2.5): the row says which (`family`) and how many
codes make a second of its audio (`codes_per_second`); `Workload.lang` is the call's language.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..runtime.manifest import load_manifest
from ..runtime.results import Metrics
from .workload import (STAGES, BenchError, Job, Output, Workload, measure, medians, one_segment, peak_rss_mib,
                       worker_main)

# The bench stages `Metrics` times (all but text_s), under the same names.
METRIC_STAGES = tuple(s for s in STAGES if s != "text_s")


def stage_seconds(metrics: Metrics, wall_s: float) -> dict[str, float]:
    """One `synthesize` call's bench stages: the Metrics stages as they are, `text_s` the rest of the call's
    wall time (text normalisation, tokenisation and segmentation, which Metrics does not time, plus the
    call's bookkeeping outside its timed stages: checking options and arguments, joining chunks), `total_s`
    the wall time. The stages are contiguous, so they sum to `total_s`."""
    timed = {s: float(getattr(metrics, s)) for s in METRIC_STAGES}
    return {"text_s": wall_s - sum(timed.values()), **timed, "total_s": wall_s}


def synthesize(tts, voice: str | Path, w: Workload) -> Output:
    """One timed `tts.synthesize` call (an `IndexTTS2`) -> (waveform, codes generated, stage seconds).

    The text is checked to be one segment before the clock starts (the orchestrator checked it with the
    bundle's tokenizer; the check is repeated here for a worker started on its own)."""
    one_segment(tts.tokenize(w.text, lang=w.lang), w.text)
    options = w.options()
    t0 = time.perf_counter()
    result = tts.synthesize(w.text, str(voice), options)
    wall_s = time.perf_counter() - t0
    return result.audio, result.metrics.codes, stage_seconds(result.metrics, wall_s)


def streamed(tts, voice: str | Path, w: Workload) -> dict[str, float]:
    """The same work through `IndexTTS2.stream()` (chunked, default chunk plan), one call -> its time to the
    first chunk (`ttfa_s`: first audio as a streaming client hears it, prompt preparation included) and to
    the last (`stream_total_s`). The code count is fixed as in the `synthesize` run."""
    t0 = time.perf_counter()
    first, codes = None, 0
    for chunk in tts.stream(w.text, str(voice), w.options()):
        first = time.perf_counter() - t0 if first is None else first
        codes = chunk.metrics.codes
    if codes != w.codes:
        raise BenchError(f"stream(): {codes} codes instead of {w.codes}")
    return {"ttfa_s": first, "stream_total_s": time.perf_counter() - t0}


def bundle_facts(bundle: Path) -> dict:
    """Size on disk (the manifest's file sizes) and each graph's precision."""
    m = load_manifest(Path(bundle))
    return {"size_mib": sum(f.size for f in m.files.values()) / 2**20,
            "precision": {name: g.precision for name, g in m.graphs.items()}}


def runtime_worker(job: Job) -> dict:
    """Bench one bundle with ONNX Runtime in this process -> its report."""
    import onnxruntime as ort

    from ..runtime import IndexTTS2

    # the emotion model is not part of the measured work: not loaded, so load time and peak RSS are the TTS's
    tts, report = measure(job, lambda: IndexTTS2(job.path, device=job.device, threads=job.threads, emotion_text=False),
                          synthesize,
                          lambda t: t.manifest.acoustic.sample_rate)
    for run in report["runs"]:  # time to first audio: the same work streamed, once per timed run
        run.update(streamed(tts, job.voice, job.workload))
    report["median"] = medians(report["runs"])
    return {**report, "family": tts.family.name, "codes_per_second": tts.family.codes_per_second,
            **bundle_facts(Path(job.path)), "providers": tts.providers, "peak_rss_mib": peak_rss_mib(),
            # ORT has no clean peak-allocation counter (its arena reserves, nvidia-smi adds the context)
            "peak_gpu_mib": None, "versions": {"onnxruntime": ort.__version__}}


if __name__ == "__main__":
    sys.exit(worker_main(runtime_worker))
