"""The server's Prometheus metrics (`GET /metrics`), on prometheus-client.

Each app gets its own registry (two servers in one process, as in tests, keep their own counts), with
the process collector, so `process_resident_memory_bytes` and CPU seconds come along (the load test
reads memory from there).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..results import Metrics

# Stage timings reported per request: results.Metrics field -> stage label
STAGE_FIELDS = {"prompt_s": "prompt", "conditioning_s": "conditioning", "decode_s": "gpt_decode",
                "latent_s": "gpt_latent", "mel_s": "mel", "vocoder_s": "vocoder"}
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Counters, gauges and histograms of one server."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("indextts2_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.queue_depth = Gauge("indextts2_queue_depth", "speech requests admitted, waiting for a worker",
                                 registry=r)
        self.in_flight = Gauge("indextts2_in_flight", "speech requests being synthesized", registry=r)
        self.batch_rows = Gauge("indextts2_batch_rows", "GPT decoder rows in use by the batch", registry=r)
        self.rejected = Counter("indextts2_rejected", "speech requests refused with 429 (queue full)", registry=r)
        self.cancelled = Counter("indextts2_cancelled", "speech requests cancelled by a client disconnect",
                                 registry=r)
        self.ttfa = Histogram("indextts2_ttfa_seconds", "time from admission (queue wait included) to the first audio",
                              buckets=SECONDS_BUCKETS, registry=r)
        self.rtf = Histogram("indextts2_rtf", "real-time factor (synthesis seconds / audio seconds)",
                             buckets=RTF_BUCKETS, registry=r)
        self.stage = Histogram("indextts2_stage_seconds", "seconds per pipeline stage per request", ["stage"],
                               buckets=SECONDS_BUCKETS, registry=r)
        self.codes = Counter("indextts2_codes_generated", "semantic codes generated", registry=r)
        self.audio = Counter("indextts2_audio_seconds", "seconds of audio produced", registry=r)

    def progress(self, before: Metrics | None, now: Metrics) -> None:
        """Count the codes and audio a call made since its previous chunk (so long and cancelled
        requests show up as they go)."""
        self.codes.inc(now.codes - (before.codes if before else 0))
        self.audio.inc(now.audio_s - (before.audio_s if before else 0.0))

    def finished(self, m: Metrics) -> None:
        """Record a finished synthesis call's metrics (its last chunk's)."""
        self.ttfa.observe(m.ttfa_s)
        if m.audio_s > 0:
            self.rtf.observe(m.rtf)
        for name, stage in STAGE_FIELDS.items():
            self.stage.labels(stage).observe(getattr(m, name))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
