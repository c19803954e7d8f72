"""The threads ("lanes") that run a local encoder: queries first, ingestion on every idle
core, shared fairly between accounts, supervised.

A local encoder (torch or ONNX Runtime) already spreads one batch over its own intra-op
threads, but on short texts and on a shared machine two single-threaded calls on two cores
run side by side and go further than one two-threaded call. So there are `1 + query_lanes`
lanes, each running one single-threaded call at a time:
- the first lane runs queries first, then ingestion sub-batches: ingestion always makes
  progress, even under a flood of searches;
- the other lanes ("query lanes") run queries first too. When no query waits, and none has
  arrived for `borrow_after_quiet_seconds`, they also *borrow* ingestion sub-batches, but
  only from an interruptible encoder (ONNX Runtime: `RunOptions.terminate`): a query that
  finds no idle lane interrupts a borrowed sub-batch, which goes back to the front of its
  queue, and the lane serves the query at once. So a bulk ingestion uses every core, and a
  search still never waits behind ingestion (torch cannot be interrupted: its query lanes
  never borrow). While searches keep coming, ingestion keeps to the first lane: a borrowed
  sub-batch would only be interrupted again, its work lost, and the query lane stays free.
Queues:
- queries: a search waits for these. A free lane takes every waiting query (up to
  `max_query_batch` texts), lingers `query_wait_seconds` for more to arrive, and encodes
  them in one call: 16 concurrent searches cost one or two encoder calls, not 16. While
  another lane is idle it takes one query only and leaves the next to that lane: parallel
  before batched (LocalEmbedder splits a long query-priority call in parts for this).
- documents: ingestion sub-batches, one queue per account. Lanes serve the waiting account
  that has been served the fewest texts (start-time fair queueing: an account that
  becomes active starts at the least-served active account's count, so idle time earns no
  credit; ties go to the account served longest ago). A flood of one account's chunks therefore delays another account's small
  document by about one sub-batch per lane, not by the flood.
Supervision:
- every call has a deadline (`run_timeout_seconds`, per call, from when a lane starts it;
  queries also bound their wait): past it, its callers get `EncoderTimeout` (503), the run
  is interrupted if the encoder can be, and a lane that still does not come back is
  replaced by a new thread;
- a lane whose thread dies (any BaseException) fails its jobs with `EncoderFailed` (503)
  and is restarted; `stats()` reports lanes, restarts and timeouts for /health.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Priority = Literal["query", "document"]
# Returns one vector per text, in order, as lists of floats; the priority lets the encoder
# pick its settings (e.g. threads) per kind of call. An interruptible encoder also takes
# `control=RunControl` and raises `EncodeInterrupted` once it is interrupted.
EncodeFn = Callable[..., list[list[float]]]
# Queue of ingestion work nobody claimed for an account (tools, maintenance).
SYSTEM_ACCOUNT = ""
# A query lane borrows an ingestion sub-batch only once no query has arrived for this long:
# about one sub-batch's run (16 chunks of 200 tokens on one core: ~0.3-0.5 s measured).
# While searches keep coming, a borrowed sub-batch would be interrupted before it finished,
# its work thrown away, and the core it burnt taken from the searches.
BORROW_AFTER_QUIET_SECONDS = 0.5


class EncoderUnavailable(RuntimeError):
    """Base of the worker's own failures (the embedder maps them to 503)."""


class EncoderClosed(EncoderUnavailable):
    """The worker was closed before the job ran."""


class EncoderTimeout(EncoderUnavailable):
    """The job was not encoded within its deadline."""


class EncoderFailed(EncoderUnavailable):
    """The lane running the job died; the lane was restarted."""


class EncodeInterrupted(Exception):
    """Raised by an interruptible encoder whose run was interrupted (see RunControl)."""


class RunControl:
    """Lets the worker interrupt one encoder call from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self.interrupted = False

    def on_interrupt(self, hook: Callable[[], None]) -> None:
        """Run `hook` on interruption (at once if it already happened)."""
        with self._lock:
            if not self.interrupted:
                self._hooks.append(hook)
                return
        hook()

    def interrupt(self) -> None:
        with self._lock:
            if self.interrupted:
                return
            self.interrupted = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()


@dataclass(eq=False)
class _Job:
    texts: list[str]
    priority: Priority
    account: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    # The caller stopped waiting (timeout, cancellation): never requeue or run it again.
    abandoned: bool = False


@dataclass(eq=False)
class _Lane:
    index: int
    borrows: bool  # a query lane that may borrow (interruptible) ingestion sub-batches
    thread: threading.Thread | None = None
    jobs: list[_Job] = field(default_factory=list)
    priority: Priority | None = None
    control: RunControl | None = None
    started: float = 0.0
    # Set when the lane's run went past its deadline and was given up: the thread exits
    # when (if) the call returns, a new thread serves the lane meanwhile.
    retired: bool = False

    @property
    def primary(self) -> bool:
        return self.index == 0


def _resolve(future: asyncio.Future[list[list[float]]], result: list[list[float]] | BaseException) -> None:
    if future.done():  # the caller was cancelled or timed out meanwhile
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
        interruptible: bool = False,
        borrow_after_quiet_seconds: float = BORROW_AFTER_QUIET_SECONDS,
        run_timeout_seconds: float = 120.0,
        on_batch: Callable[[Priority, int], None] | None = None,
        name: str = "encoder",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._encode = encode
        self.borrow_after_quiet_seconds = max(0.0, borrow_after_quiet_seconds)
        self._clock = clock
        self._last_query_at = -math.inf
        self.max_query_batch = max(1, max_query_batch)
        self.query_wait_seconds = max(0.0, query_wait_seconds)
        self.interruptible = interruptible
        self.run_timeout_seconds = run_timeout_seconds
        self._on_batch = on_batch
        self._name = name
        self._ready = threading.Condition()
        self._queries: deque[_Job] = deque()
        self._documents: dict[str, deque[_Job]] = {}
        # Texts served per account with work waiting or running (fair queueing).
        self._served: dict[str, int] = {}
        self._turns: dict[str, int] = {}
        self._turn = 0
        self._closed = False
        self.restarts = 0
        self.timeouts = 0
        self.interruptions = 0
        self._lanes = [_Lane(0, borrows=False)]
        self._lanes += [_Lane(i, borrows=interruptible) for i in range(1, max(0, query_lanes) + 1)]
        for lane in self._lanes:
            self._start(lane)
        self._supervisor = threading.Thread(target=self._supervise, name=f"{name}-supervisor", daemon=True)
        self._supervisor.start()

    # --- callers (event loop) ------------------------------------------------------------
    async def encode(self, texts: list[str], priority: Priority, *, account: str = SYSTEM_ACCOUNT) -> list[list[float]]:
        """Vectors for `texts`, in order, computed on a lane. Raises EncoderUnavailable."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), priority, account, loop, loop.create_future())
        with self._ready:
            if self._closed:
                raise EncoderClosed("the encoder is shut down")
            if priority == "query":
                self._last_query_at = self._clock()
                self._queries.append(job)
                self._preempt_for_query()
            else:
                self._enqueue_document(job, front=False)
            # Every lane: a lane woken for work it does not take would leave it waiting.
            self._ready.notify_all()
        # Queries bound their wait too (behind at most one call per lane); ingestion
        # sub-batches may queue behind other accounts' work, each call being bounded.
        wait = self.run_timeout_seconds * 2 if priority == "query" else None
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(job.future)
        except TimeoutError:
            self._abandon(job)
            raise EncoderTimeout(f"no vectors within {wait:.0f} s") from None
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    def close(self) -> None:
        """Stop: jobs still queued fail with EncoderClosed, runs in progress are interrupted
        (when the encoder allows it) and their callers get EncoderClosed too."""
        with self._ready:
            self._closed = True
            pending = [*self._queries, *(job for queue in self._documents.values() for job in queue)]
            self._queries.clear()
            self._documents.clear()
            running = [lane for lane in self._lanes if lane.jobs]
            self._ready.notify_all()
        for job in pending:
            self._deliver(job, EncoderClosed("the encoder was shut down"))
        for lane in running:
            if lane.control is not None:
                lane.control.interrupt()

    @property
    def lane_count(self) -> int:
        return len(self._lanes)

    def queued(self, priority: Priority) -> int:
        """Jobs of `priority` waiting for a lane (not counting those running)."""
        with self._ready:
            if priority == "query":
                return len(self._queries)
            return sum(len(queue) for queue in self._documents.values())

    def stats(self) -> dict[str, Any]:
        """For /health: lanes alive and busy, the oldest run, restarts and timeouts."""
        now = time.monotonic()
        with self._ready:
            alive = sum(1 for lane in self._lanes if lane.thread is not None and lane.thread.is_alive())
            busy = [now - lane.started for lane in self._lanes if lane.jobs]
            return {
                "lanes": len(self._lanes),
                "lanes_alive": alive,
                "lanes_busy": len(busy),
                "oldest_run_seconds": round(max(busy, default=0.0), 3),
                "queued_queries": len(self._queries),
                "queued_documents": sum(len(queue) for queue in self._documents.values()),
                "restarts": self.restarts,
                "timeouts": self.timeouts,
                "healthy": not self._closed and alive == len(self._lanes)
                and max(busy, default=0.0) <= self.run_timeout_seconds,
            }

    # --- queues (under self._ready) ------------------------------------------------------
    def _enqueue_document(self, job: _Job, *, front: bool) -> None:
        queue = self._documents.get(job.account)
        if queue is None:
            queue = self._documents[job.account] = deque()
            if job.account not in self._served:
                # Joining: start level with the least-served active account (no hoarded credit).
                self._served[job.account] = min(self._served.values(), default=0)
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)

    def _take_document(self) -> _Job | None:
        while self._documents:
            # Ties go to the account served longest ago (a newcomer first): round robin.
            account = min(self._documents, key=lambda name: (self._served.get(name, 0), self._turns.get(name, -1)))
            queue = self._documents[account]
            job = queue.popleft()
            if not queue:
                del self._documents[account]
            if job.abandoned:
                self._forget_if_idle(account)
                continue
            self._served[account] = self._served.get(account, 0) + len(job.texts)
            self._turn += 1
            self._turns[account] = self._turn
            return job
        return None

    def _forget_if_idle(self, account: str) -> None:
        if account in self._documents:
            return
        if any(job.account == account and job.priority == "document" for lane in self._lanes for job in lane.jobs):
            return
        self._served.pop(account, None)
        self._turns.pop(account, None)

    def _preempt_for_query(self) -> None:
        """A query that finds no idle lane interrupts one borrowed ingestion sub-batch."""
        if any(not lane.jobs and not lane.retired for lane in self._lanes):
            return
        for lane in self._lanes:
            if lane.borrows and lane.priority == "document" and lane.control is not None and not lane.control.interrupted:
                self.interruptions += 1
                lane.control.interrupt()
                return

    def _abandon(self, job: _Job) -> None:
        with self._ready:
            job.abandoned = True
            if job.priority == "query":
                try:
                    self._queries.remove(job)
                except ValueError:
                    pass
            else:
                queue = self._documents.get(job.account)
                if queue is not None and job in queue:
                    queue.remove(job)
                    if not queue:
                        del self._documents[job.account]
                        self._forget_if_idle(job.account)
            for lane in self._lanes:
                # Nobody waits for this run any more: stop it if it can be stopped.
                if job in lane.jobs and all(j.abandoned for j in lane.jobs) and lane.control is not None:
                    lane.control.interrupt()

    # --- lanes (worker threads) ----------------------------------------------------------
    def _start(self, lane: _Lane) -> None:
        suffix = "" if lane.primary else f"-query-{lane.index}"
        lane.retired = False
        lane.thread = threading.Thread(target=self._lane_main, args=(lane, ), name=f"{self._name}{suffix}",
                                       daemon=True)
        lane.thread.start()

    def _lane_main(self, lane: _Lane) -> None:
        me = threading.current_thread()
        try:
            self._run(lane, me)
        except BaseException as exc:  # noqa: BLE001 - a lane must never die silently
            log.error("encoder lane %s died: %s", me.name, type(exc).__name__)
            with self._ready:
                if lane.thread is not me:
                    return
                jobs, lane.jobs, lane.priority, lane.control = lane.jobs, [], None, None
                lane.thread = None  # the supervisor restarts it
                self._ready.notify_all()
            for job in jobs:
                self._deliver(job, EncoderFailed("the encoder lane failed; it was restarted"))

    def _run(self, lane: _Lane, me: threading.Thread) -> None:
        while True:
            with self._ready:
                taken = self._next_jobs(lane, me)
                if taken is None:
                    return
                priority, jobs = taken
                control = RunControl() if self.interruptible else None
                lane.jobs, lane.priority, lane.control, lane.started = jobs, priority, control, time.monotonic()
            texts = [text for job in jobs for text in job.texts]
            if self._on_batch is not None:
                self._on_batch(priority, len(texts))
            result: list[list[float]] | BaseException
            try:
                if control is not None:
                    result = self._encode(texts, priority, control=control)
                else:
                    result = self._encode(texts, priority)
                if len(result) != len(texts):
                    raise RuntimeError(f"the encoder returned {len(result)} vectors for {len(texts)} texts")
            except EncodeInterrupted as exc:
                result = exc
            except Exception as exc:  # delivered to every caller of this batch
                result = exc
            with self._ready:
                if lane.thread is not me:  # retired past its deadline: callers were answered
                    return
                lane.jobs, lane.priority, lane.control = [], None, None
                if isinstance(result, EncodeInterrupted):
                    if self._closed:
                        result = EncoderClosed("the encoder was shut down")
                    else:
                        # Preempted by a query (or abandoned): back to the front of its queue.
                        for job in reversed(jobs):
                            if not job.abandoned:
                                self._served[job.account] = self._served.get(job.account, 0) - len(job.texts)
                                self._enqueue_document(job, front=True)
                        for job in jobs:
                            if job.abandoned:
                                self._forget_if_idle(job.account)
                        self._ready.notify_all()
                        continue
                for job in jobs:
                    if job.priority == "document":
                        self._forget_if_idle(job.account)
            if isinstance(result, BaseException):
                for job in jobs:
                    self._deliver(job, result)
                continue
            start = 0
            for job in jobs:
                self._deliver(job, result[start : start + len(job.texts)])
                start += len(job.texts)

    def _next_jobs(self, lane: _Lane, me: threading.Thread) -> tuple[Priority, list[_Job]] | None:
        while True:
            if self._closed or lane.thread is not me:
                return None
            if self._queries:
                break
            quiet_in = None  # seconds until this query lane may borrow the waiting ingestion
            if self._documents and lane.borrows:
                quiet_in = self._last_query_at + self.borrow_after_quiet_seconds - self._clock()
            if self._documents and (lane.primary or (quiet_in is not None and quiet_in <= 0)):
                job = self._take_document()
                if job is not None:
                    return "document", [job]
                continue
            self._ready.wait(quiet_in)  # woken by new work, or when the quiet spell is over
        if self._another_lane_idle(lane):
            # Parallel before batched: the next query goes to the idle lane, which is woken
            # for it (an extractive answer's sentences, split in parts, encode side by side).
            jobs = self._take_queries([], 0, limit=1)
            return ("query", jobs) if jobs else self._next_jobs(lane, me)
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
        if not jobs:  # every query lingered over was abandoned meanwhile
            return self._next_jobs(lane, me)
        return "query", jobs

    def _another_lane_idle(self, lane: _Lane) -> bool:
        return any(other is not lane and not other.jobs and not other.retired and other.thread is not None
                   for other in self._lanes)

    def _take_queries(self, jobs: list[_Job], size: int, limit: int | None = None) -> list[_Job]:
        """Move waiting queries into `jobs` while they fit (at least one, when any waits), at
        most `limit` jobs."""
        while self._queries and (not jobs or size + len(self._queries[0].texts) <= self.max_query_batch) and (
            limit is None or len(jobs) < limit
        ):
            job = self._queries.popleft()
            if job.abandoned:
                continue
            jobs.append(job)
            size += len(job.texts)
        return jobs

    # --- supervisor ----------------------------------------------------------------------
    def _supervise(self) -> None:
        interval = max(0.01, min(1.0, self.run_timeout_seconds / 4))
        while True:
            overdue: list[_Job] = []
            with self._ready:
                if self._closed:
                    return
                now = time.monotonic()
                for lane in self._lanes:
                    if lane.thread is None:  # died: its jobs were failed already
                        self.restarts += 1
                        log.warning("restarting encoder lane %d", lane.index)
                        self._start(lane)
                    elif lane.jobs and now - lane.started > self.run_timeout_seconds:
                        self.timeouts += 1
                        log.error("encoder lane %d: call over its %.0f s deadline; lane replaced",
                                  lane.index, self.run_timeout_seconds)
                        overdue += lane.jobs
                        if lane.control is not None:
                            lane.control.interrupt()
                        # The stuck thread exits whenever its call returns; a new one serves now.
                        lane.jobs, lane.priority, lane.control = [], None, None
                        lane.retired = True
                        self.restarts += 1
                        self._start(lane)
                self._ready.wait(interval)
            for job in overdue:
                self._deliver(job, EncoderTimeout(f"the encoder call exceeded {self.run_timeout_seconds:.0f} s"))

    @staticmethod
    def _deliver(job: _Job, result: list[list[float]] | BaseException) -> None:
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, result)
        except RuntimeError:  # the caller's event loop is closed: nobody is waiting
            pass
