"""`Engine`: what a server process holds around one `IndexTTS2`, and how a request gets its audio.

    admission -> a worker slot -> IndexTTS2.stream in the worker pool, one chunk per pool task
                                   (its GPT decode batched with the others by the DecodeScheduler)

* Admission: at most `workers` requests synthesize at once and `max_queue` more wait for a slot; a
  request beyond that is refused at once (`QueueFull` -> 429 with Retry-After), before any work.
* No lock around the pipeline: ONNX Runtime sessions run concurrently, so every stage of different
  requests overlaps; only the GPT decode is shared, on purpose, in one batch.
* Cancelling (the client went away) stops the request's decoding at the next step and its audio work
  after the chunk in progress; its slot is freed once that chunk's task has returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import AsyncIterator, Iterator

import numpy as np

from ..audio import synthetic_voice
from ..batched import BatchOptions
from ..errors import BundleError, IndexTTS2Error
from ..options import SynthesisOptions
from ..pipeline import IndexTTS2
from ..presets import load_preset, preset_names
from ..results import AudioChunk
from ..speaker import Speaker
from .config import ServerConfig
from .metrics import ServerMetrics
from .scheduler import Cancelled, DecodeScheduler, Ticket

_LOG = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every worker is busy and the queue holds max_queue requests."""


@dataclass(frozen=True)
class Job:
    """One speech request, as the engine runs it."""

    text: str
    speaker: Speaker
    options: SynthesisOptions  # resolved; chunked=True for a streamed response
    tokens: int = 0  # BPE tokens of the text (the usage a streamed response reports)


def batch_rows(config: ServerConfig) -> int:
    """Decoder rows for the batch: every worker decoding at once with the widest preset's beams."""
    return config.workers * max(load_preset(name).num_beams for name in preset_names())


def cancellable(runs: Iterator[np.ndarray], ticket: Ticket) -> Iterator[np.ndarray]:
    """`runs` that stops with Cancelled at the next run once `ticket` is cancelled (local decoding)."""
    for run in runs:
        if ticket.cancelled.is_set():
            raise Cancelled()
        yield run


class Engine:
    """The model, the decode scheduler, the worker pool, admission and metrics of one server process."""

    def __init__(self, tts: IndexTTS2, config: ServerConfig, metrics: ServerMetrics):
        self.tts, self.config, self.metrics = tts, config, metrics
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="synth")
        self.scheduler: DecodeScheduler | None = None
        if config.batch:
            try:
                self.scheduler = DecodeScheduler.of(tts, BatchOptions(max_rows=batch_rows(config)))
            except BundleError as e:
                _LOG.warning("no batched decoding (%s); each request decodes on its worker", e.message)
        metrics.batch_rows.set_function(lambda: self.scheduler.rows_in_use if self.scheduler else 0)
        self._admitted = 0  # waiting + in flight; touched only on the event loop
        self._slots: asyncio.Semaphore | None = None
        self.ready = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One short synthesis through every graph (first-run allocations, kernel choice), then ready.
        Random-weight bundles may fail to produce codes: that is logged, and the server is ready anyway."""
        sr = self.tts.manifest.acoustic.sample_rate
        try:
            voice = self.tts.prepare_speaker((synthetic_voice(3.0, sr), sr))
            lang = None if self.tts.family.default_lang else "en"  # 2.5 needs one; warm-up text is English
            options = SynthesisOptions(preset="fast", max_codes=8, min_codes=8, steps=2, seed=0, lang=lang)
            self.tts.synthesize("Warm up.", voice, options, code_source=self._source(Ticket()))
        except IndexTTS2Error as e:
            _LOG.warning("warm-up: %s", e)
        self.ready.set()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- admission ------------------------------------------------------------------------------

    def _source(self, ticket: Ticket):
        if self.scheduler is not None:
            return self.scheduler.source(ticket)
        return lambda request: cancellable(self.tts.code_runs(request), ticket)

    def cancel(self, ticket: Ticket) -> None:
        ticket.cancelled.set()
        if self.scheduler is not None:
            self.scheduler.cancel(ticket)

    def admit(self) -> None:
        """Take a place in the queue (QueueFull when there is none); pair with `run`, which frees it."""
        if self._admitted >= self.config.workers + self.config.max_queue:
            self.metrics.rejected.inc()
            raise QueueFull()
        self._admitted += 1
        self.metrics.queue_depth.inc()

    async def run(self, job: Job, ticket: Ticket) -> AsyncIterator[AudioChunk]:
        """The admitted job's audio chunks, each computed in the worker pool once the previous one was
        taken (back-pressure: a slow reader slows its own request only). Closing the iterator early
        (the client went away) cancels the job. Errors are the pipeline's (InputError, GenerationError).
        The chunks' metrics count from admission: `ttfa_s` and `total_s` include the wait in the queue
        (what the client waits), the stage seconds are the pipeline's."""
        ticket.started = True
        admitted = time.perf_counter()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.workers)
        loop = asyncio.get_running_loop()
        waiting = True
        future: Future | None = None
        gen = None
        done = failed = False
        try:
            await self._slots.acquire()
            queued = time.perf_counter() - admitted
            waiting = False
            if ticket.cancelled.is_set():  # its client went away while it waited: no work to start
                raise Cancelled()
            self.metrics.queue_depth.dec()
            self.metrics.in_flight.inc()
            source = self._source(ticket)
            future = self.pool.submit(lambda: self.tts.stream(job.text, job.speaker, job.options, code_source=source))
            gen = await asyncio.wrap_future(future)
            previous = None
            while not done:
                future = self.pool.submit(next, gen, None)
                chunk = await asyncio.wrap_future(future)
                if chunk is None:
                    break
                m = chunk.metrics
                chunk = replace(chunk, metrics=replace(m, ttfa_s=m.ttfa_s + queued, total_s=m.total_s + queued))
                self.metrics.progress(previous and previous.metrics, chunk.metrics)
                previous = chunk
                if chunk.final:  # the job is complete once its final chunk is out
                    done = True
                    self.metrics.finished(chunk.metrics)
                yield chunk
        except Cancelled:
            raise
        except Exception:
            failed = True
            raise
        finally:
            if waiting:  # gone while waiting for a slot: only its queue place to give back
                self.leave_queue()
            else:
                if not done:  # stopped early: a disconnect (counted), or a failure
                    self.cancel(ticket)
                    if not failed:
                        self.metrics.cancelled.inc()
                self._finish(loop, future, gen)

    def _finish(self, loop: asyncio.AbstractEventLoop, future: Future | None, gen) -> None:
        """Once the job's last pool task has returned: close its generator (in the pool: it may still
        hold ONNX Runtime work) and free its slot and queue place."""

        def release() -> None:
            self.metrics.in_flight.dec()
            self._admitted -= 1
            self._slots.release()

        def after(_=None) -> None:
            if gen is not None:
                try:
                    gen.close()
                except (Cancelled, IndexTTS2Error, ValueError):
                    pass
            loop.call_soon_threadsafe(release)

        if future is None:
            release()
        else:  # called at once when the task is done already
            future.add_done_callback(lambda _: self.pool.submit(after))

    def leave_queue(self) -> None:
        """Give back a place taken by `admit` when the job never ran (a bad request found later)."""
        self._admitted -= 1
        self.metrics.queue_depth.dec()
