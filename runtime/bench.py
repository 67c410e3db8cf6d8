"""`indextts2-onnx bench`: exported bundles against the torch reference pipeline, the same work, one command.

Every variant (the torch reference, then each bundle) runs in its own child process
(`python -m <worker module> --job JSON`), so its peak host memory (`ru_maxrss`) is its own. A worker loads
(timed), speaks one short untimed warm-up utterance, then `repeats` timed ones, and prints one JSON object.
All variants do identical work (`Workload`):

    one synthetic voice prompt (a WAV written once, shared), one text that tokenizes into ONE segment,
    exactly `codes` codes (the stop token is banned until then: HF `min_new_tokens`), upstream's beam
    sampling (3 beams, top-k 30, top-p 0.8, temperature 0.8, repetition penalty 10) with a fixed seed,
    `steps` CFM steps with cfg_rate 0.7 from noise drawn with a fixed seed, the speaker as its own emotion.

The torch worker lives in `indextts2_onnx.export.torch_pipeline`; the runtime worker is this module. This
module never imports torch: the orchestrator only starts the torch worker as a child process.

Stages (seconds, contiguous, so they sum to `total_s`):

    text_s          text -> BPE ids (the shared text front end)
    prompt_s        voice file -> speaker features (front end, w2v-BERT x2, codec, CAMPPlus, length regulator)
    conditioning_s  emotion vector, GPT speaker latent, decode prefix
    decode_s        the KV-cache decode loop with the sampler (`ms_per_code` = decode_s / codes)
    latent_s        the GPT's second ("latent") pass
    mel_s           latent projector, length regulator, CFM loop over the DiT
    vocoder_s       BigVGAN

Speedups are torch time / variant time, from medians measured in the same run. No assertion is ever
made on timings: on a shared machine they drift; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .audio import synthetic_voice, write_wav
from .errors import IndexTTS2Error, InputError
from .manifest import load_manifest
from .sampling import SamplingOptions
from .text import Tokenizer


DEFAULT_TEXT = ("The quick brown fox jumps over the lazy dog, then it runs back into the quiet forest to rest.")
STAGES = ("text_s", "prompt_s", "conditioning_s", "decode_s", "latent_s", "mel_s", "vocoder_s")
# Seconds-like metrics (lower is better): speedup = torch / variant for each.
TIME_METRICS = (*STAGES, "total_s", "ttfa_s", "ms_per_code", "rtf")
TORCH = "torch"  # the reference row's name and kind
RUNTIME = "runtime"
WORKERS = {TORCH: "indextts2_onnx.export.torch_pipeline", RUNTIME: "indextts2_onnx.runtime.bench"}
VOICE_SR = 24_000  # the synthetic prompt's rate: not 22.05 kHz, so both resamplers do real work
WARMUP_CODES, WARMUP_STEPS = 8, 2

# (waveform float32 (samples,), codes int64 (N,), stage seconds incl. total_s)
Output = tuple[np.ndarray, np.ndarray, dict[str, float]]
M = TypeVar("M")


class BenchError(IndexTTS2Error):
    """A benchmark variant could not run."""

    stage = "bench"


# --- what every variant does -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One utterance's work, identical for every variant. Defaults are upstream `infer()`'s."""

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
    seed: int = 0  # the code sampler's generator
    noise_seed: int = 1  # the CFM start noise: default_rng(noise_seed).standard_normal(...)

    def sampling(self) -> SamplingOptions:
        """The sampler options `IndexTTS2.generate_codes` builds from the same arguments."""
        return SamplingOptions(greedy=self.greedy, num_beams=1 if self.greedy else self.beams, top_k=self.top_k,
                               top_p=self.top_p, temperature=self.temperature,
                               repetition_penalty=self.repetition_penalty)

    def warmup(self) -> "Workload":
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
    def from_json(text: str) -> "Job":
        d = json.loads(text)
        return Job(**{**d, "workload": Workload(**d["workload"])})


def one_segment(segments: list[list[int]], text: str) -> list[int]:
    """The ids of a text that must be a single segment (so time to first audio is the end-to-end time)."""
    if len(segments) != 1:
        raise InputError(f"the bench text {text[:40]!r}... tokenizes into {len(segments)} segments",
                         "pass a shorter --text: the bench speaks exactly one segment")
    return segments[0]


def check_codes(codes: np.ndarray, codebook_size: int) -> None:
    """Refuse codes the s2mel codebook cannot embed, with the reason, instead of an index error later.

    The GPT's vocabulary also holds its start/stop mel tokens; with the stop token banned, random weights
    can draw the start token (trained weights never do), which has no codebook row."""
    bad = np.flatnonzero(codes >= codebook_size)
    if bad.size:
        raise BenchError(f"code {int(codes[bad[0]])} drawn at step {int(bad[0]) + 1}: the codec has {codebook_size} "
                         "codes (the GPT's start mel token? random weights can draw it)",
                         "try another --seed or fewer --codes")


# --- measuring -----------------------------------------------------------------------------------------


class Stopwatch:
    """Contiguous stage laps: each `lap` closes the stage that ran since the previous one.

    `sync` runs before every reading (torch on CUDA: `torch.cuda.synchronize`, so queued kernels count)."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync
        self.laps: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, stage: str, inner: dict[str, float] | None = None) -> None:
        """Close `stage`; `inner` stages measured inside this lap are booked as given, `stage` gets the rest."""
        self.sync()
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        inner = inner or {}
        for name, seconds in {**inner, stage: elapsed - sum(inner.values())}.items():
            self.laps[name] = self.laps.get(name, 0.0) + seconds

    def timings(self) -> dict[str, float]:
        return {**self.laps, "total_s": self._last - self._start}


def summarize(timings: dict[str, float], audio_s: float, codes: int) -> dict[str, float]:
    """One run's metrics: the stage seconds plus RTF, GPT ms per code and time to first audio.

    The text is one segment, so the first waveform chunk is the whole output: time to first audio equals
    the end-to-end time (`ttfa_s == total_s`). Runtime rows then replace `ttfa_s` with the first chunk of
    the same work streamed (`streamed`), which torch does not do."""
    total = timings["total_s"]
    return {**{s: timings.get(s, 0.0) for s in STAGES}, "total_s": total, "ttfa_s": total,
            "audio_s": audio_s, "rtf": total / audio_s, "codes": float(codes),
            "ms_per_code": 1000.0 * timings.get("decode_s", 0.0) / max(codes, 1)}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric median over the timed runs (each metric on its own: robust to one slow run)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB): ru_maxrss is KiB on Linux, bytes on macOS."""
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
        if codes.shape[0] != job.workload.codes:
            raise BenchError(f"{job.variant}: {codes.shape[0]} codes instead of {job.workload.codes}")
        runs.append(summarize(timings, wav.shape[0] / sample_rate(model), codes.shape[0]))
    return model, {"variant": job.variant, "kind": job.kind, "device": job.device, "load_s": load_s,
                   "median": medians(runs), "runs": runs}


# --- the runtime worker --------------------------------------------------------------------------------


def synthesize(tts, voice: str | Path, w: Workload) -> Output:
    """The runtime's side of the bench: voice file + text -> (waveform, codes, stage seconds).

    `tts` is an `IndexTTS2`. Stage by stage, so that the code and noise seeds are the ones the torch side
    uses; code generation through its timed variant, which returns the decode and latent seconds as a
    value (the object keeps no metrics)."""
    clock = Stopwatch()
    ids = one_segment(tts.tokenize(w.text), w.text)
    clock.lap("text_s")
    spk = tts.prepare_speaker(str(voice))
    clock.lap("prompt_s")
    emovec = tts.emotion_vector(spk)  # the speaker is its own emotion prompt
    clock.lap("conditioning_s")
    sampling = SamplingOptions(greedy=w.greedy, num_beams=1 if w.greedy else w.beams, top_k=w.top_k, top_p=w.top_p,
                               temperature=w.temperature, repetition_penalty=w.repetition_penalty)
    codes, latent, inner = tts._generate_codes_timed(ids, spk, emovec, sampling, max_codes=w.codes, seed=w.seed,
                                                     min_codes=w.codes)
    clock.lap("conditioning_s", inner={"decode_s": inner["decode_s"], "latent_s": inner["latent_s"]})
    check_codes(codes, tts.manifest.acoustic.codebook_size)
    mel = tts.decode_mel(codes, latent, spk, steps=w.steps, cfg_rate=w.cfg_rate, seed=w.noise_seed)
    clock.lap("mel_s")
    wav = tts.vocode(mel)
    clock.lap("vocoder_s")
    return wav, codes, clock.timings()


def streamed(tts, voice: str | Path, w: Workload) -> dict[str, float]:
    """The same work through `IndexTTS2.stream()` (chunked, default chunk plan), one call -> its time to the
    first chunk (`ttfa_s`: first audio as a streaming client hears it, prompt preparation included) and to
    the last (`stream_total_s`). The code count is fixed as in the stage-by-stage run."""
    from .options import SynthesisOptions

    options = SynthesisOptions(greedy=w.greedy, num_beams=1 if w.greedy else w.beams, top_k=w.top_k, top_p=w.top_p,
                               temperature=w.temperature, repetition_penalty=w.repetition_penalty, steps=w.steps,
                               cfg_rate=w.cfg_rate, seed=w.seed, max_codes=w.codes, min_codes=w.codes)
    t0 = time.perf_counter()
    first, codes = None, 0
    for chunk in tts.stream(w.text, str(voice), options):
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

    from .pipeline import IndexTTS2

    tts, report = measure(job, lambda: IndexTTS2(job.path, device=job.device, threads=job.threads), synthesize,
                          lambda t: t.manifest.acoustic.sample_rate)
    for run in report["runs"]:  # time to first audio: the same work streamed, once per timed run
        run.update(streamed(tts, job.voice, job.workload))
    report["median"] = medians(report["runs"])
    return {**report, **bundle_facts(Path(job.path)), "providers": tts.providers, "peak_rss_mib": peak_rss_mib(),
            # ORT has no clean peak-allocation counter (its arena reserves, nvidia-smi adds the context)
            "peak_gpu_mib": None, "versions": {"onnxruntime": ort.__version__}}


def worker_main(argv: list[str] | None = None, worker: Callable[[Job], dict] = runtime_worker) -> int:
    """Child-process entry: run the job, print its report as one JSON line on stdout (logs go to stderr)."""
    p = argparse.ArgumentParser(description="indextts2-onnx bench worker (started by `indextts2-onnx bench`)")
    p.add_argument("--job", required=True, help="the Job as JSON")
    job = Job.from_json(p.parse_args(argv).job)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        report = worker(job)
    except IndexTTS2Error as e:  # a known failure: one line, not a traceback
        print(f"error: {job.variant}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0


# --- the orchestrator ----------------------------------------------------------------------------------


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


# --- the report ----------------------------------------------------------------------------------------


def precision_summary(precision: dict[str, str]) -> str:
    """'fp32' when every graph shares one precision, else counts: 'fp32 x8, int8 x2'."""
    counts: dict[str, int] = {}
    for p in precision.values():
        counts[p] = counts.get(p, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{p} x{n}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _ms_with_speedup(seconds: float, row: dict, key: str) -> str:
    vs = row.get("vs_torch")
    if row["kind"] == TORCH or vs is None or vs["speedup"].get(key) is None:
        return f"{1000 * seconds:.1f}"
    return f"{1000 * seconds:.1f} ({vs['speedup'][key]:.2f}x)"


def markdown(report: dict) -> str:
    """Two tables: one row per variant (totals, memory, size), then one row per stage (ms, speedup)."""
    w, rows = report["workload"], report["variants"]
    mode = "greedy" if w["greedy"] else f"{w['beams']} beams"
    lines = [
        f"## indextts2-onnx bench: {w['codes']} codes, {mode}, {w['steps']} CFM steps (cfg {w['cfg_rate']}), "
        f"{report['device']}, threads {report['threads'] or 'default'}, median of {report['repeats']}",
        "",
        f"{report['date']}, {report['platform']}, {report['cpu_count']} CPUs"
        + (f", {report['gpu']}" if report.get("gpu") else "")
        + f"; onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch'] or '-'}. "
        "Speedup = torch time / variant time, measured in this run.",
        "",
        "| variant | precision | providers | size MiB | load s | total s | RTF | speedup | TTFA s | GPT ms/code "
        "| peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, vs = r["median"], r.get("vs_torch")
        speed = "1.00x (ref)" if r["kind"] == TORCH else (
            "-" if vs is None else f"{vs['speedup']['total_s']:.2f}x")
        lines.append(
            f"| {r['variant']} | {precision_summary(r['precision'])} | {', '.join(r['providers'])} "
            f"| {_num(r['size_mib'], '.1f')} | {_num(r['load_s'])} | {m['total_s']:.3f} | {m['rtf']:.3f} | {speed} "
            f"| {m['ttfa_s']:.3f} | {m['ms_per_code']:.2f} | {_num(r['peak_rss_mib'], '.0f')} "
            f"| {_num(r['peak_gpu_mib'], '.0f')} |")
    lines += ["", "| stage (ms) | " + " | ".join(r["variant"] for r in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for key in (*STAGES, "total_s"):
        lines.append(f"| {key[:-2]} | " + " | ".join(_ms_with_speedup(r["median"][key], r, key) for r in rows) + " |")
    size_note = "torch's size is the checkpoint files it reads; " if any(r["kind"] == TORCH for r in rows) else ""
    lines += ["", "Stages sum to total. TTFA: for bundles, the first chunk of the same work through `stream()` "
              "(chunked, default plan, prompt preparation included; `stream_total_s` in the JSON is that call's "
              f"total); for torch, which does not stream, the total. {size_note}"
              "ONNX Runtime's peak GPU memory is not measured (no clean counter)."]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, json_path: Path, markdown_path: Path | None = None) -> str:
    """Write the JSON report (and the markdown tables); returns the markdown."""
    text = markdown(report)
    Path(json_path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if markdown_path is not None:
        Path(markdown_path).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    sys.exit(worker_main())
