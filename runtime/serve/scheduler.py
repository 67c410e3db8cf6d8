"""`DecodeScheduler`: continuous batching of the GPT decode loop for a server.

Each request's synthesis runs in its own worker thread (`IndexTTS2.stream`), but the GPT decode, the
stage that reads the decoder's weights once per code, is handed to one scheduler thread that owns a
`BatchedGenerator`: every request decoding at that moment advances with one decoder call per step.

    scheduler = DecodeScheduler(tts, BatchOptions(max_rows=12))
    tts.stream(text, voice, options, code_source=scheduler.source(ticket))   # in a worker thread
    scheduler.cancel(ticket)                                                 # e.g. the client went away

A worker's `source` is a `pipeline.CodeSource`: it queues the CodeRequest with the scheduler and yields
the runs of final codes the scheduler sends back, which are the codes decoding it alone gives (the
batched generator's promise). Requests join between steps as soon as their beams fit in free rows, in
arrival order; one that can never fit (more beams than rows, or more positions than a row holds) fails
alone. A failed step fails the requests in flight, not the scheduler.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..batched import BatchedGenerator, BatchOptions, CodeRequest
from ..errors import GenerationError, IndexTTS2Error

_LOG = logging.getLogger(__name__)


class Cancelled(Exception):
    """The request was cancelled (its client went away) while its codes were being decoded."""


@dataclass
class Ticket:
    """One server request's claim on the scheduler: every segment it decodes goes under it, and
    cancelling it stops the one in flight and refuses later ones."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # the engine began running the request (it then frees its queue place itself)


@dataclass
class _Waiting:
    request: CodeRequest
    ticket: Ticket
    outbox: queue.Queue  # np.ndarray runs, then _DONE or an exception


_DONE = object()


class DecodeScheduler:
    """One thread decoding every request's codes in one batch (see the module docstring)."""

    def __init__(self, generator: BatchedGenerator):
        self._gen = generator
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[_Waiting] = []  # arrived, waiting for rows
        self._active: dict[int, _Waiting] = {}  # handle -> request in the batch
        self._rows_in_use = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="decode-scheduler", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, tts, options: BatchOptions) -> DecodeScheduler:
        """A scheduler over `tts`'s decoder (BundleError for a bundle without the shared-buffer decoder)."""
        return cls(tts.batched_generator(options))

    @property
    def rows_in_use(self) -> int:
        """Decoder rows the requests in flight hold (the batch size of the last step)."""
        return self._rows_in_use

    @property
    def max_rows(self) -> int:
        return self._gen.options.max_rows

    def source(self, ticket: Ticket):
        """The `code_source` for one server request's `IndexTTS2.stream` / `synthesize` call."""
        return lambda request: self.runs(request, ticket)

    def runs(self, request: CodeRequest, ticket: Ticket) -> Iterator[np.ndarray]:
        """Queue `request` and yield its runs of final codes as the batch decides them. Raises the
        request's error (GenerationError), or Cancelled once `ticket` is cancelled."""
        if ticket.cancelled.is_set():
            raise Cancelled()
        outbox: queue.Queue = queue.Queue()
        self._inbox.put(("add", _Waiting(request, ticket, outbox)))
        finished = False
        try:
            while True:
                item = outbox.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:  # the consumer stopped early: free the rows
                self._inbox.put(("drop", outbox))

    def cancel(self, ticket: Ticket) -> None:
        """Stop `ticket`'s decoding now (its worker gets Cancelled) and refuse its later segments."""
        ticket.cancelled.set()
        self._inbox.put(("cancel", ticket))

    def close(self) -> None:
        """Stop the thread; requests still in flight get Cancelled."""
        self._stop.set()
        self._inbox.put(("stop", None))
        self._thread.join(timeout=10)

    # --- the scheduler thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._take_messages(block=not self._active)
            self._admit()
            if self._active:
                self._step()
        for w in [*self._pending, *self._active.values()]:
            w.outbox.put(Cancelled())

    def _take_messages(self, block: bool) -> None:
        """Apply every queued message (waiting for one when the batch is idle)."""
        while True:
            try:
                kind, value = self._inbox.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            if kind == "add":
                self._pending.append(value)
            elif kind == "cancel":
                self._remove(lambda w: w.ticket is value, Cancelled)
            elif kind == "drop":
                self._remove(lambda w: w.outbox is value, None)
            elif kind == "stop":
                return

    def _remove(self, match, error) -> None:
        """Drop the matching requests, pending or in the batch, telling their workers `error()`."""
        for w in [w for w in self._pending if match(w)]:
            self._pending.remove(w)
            if error is not None:
                w.outbox.put(error())
        for handle, w in [(h, w) for h, w in self._active.items() if match(w)]:
            self._gen.cancel(handle)
            del self._active[handle]
            if error is not None:
                w.outbox.put(error())
        self._rows_in_use = self._gen.rows_in_use

    def _admit(self) -> None:
        """Add waiting requests, oldest first, while their beams fit in the free rows."""
        while self._pending:
            w = self._pending[0]
            if w.ticket.cancelled.is_set():
                self._pending.pop(0)
                w.outbox.put(Cancelled())
                continue
            beams = w.request.options.num_beams
            if beams > self._gen.free_rows and (self._active or beams <= self._gen.options.max_rows):
                return  # wait for rows
            self._pending.pop(0)
            try:
                self._active[self._gen.add(w.request)] = w  # prefill: one decoder call
            except IndexTTS2Error as e:  # can never fit: that request fails alone
                w.outbox.put(e)
            except Exception as e:  # an ONNX Runtime failure in the prefill
                _LOG.exception("prefill failed")
                w.outbox.put(GenerationError(f"gpt prefill failed: {type(e).__name__}: {e}"))
        self._rows_in_use = self._gen.rows_in_use

    def _step(self) -> None:
        """One decoder call for the batch; each request's new codes, error or end to its worker."""
        try:
            updates = self._gen.step()
        except Exception as e:  # an ONNX Runtime failure: fail the batch, keep serving
            _LOG.exception("decode step failed")
            for handle, w in list(self._active.items()):
                try:
                    self._gen.cancel(handle)
                except IndexTTS2Error:
                    pass
                w.outbox.put(GenerationError(f"gpt decode step failed: {type(e).__name__}: {e}"))
            self._active.clear()
            self._rows_in_use = self._gen.rows_in_use
            return
        for handle, u in updates.items():
            w = self._active[handle]
            if u.codes.size:
                w.outbox.put(u.codes)
            if u.done:
                del self._active[handle]
                w.outbox.put(u.error if u.error is not None else _DONE)
        self._rows_in_use = self._gen.rows_in_use
