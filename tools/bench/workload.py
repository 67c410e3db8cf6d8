"""The bench's work and its worker protocol, shared by the runtime worker and the torch worker.

`Workload` is the one utterance every variant speaks; `Job` is a worker's orders (JSON on its command
line); `measure` loads, warms up and times a variant the same way on both sides; `worker_main` is the
child-process entry that prints the report. Nothing here imports torch or ONNX Runtime itself (the
runtime's option and error types come from `indextts2_onnx.runtime`, which both workers load anyway).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, TypeVar

import numpy as np

from ..runtime.errors import IndexTTS2Error, InputError
from ..runtime.options import SynthesisOptions

DEFAULT_TEXT = ("The quick brown fox jumps over the lazy dog, then it runs back into the quiet forest to rest.")
STAGES = ("text_s", "prompt_s", "conditioning_s", "decode_s", "latent_s", "mel_s", "vocoder_s")
# Seconds-like metrics (lower is better): speedup = baseline / variant for each. GPT time per code and per
# second of audio: a code is 20 ms of audio in 2.0 and 40 ms in 2.5 (family.Family.codes_per_second).
TIME_METRICS = (*STAGES, "total_s", "ttfa_s", "ms_per_code", "ms_per_audio_s", "rtf")
TORCH = "torch"  # the reference row's name and kind
RUNTIME = "runtime"
WARMUP_CODES, WARMUP_STEPS = 8, 2

# (waveform float32 (samples,), number of codes generated, stage seconds incl. total_s)
Output = tuple[np.ndarray, int, dict[str, float]]
M = TypeVar("M")


class BenchError(IndexTTS2Error):
    """A benchmark variant could not run."""

    stage = "bench"


@dataclass(frozen=True)
class Workload:
    """One utterance's work, identical for every variant. Defaults are upstream `infer()`'s.

    `seed` is the call's one seed, as `IndexTTS2.synthesize` takes it: `runtime.pipeline.segment_seeds`
    turns it into the code sampler's seed and the CFM start noise's seed, on both sides."""

    text: str = DEFAULT_TEXT  # must tokenize into one segment
    codes: int = 250  # exactly this many codes: the stop token is banned before (min = max codes)
    beams: int = 3
    steps: int = 25  # CFM Euler steps
    cfg_rate: float = 0.7
    greedy: bool = False  # tests: argmax decoding, so torch and ONNX codes can be compared exactly
    top_k: int = 30
    top_p: float = 0.8
    temperature: float = 0.8
    repetition_penalty: float = 10.0
    seed: int = 0  # seeds the codes and the CFM noise (segment_seeds)
    lang: str = "en"  # the text's language: 2.5 needs one; 2.0 takes en, zh or zhen (its one front end)

    def options(self) -> SynthesisOptions:
        """The public synthesis options of this work (the runtime worker's call; the torch worker takes its
        sampler options from them too, so both sides sample alike). The speaker is its own emotion prompt."""
        return SynthesisOptions(greedy=self.greedy, num_beams=self.beams, top_k=self.top_k, top_p=self.top_p,
                                temperature=self.temperature, repetition_penalty=self.repetition_penalty,
                                steps=self.steps, cfg_rate=self.cfg_rate, seed=self.seed, max_codes=self.codes,
                                min_codes=self.codes, lang=self.lang)

    def warmup(self) -> Workload:
        """A short utterance that touches every graph and code path before timing starts."""
        return replace(self, codes=min(WARMUP_CODES, self.codes), steps=min(WARMUP_STEPS, self.steps))


@dataclass(frozen=True)
class Job:
    """A worker's orders, passed to the child process as JSON."""

    variant: str  # row name in the report
    kind: str  # TORCH or RUNTIME
    path: str  # checkpoint folder (torch) or bundle folder (runtime)
    voice: str  # the voice prompt WAV
    device: str = "cpu"
    threads: int | None = None
    repeats: int = 1
    workload: Workload = field(default_factory=Workload)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Job:
        d = json.loads(text)
        return Job(**{**d, "workload": Workload(**d["workload"])})


def one_segment(segments: list[list[int]], text: str) -> list[int]:
    """The ids of a text that must be a single segment (so time to first audio is the end-to-end time)."""
    if len(segments) != 1:
        raise InputError(f"the bench text {text[:40]!r}... tokenizes into {len(segments)} segments",
                         "pass a shorter --text: the bench speaks exactly one segment")
    return segments[0]


class Stopwatch:
    """Contiguous stage laps: each `lap` closes the stage that ran since the previous one (a stage lapped
    twice adds up).

    `sync` runs before every reading (torch on CUDA: `torch.cuda.synchronize`, so queued kernels count)."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync
        self.laps: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Close `stage`: the time since the previous lap is booked to it."""
        self.sync()
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self._last
        self._last = now

    def timings(self) -> dict[str, float]:
        return {**self.laps, "total_s": self._last - self._start}


def summarize(timings: dict[str, float], audio_s: float, codes: int) -> dict[str, float]:
    """One run's metrics: the stage seconds plus RTF, GPT ms per code and per second of audio (the decode
    loop's time: the same code count is 2.5's double length of audio, so per-second is the fair comparison
    across families) and time to first audio.

    The text is one segment, so the first waveform chunk is the whole output: time to first audio equals
    the end-to-end time (`ttfa_s == total_s`). Runtime rows then replace `ttfa_s` with the first chunk of
    the same work streamed (`runtime_worker.streamed`), which torch does not do."""
    total = timings["total_s"]
    return {**{s: timings.get(s, 0.0) for s in STAGES}, "total_s": total, "ttfa_s": total,
            "audio_s": audio_s, "rtf": total / audio_s, "codes": float(codes),
            "ms_per_code": 1000.0 * timings.get("decode_s", 0.0) / max(codes, 1),
            "ms_per_audio_s": 1000.0 * timings.get("decode_s", 0.0) / audio_s}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric median over the timed runs (each metric on its own: robust to one slow run)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB). Linux: `VmHWM` of /proc/self/status, the peak of
    this program's own memory; ru_maxrss would carry the parent's peak over fork and exec, so a worker
    started by a big process (a test run holding torch) would report that process's size. Elsewhere
    ru_maxrss (bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(job: Job, load: Callable[[], M], synth: Callable[[M, str, Workload], Output],
            sample_rate: Callable[[M], int]) -> tuple[M, dict]:
    """Load (timed), one untimed warm-up utterance, `job.repeats` timed ones -> (model, partial report).

    Every timed run must produce exactly `workload.codes` codes: otherwise the variants did not do the
    same work and the comparison would mean nothing."""
    t0 = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - t0
    synth(model, job.voice, job.workload.warmup())
    runs = []
    for _ in range(job.repeats):
        wav, codes, timings = synth(model, job.voice, job.workload)
        if codes != job.workload.codes:
            raise BenchError(f"{job.variant}: {codes} codes instead of {job.workload.codes}")
        runs.append(summarize(timings, wav.shape[0] / sample_rate(model), codes))
    return model, {"variant": job.variant, "kind": job.kind, "device": job.device, "load_s": load_s,
                   "median": medians(runs), "runs": runs}


def worker_main(worker: Callable[[Job], dict], argv: list[str] | None = None,
                known: tuple[type[BaseException], ...] = (IndexTTS2Error,)) -> int:
    """Child-process entry: run the job, print its report as one JSON line on stdout (logs go to stderr).
    A `known` failure (bad input, a broken bundle or checkpoint) is one line on stderr, not a traceback."""
    p = argparse.ArgumentParser(description="indextts2-onnx bench worker (started by `indextts2-onnx bench`)")
    p.add_argument("--job", required=True, help="the Job as JSON")
    job = Job.from_json(p.parse_args(argv).job)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        report = worker(job)
    except known as e:
        print(f"error: {job.variant}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0
