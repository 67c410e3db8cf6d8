"""Load test of the speech server: closed-loop clients against `POST /v1/audio/speech`, level by level.

    python tools/loadtest.py --url http://127.0.0.1:8000 --clients 4 --requests 20
                             [--duration-s 600] [--voice ID | --voice-audio WAV] [--text "..."]
                             [--max-codes 60] [--steps 10] [--preset default] [--stream] [--format wav]
                             [--api-key K] [--timeout-s 600] [--json OUT.json]
    python tools/loadtest.py --bundle BUNDLE --clients 1,2,4,8 --requests 20 [--server-arg=--workers=8 ...]

With --url it drives a server that is already running. With --bundle it is self-contained: it starts
`indextts2-onnx serve` (the console script next to this Python) on a free loopback port with a
temporary voices folder, waits for GET /ready, runs every level against that one server, and stops it
(SIGTERM, then SIGKILL) at the end, on an error and on Ctrl-C. `--server-arg` (repeatable) passes an
option on to serve, e.g. `--server-arg=--workers=8 --server-arg=--max-queue=4`.

What it does, per level (`--clients 1,2,4,8` is four levels, run in turn):

* A voice is registered first (POST /v1/audio/voices: a synthetic voice-like buzz, or --voice-audio),
  unless --voice names one the server has.
* N client threads, each on its own keep-alive connection, send requests back to back: the next as soon
  as the previous answer is read in full (a closed loop: at most N requests outstanding). Request i of
  the level uses seed i, so a level is reproducible. A level ends when --requests requests have been
  sent (429s count) or --duration-s has passed (requests already sent are waited for). After a 429 a
  client waits the Retry-After seconds, as a polite client does, before its next request.
* A sampler thread reads GET /metrics every 0.5 s: resident memory (process_resident_memory_bytes),
  queue depth, requests in flight and GPT decoder batch rows in use.

What it reports, per level (a markdown table, one row per level; --json writes every number):

* ok / 429 / failed: answers; a failure is any other status or a broken connection, listed by status
  with the first message. The exit code is 1 if any request failed other than with 429.
* latency p50/p95: seconds from sending a request to having read its whole answer (client side).
* TTFA p50/p95: time to first audio. With --stream (stream_format "audio") the client's time to the
  first body byte; otherwise the server's own X-TTFA-Seconds header (admission to first audio, which
  for a whole file is not when the client gets anything). The report names which.
* audio s, audio s/s: seconds of audio received, and that over the level's wall time (first request
  sent to last answer read): throughput, which batching should raise as clients are added until the
  CPU/GPU is saturated; req/s likewise.
* RSS start/max/end and its growth over the level's second half (MB): the server process's memory, to
  show it is flat under sustained load (growth near 0) rather than creeping per request.
* max queue / max in flight / max batch rows: the most the sampler saw (0.5 s samples: short peaks can
  be missed). Queue depth above 0 means requests waited for a worker; batch rows are the GPT decoder
  rows in use by the shared batch (requests x beams): how much decoding was batched. (A request's
  slot is freed just after its answer is sent, so in flight can briefly read one above the clients.)

Numbers are for comparing levels (and settings) on the same server and machine, as ratios: on a shared,
noisy machine absolute seconds move from run to run. A tiny random-weight bundle measures the server's
overheads, not speech synthesis speed.

Only the standard library is used on the client side (http.client), so the tool adds no dependency.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

TEXT = "The quick brown fox jumps over the lazy dog while the evening light fades over the quiet hills."
API_KEY_ENV = "INDEXTTS2_API_KEY"
SAMPLE_EVERY_S = 0.5
METRICS = {"rss": "process_resident_memory_bytes", "queue": "indextts2_queue_depth",
           "in_flight": "indextts2_in_flight", "batch_rows": "indextts2_batch_rows",
           "audio_total": "indextts2_audio_seconds_total"}
MB = 2**20


class LoadTestError(Exception):
    """Something that stops the load test itself (the server would not start, the voice was refused)."""


# --- HTTP -----------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the server (reconnects after an error)."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise LoadTestError(f"--url: expected http://HOST:PORT, got {url!r}")
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = kind(self.host, self.port, timeout=self.timeout_s)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """Send a request; returns the response with its status and headers read (body not yet)."""
        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=body, headers={**self.headers, **(headers or {})})
            return conn.getresponse()
        except BaseException:
            self.close()
            raise

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one request."""
        resp = self.send(method, path, body, headers)
        try:
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, data


def error_message(body: bytes) -> str:
    """The message of an OpenAI-shaped error body, or the body's start."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data, ctype) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def synthetic_wav(seconds: float = 6.0, sr: int = 22050) -> bytes:
    """The runtime's synthetic voice-like prompt as WAV bytes."""
    import soundfile as sf

    from indextts2_onnx.runtime.audio import synthetic_voice

    buf = io.BytesIO()
    sf.write(buf, synthetic_voice(seconds, sr), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def register_voice(client: Client, audio: bytes, filename: str, name: str) -> str:
    """POST /v1/audio/voices; the new voice's id."""
    body, ctype = multipart({"name": name}, {"audio": (filename, audio, "audio/wav")})
    status, _, data = client.call("POST", "/v1/audio/voices", body, {"Content-Type": ctype})
    if status != 201:
        raise LoadTestError(f"registering the voice: HTTP {status}: {error_message(data)}")
    return json.loads(data)["id"]


def parse_metrics(text: str) -> dict[str, float]:
    """The sampled gauges out of Prometheus text (unlabelled series only)."""
    wanted = {v: k for k, v in METRICS.items()}
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, rest = line.partition(" ")
        if name in wanted:
            try:
                out[wanted[name]] = float(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return out


# --- one request ------------------------------------------------------------------------------------


@dataclass
class Result:
    index: int
    status: int  # HTTP status; 0: no answer (connection error, timeout)
    latency_s: float
    ttfa_s: float | None = None
    audio_s: float | None = None
    message: str = ""
    retry_after_s: float = 0.0


def stream_audio_seconds(fmt: str, data: bytes) -> float | None:
    """Seconds of a streamed body, where the client can tell without a codec: a streamed WAV (16-bit
    mono, its rate in the 44-byte header). None for the rest (the level then takes the server's count)."""
    if fmt == "wav" and len(data) >= 44 and data[:4] == b"RIFF":
        rate = int.from_bytes(data[24:28], "little")
        return (len(data) - 44) / (2 * rate) if rate else None
    return None


def speak(client: Client, index: int, payload: dict, stream: bool) -> Result:
    """One speech request, timed; never raises (an exception is a status-0 result)."""
    body = json.dumps({**payload, "seed": index}).encode()
    t0 = time.perf_counter()
    try:
        resp = client.send("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
        if resp.status != 200 or not stream:
            data = resp.read()
        else:
            parts, first = [], None
            while True:
                part = resp.read1(65536)
                if not part:
                    break
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(part)
            data = b"".join(parts)
        latency = time.perf_counter() - t0
        if resp.will_close:
            client.close()
    except Exception as e:  # a broken connection, a timeout: a failure, reported with its text
        client.close()
        return Result(index, 0, time.perf_counter() - t0, message=f"{type(e).__name__}: {e}")
    if resp.status != 200:
        retry = resp.headers.get("Retry-After")
        try:
            retry_s = float(retry) if retry else 1.0
        except ValueError:
            retry_s = 1.0
        return Result(index, resp.status, latency, message=error_message(data), retry_after_s=retry_s)
    if stream:
        return Result(index, 200, latency, ttfa_s=first, audio_s=stream_audio_seconds(payload["response_format"], data))
    header = resp.headers
    ttfa = header.get("X-TTFA-Seconds")
    audio = header.get("X-Audio-Seconds")
    return Result(index, 200, latency, ttfa_s=float(ttfa) if ttfa else None, audio_s=float(audio) if audio else None)


# --- sampling ---------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Reads /metrics every SAMPLE_EVERY_S seconds until stopped; samples are (seconds since start, dict)."""

    def __init__(self, client: Client):
        super().__init__(name="metrics-sampler", daemon=True)
        self.client, self.samples = client, []
        self.errors = 0
        self._halt = threading.Event()
        self.t0 = time.perf_counter()

    def sample(self) -> None:
        try:
            status, _, data = self.client.call("GET", "/metrics")
        except Exception:
            self.errors += 1
            return
        if status == 200:
            self.samples.append((time.perf_counter() - self.t0, parse_metrics(data.decode("utf-8", "replace"))))
        else:
            self.errors += 1

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_EVERY_S):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()  # the state after the level
        self.client.close()


# --- one level ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Level:
    """One level's report (every number the table shows, and more)."""

    clients: int
    sent: int = 0
    ok: int = 0
    rejected_429: int = 0
    failed: int = 0
    failures: dict = field(default_factory=dict)  # status -> {"count", "first_message"}
    wall_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    ttfa_p50_s: float | None = None
    ttfa_p95_s: float | None = None
    ttfa_source: str = ""
    audio_s_total: float = 0.0
    audio_source: str = "client"  # "client": from each answer; "server": the server's audio counter
    throughput: float = 0.0  # audio seconds per wall second
    requests_per_s: float = 0.0
    rss_start_mb: float | None = None
    rss_max_mb: float | None = None
    rss_end_mb: float | None = None
    rss_growth_second_half_mb: float | None = None
    max_queue_depth: float | None = None
    max_in_flight: float | None = None
    max_batch_rows: float | None = None
    metrics_samples: int = 0


def summarize_memory(level: Level, samples: list[tuple[float, dict]], wall_s: float) -> None:
    """RSS start/max/end, growth over the second half (last sample minus the one nearest the middle), and
    the peaks of the queue gauges, from the sampler's samples (the first is taken before the level)."""
    level.metrics_samples = len(samples)

    def series(key):
        return [(t, s[key]) for t, s in samples if key in s]

    rss = series("rss")
    if rss:
        level.rss_start_mb, level.rss_end_mb = rss[0][1] / MB, rss[-1][1] / MB
        level.rss_max_mb = max(v for _, v in rss) / MB
        t_mid = rss[0][0] + wall_s / 2
        mid = min(rss, key=lambda p: abs(p[0] - t_mid))
        level.rss_growth_second_half_mb = (rss[-1][1] - mid[1]) / MB
    for key, attr in (("queue", "max_queue_depth"), ("in_flight", "max_in_flight"),
                      ("batch_rows", "max_batch_rows")):
        values = [v for _, v in series(key)]
        if values:
            setattr(level, attr, max(values))


def run_level(url: str, api_key: str | None, timeout_s: float, clients: int, requests: int,
              duration_s: float | None, payload: dict, stream: bool) -> Level:
    """Run one level: `clients` closed-loop threads until `requests` are sent or `duration_s` passes."""
    level = Level(clients, ttfa_source="client: time to first body byte" if stream
                  else "server: X-TTFA-Seconds header")
    sampler = Sampler(Client(url, api_key, timeout_s))
    sampler.sample()  # before the level: the start of RSS, and the server's audio counter
    sampler.start()
    results: list[Result] = []
    lock = threading.Lock()
    issued = [0]  # requests sent so far: the next request's index and seed
    t0 = time.perf_counter()
    deadline = t0 + duration_s if duration_s else None

    def take() -> int | None:
        """The next request's index, or None once the level is over."""
        with lock:
            if deadline is not None and time.perf_counter() >= deadline:
                return None
            if requests > 0 and issued[0] >= requests:
                return None
            issued[0] += 1
            return issued[0] - 1

    def worker() -> None:
        client = Client(url, api_key, timeout_s)
        try:
            while (i := take()) is not None:
                r = speak(client, i, payload, stream)
                with lock:
                    results.append(r)
                if r.status == 429:
                    wait = r.retry_after_s
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.perf_counter()))
                    time.sleep(wait)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"client-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.wall_s = time.perf_counter() - t0
    sampler.stop()

    level.sent = len(results)
    ok = [r for r in results if r.status == 200]
    level.ok = len(ok)
    level.rejected_429 = sum(r.status == 429 for r in results)
    for r in sorted(results, key=lambda r: r.index):
        if r.status not in (200, 429):
            level.failed += 1
            entry = level.failures.setdefault(str(r.status or "no answer"), {"count": 0, "first_message": r.message})
            entry["count"] += 1
    latencies = [r.latency_s for r in ok]
    ttfas = [r.ttfa_s for r in ok if r.ttfa_s is not None]
    level.latency_p50_s, level.latency_p95_s = percentile(latencies, 50), percentile(latencies, 95)
    level.ttfa_p50_s, level.ttfa_p95_s = percentile(ttfas, 50), percentile(ttfas, 95)
    if all(r.audio_s is not None for r in ok):
        level.audio_s_total = sum(r.audio_s for r in ok)
    else:  # a streamed format the client cannot measure: the server's own count over the level
        counts = [s["audio_total"] for _, s in sampler.samples if "audio_total" in s]
        level.audio_source = "server"
        level.audio_s_total = counts[-1] - counts[0] if len(counts) >= 2 else 0.0
    if level.wall_s > 0:
        level.throughput = level.audio_s_total / level.wall_s
        level.requests_per_s = level.ok / level.wall_s
    summarize_memory(level, sampler.samples, level.wall_s)
    return level


# --- the self-contained server ------------------------------------------------------------------------


def serve_command() -> list[str]:
    """`indextts2-onnx` of this Python's environment (the console script next to sys.executable)."""
    script = Path(sys.executable).parent / "indextts2-onnx"
    if script.exists():
        return [str(script)]
    found = shutil.which("indextts2-onnx")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from indextts2_onnx.runtime.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`indextts2-onnx serve` as a child process on a free loopback port; a context manager that stops it."""

    def __init__(self, bundle: str, extra: list[str], api_key: str | None, ready_timeout_s: float):
        self.bundle, self.extra, self.api_key, self.ready_timeout_s = bundle, extra, api_key, ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="loadtest-")
        self.log_path = Path(self._dir.name) / "server.log"

    def __enter__(self) -> "Server":
        voices = Path(self._dir.name) / "voices"
        cmd = [*serve_command(), "serve", "--bundle", str(self.bundle), "--host", "127.0.0.1",
               "--port", str(self.port), "--voices", str(voices)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        cmd += self.extra
        print(f"starting: {' '.join(cmd)}", file=sys.stderr, flush=True)
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        client = Client(self.url, self.api_key, timeout_s=5.0)
        t0 = time.perf_counter()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise LoadTestError(f"the server exited with code {self.proc.returncode} before it was "
                                        f"ready:\n{self.log_tail()}")
                try:
                    status, _, _ = client.call("GET", "/ready")
                    if status == 200:
                        print(f"server ready after {time.perf_counter() - t0:.1f} s at {self.url}",
                              file=sys.stderr, flush=True)
                        return
                    if status in (401, 403):
                        raise LoadTestError(f"GET /ready: HTTP {status} (the API key?)")
                except (OSError, http.client.HTTPException):
                    pass
                if time.perf_counter() - t0 > self.ready_timeout_s:
                    raise LoadTestError(f"the server was not ready after {self.ready_timeout_s:g} s:\n"
                                        f"{self.log_tail()}")
                time.sleep(0.2)
        finally:
            client.close()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._dir.cleanup()


# --- report -------------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def pair(a: float | None, b: float | None, digits: int = 2) -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def markdown(levels: list[Level]) -> str:
    """One row per level."""
    head = ("| clients | ok | 429 | failed | latency p50 / p95 s | TTFA p50 / p95 s | audio s | audio s/s "
            "| req/s | RSS start / max / end MB | RSS growth 2nd half MB | max queue | max in flight "
            "| max batch rows |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for lv in levels:
        rss = f"{fmt(lv.rss_start_mb, 0)} / {fmt(lv.rss_max_mb, 0)} / {fmt(lv.rss_end_mb, 0)}"
        lines.append(f"| {lv.clients} | {lv.ok} | {lv.rejected_429} | {lv.failed} "
                     f"| {pair(lv.latency_p50_s, lv.latency_p95_s)} | {pair(lv.ttfa_p50_s, lv.ttfa_p95_s, 3)} "
                     f"| {fmt(lv.audio_s_total, 1)} | {fmt(lv.throughput)} | {fmt(lv.requests_per_s)} | {rss} "
                     f"| {fmt(lv.rss_growth_second_half_mb, 1)} | {fmt(lv.max_queue_depth, 0)} "
                     f"| {fmt(lv.max_in_flight, 0)} | {fmt(lv.max_batch_rows, 0)} |")
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected client counts like 1,2,4,8, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected client counts >= 1, got {text!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loadtest.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument("--bundle", help="start `indextts2-onnx serve --bundle BUNDLE` for the test, then stop it")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="an option for serve (with --bundle; repeatable), e.g. --server-arg=--workers=8")
    p.add_argument("--ready-timeout-s", type=float, default=300.0,
                   help="how long to wait for the started server's /ready (default 300)")
    p.add_argument("--clients", type=parse_levels, default=[4], metavar="N[,N...]",
                   help="concurrent clients; a comma list runs one level per count, in turn (default 4)")
    p.add_argument("--requests", type=int, default=20,
                   help="requests per level, 429s included (default 20; 0: until --duration-s)")
    p.add_argument("--duration-s", type=float, default=None,
                   help="stop sending after this many seconds per level (default: no limit)")
    voice = p.add_mutually_exclusive_group()
    voice.add_argument("--voice", help="a voice id the server has (default: register a synthetic voice)")
    voice.add_argument("--voice-audio", type=Path, metavar="WAV", help="register this recording as the voice")
    p.add_argument("--text", default=TEXT)
    p.add_argument("--max-codes", type=int, default=None, help="max_codes of each request (default: the server's)")
    p.add_argument("--min-codes", type=int, default=None,
                   help="min_codes of each request: with --max-codes, a fixed length (random weights rarely stop)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps of each request (default: the preset's)")
    p.add_argument("--preset", default=None, help="preset of each request (default: the server's)")
    p.add_argument("--stream", action="store_true",
                   help='stream_format "audio"; TTFA is then the client\'s time to the first byte')
    p.add_argument("--format", default="wav", help="response_format (default wav)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                   help=f"Bearer key (default ${API_KEY_ENV}); with --bundle the server is started with it")
    p.add_argument("--timeout-s", type=float, default=600.0, help="socket timeout per request (default 600)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the full report here")
    return p


def load_test(args: argparse.Namespace, url: str) -> tuple[list[Level], str]:
    """Register the voice (unless given) and run every level against `url`; (levels, voice id)."""
    admin = Client(url, args.api_key, args.timeout_s)
    try:
        if args.voice:
            voice = args.voice
        else:
            if args.voice_audio:
                audio, filename = args.voice_audio.read_bytes(), args.voice_audio.name
            else:
                audio, filename = synthetic_wav(), "synthetic.wav"
            voice = register_voice(admin, audio, filename, f"loadtest-{uuid.uuid4().hex[:8]}")
    finally:
        admin.close()
    payload = {"input": args.text, "voice": voice, "response_format": args.format}
    if args.stream:
        payload["stream_format"] = "audio"
    for key in ("max_codes", "min_codes", "steps", "preset"):
        if getattr(args, key) is not None:
            payload[key] = getattr(args, key)
    levels = []
    for n in args.clients:
        print(f"level: {n} client(s) ...", file=sys.stderr, flush=True)
        level = run_level(url, args.api_key, args.timeout_s, n, args.requests, args.duration_s, payload, args.stream)
        print(f"  {level.ok} ok, {level.rejected_429} x 429, {level.failed} failed in {level.wall_s:.1f} s",
              file=sys.stderr, flush=True)
        levels.append(level)
    return levels, voice


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests < 0 or (args.requests == 0 and not args.duration_s):
        print("error: --requests 0 needs --duration-s", file=sys.stderr)
        return 2
    if args.server_arg and not args.bundle:
        print("error: --server-arg needs --bundle", file=sys.stderr)
        return 2
    def terminated(signum, frame):  # `kill` of the tool: stop the server as on Ctrl-C
        raise KeyboardInterrupt()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if in_main else None
    try:
        if args.bundle:
            with Server(args.bundle, args.server_arg, args.api_key, args.ready_timeout_s) as server:
                levels, voice = load_test(args, server.url)
            url = server.url
        else:
            url = args.url
            levels, voice = load_test(args, url)
    except LoadTestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, http.client.HTTPException) as e:
        print(f"error: cannot talk to the server: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)

    table = markdown(levels)
    print(f"TTFA: {levels[0].ttfa_source}; audio seconds: "
          f"{'client (per answer)' if all(lv.audio_source == 'client' for lv in levels) else 'server counter'}")
    print(table, end="")
    failed = sum(lv.failed for lv in levels)
    for lv in levels:
        for status, f in lv.failures.items():
            print(f"clients={lv.clients}: {f['count']} x {status}: {f['first_message']}")
    if args.json:
        report = {"url": url, "bundle": args.bundle, "server_args": args.server_arg, "voice": voice,
                  "settings": {"requests": args.requests, "duration_s": args.duration_s, "text": args.text,
                               "max_codes": args.max_codes, "min_codes": args.min_codes, "steps": args.steps,
                               "preset": args.preset,
                               "stream": args.stream, "format": args.format},
                  "sample_every_s": SAMPLE_EVERY_S, "levels": [asdict(lv) for lv in levels], "failed": failed,
                  "markdown": table}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
