"""The threads that run a local encoder: queries first, micro-batched together.

A local encoder (torch or ONNX Runtime) already spreads one batch over its own intra-op
threads, and two such batches at once only make both slower; but two single-threaded
calls on two cores run side by side without waiting on each other. So:
- one worker thread (the first lane) runs every ingestion sub-batch, and queries too;
- `query_lanes` more threads run queries only: a search never waits behind an ingestion
  sub-batch in progress, and concurrent searches use a second core. Keep the encoder's
  intra-op threads at 1 per call when there are several lanes (Settings). Measured at
  100k chunks over HTTP (bench/search_throughput.py, shared 2-core machine): one client's
  search p95 during a bulk ingestion 274 ms with a query lane, 6.4 s without.
Two queues:
- queries: a search waits for these. A free lane takes every waiting query (up to
  `max_query_batch` texts), lingers `query_wait_seconds` for more to arrive, and encodes
  them in one call: 16 concurrent searches cost one or two encoder calls, not 16.
- documents: ingestion sub-batches, taken by the first lane only, and only when no query
  is waiting, so a query waits behind at most the one sub-batch being encoded even
  without query lanes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Priority = Literal["query", "document"]
# Returns one vector per text, in order, as lists of floats; the priority lets the encoder
# pick its settings (e.g. threads) per kind of call.
EncodeFn = Callable[[list[str], Priority], list[list[float]]]


class EncoderClosed(RuntimeError):
    """The worker was closed before the job ran."""


@dataclass
class _Job:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]


def _resolve(future: asyncio.Future[list[list[float]]], result: list[list[float]] | BaseException) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class EncoderWorker:
    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_query_batch: int = 32,
        query_wait_seconds: float = 0.002,
        query_lanes: int = 0,
        on_batch: Callable[[Priority, int], None] | None = None,
        name: str = "encoder",
    ) -> None:
        self._encode = encode
        self.max_query_batch = max(1, max_query_batch)
        self.query_wait_seconds = max(0.0, query_wait_seconds)
        self._on_batch = on_batch
        self._ready = threading.Condition()
        self._queries: deque[_Job] = deque()
        self._documents: deque[_Job] = deque()
        self._closed = False
        self._threads = [threading.Thread(target=self._run, args=(True,), name=name, daemon=True)]
        self._threads += [
            threading.Thread(target=self._run, args=(False,), name=f"{name}-query-{lane}", daemon=True)
            for lane in range(1, max(0, query_lanes) + 1)
        ]
        for thread in self._threads:
            thread.start()

    async def encode(self, texts: list[str], priority: Priority) -> list[list[float]]:
        """Vectors for `texts`, in order, computed on the worker thread."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), loop, loop.create_future())
        with self._ready:
            if self._closed:
                raise EncoderClosed("the encoder is shut down")
            (self._queries if priority == "query" else self._documents).append(job)
            # Every lane: a query-only lane woken for a document would leave it waiting.
            self._ready.notify_all()
        return await job.future

    def close(self) -> None:
        """Stop after the batch in progress; jobs still queued fail with EncoderClosed."""
        with self._ready:
            self._closed = True
            pending = [*self._queries, *self._documents]
            self._queries.clear()
            self._documents.clear()
            self._ready.notify_all()
        for job in pending:
            self._deliver(job, EncoderClosed("the encoder was shut down"))

    # --- worker thread -------------------------------------------------------------------
    def _run(self, takes_documents: bool) -> None:
        while True:
            taken = self._next_jobs(takes_documents)
            if taken is None:
                return
            priority, jobs = taken
            texts = [text for job in jobs for text in job.texts]
            if self._on_batch is not None:
                self._on_batch(priority, len(texts))
            try:
                vectors = self._encode(texts, priority)
                if len(vectors) != len(texts):
                    raise RuntimeError(f"the encoder returned {len(vectors)} vectors for {len(texts)} texts")
            except Exception as exc:  # delivered to every caller of this batch
                for job in jobs:
                    self._deliver(job, exc)
                continue
            start = 0
            for job in jobs:
                self._deliver(job, vectors[start : start + len(job.texts)])
                start += len(job.texts)

    def queued(self, priority: Priority) -> int:
        """Jobs of `priority` waiting for the worker (not counting the one it runs)."""
        with self._ready:
            return len(self._queries if priority == "query" else self._documents)

    def _next_jobs(self, takes_documents: bool) -> tuple[Priority, list[_Job]] | None:
        with self._ready:
            while not (self._queries or (takes_documents and self._documents) or self._closed):
                self._ready.wait()
            if self._closed:
                return None
            if not self._queries:
                return "document", [self._documents.popleft()]
            jobs = self._take_queries([], 0)
            size = sum(len(job.texts) for job in jobs)
            deadline = time.monotonic() + self.query_wait_seconds
            # Linger briefly: searches arriving within a few milliseconds share the call.
            while size < self.max_query_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not self._queries:
                    self._ready.wait(remaining)
                    continue
                taken = len(jobs)
                jobs = self._take_queries(jobs, size)
                if len(jobs) == taken:  # the next query does not fit: it starts the next batch
                    break
                size = sum(len(job.texts) for job in jobs)
            return "query", jobs

    def _take_queries(self, jobs: list[_Job], size: int) -> list[_Job]:
        """Move waiting queries into `jobs` while they fit (always at least one job)."""
        while self._queries and (not jobs or size + len(self._queries[0].texts) <= self.max_query_batch):
            job = self._queries.popleft()
            jobs.append(job)
            size += len(job.texts)
        return jobs

    @staticmethod
    def _deliver(job: _Job, result: list[list[float]] | BaseException) -> None:
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, result)
        except RuntimeError:  # the caller's event loop is closed: nobody is waiting
            pass
