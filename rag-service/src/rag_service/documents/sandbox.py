"""The extraction sandbox: every uploaded file is read in a worker process with limits.

Reading untrusted PDFs, .docx and HTML is CPU- and memory-heavy work chosen by the
uploader, so it never runs on the event loop nor in the server process. Each file runs in
a worker of a process pool with three limits:
- wall clock (`EXTRACTION_TIMEOUT_SECONDS`): the pool kills the worker and starts another;
- CPU time (`EXTRACTION_CPU_SECONDS`, `RLIMIT_CPU`, re-armed before every file): the
  kernel stops the worker with SIGXCPU; the pool starts another;
- address space (`EXTRACTION_MEMORY_MB`, `RLIMIT_AS`): allocations past it fail; a
  worker that hits `MemoryError` exits (its heap is not trusted again) and the pool
  starts another; the client gets a 413.
Over a limit the client gets a clear error whose `code` names it (`extraction_time_limit`,
`extraction_cpu_limit`, `extraction_memory_limit`, `extraction_crashed`), and the other
workers keep serving.

Why `pebble` and not `concurrent.futures.ProcessPoolExecutor`: the standard pool has no
per-task timeout and cannot kill one stuck task (a dead worker breaks the whole executor);
pebble (maintained, pure Python, no dependencies) schedules with a timeout, kills only the
worker running the late task, reports a worker that died (`ProcessExpired` with its exit
code) and replaces it. `loky` reuses executors but has no per-task timeout either.

Workers come from a `forkserver` whose only preloaded modules are this one and the
readers (pypdf, python-docx, lxml): they never inherit the server's torch threads or
model, start in milliseconds when one is replaced, and import nothing heavy. The stdlib
would also re-run the server's main script in every new worker (`rag serve`, pytest, a
benchmark): `_LeanForkServerContext` starts workers without that step.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import resource
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from typing import Any

import pebble

from rag_service.documents.extraction import ExtractedFile, ExtractionLimits, extract, sanitize_source_name
from rag_service.errors import AppError, PayloadTooLarge, ServiceUnavailable, Unprocessable

log = logging.getLogger(__name__)

# Imported once by the fork server, inherited by every worker.
WORKER_PRELOAD = ["rag_service.documents.sandbox", "pypdf", "docx", "lxml.etree"]


@dataclass(frozen=True)
class SandboxLimits:
    workers: int = 2
    timeout_seconds: float = 60.0
    cpu_seconds: int = 30
    memory_mb: int = 1024

    @classmethod
    def from_settings(cls, settings: object) -> SandboxLimits:
        return cls(
            workers=settings.extraction_workers,  # type: ignore[attr-defined]
            timeout_seconds=settings.extraction_timeout_seconds,  # type: ignore[attr-defined]
            cpu_seconds=settings.extraction_cpu_seconds,  # type: ignore[attr-defined]
            memory_mb=settings.extraction_memory_mb,  # type: ignore[attr-defined]
        )


# --- inside a worker ---------------------------------------------------------------------


# Workers run at a lower CPU priority than the server: on a busy host the event loop
# (health checks, searches) gets the cores first and a hostile file waits.
WORKER_NICENESS = 10


def _init_worker(memory_mb: int) -> None:
    """Runs once in each new worker: lower its priority, cap its address space."""
    os.nice(WORKER_NICENESS)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _arm_cpu_limit(cpu_seconds: int) -> None:
    # RLIMIT_CPU counts the process's whole life: allow `cpu_seconds` more than used so far.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime) + 1 + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


# A worker that ran out of memory exits with this code instead of answering: its heap may
# be fragmented or half-torn, so the pool replaces it and the parent reports the limit.
MEMORY_EXIT_CODE = 86


def extract_in_worker(filename: str | None, data: bytes, limits: ExtractionLimits, cpu_seconds: int) -> ExtractedFile:
    _arm_cpu_limit(cpu_seconds)
    try:
        return extract(filename, data, limits)
    except MemoryError:
        os._exit(MEMORY_EXIT_CODE)
    except AppError:
        raise
    except Exception as exc:  # a reader failing in a way nobody listed: still the file's fault, not a 500
        raise Unprocessable(f"{sanitize_source_name(filename)!r} could not be read: {type(exc).__name__}") from None


def worker_facts() -> dict[str, object]:
    """What a worker looks like from inside (tests check the sandbox with it)."""
    with open("/proc/self/status") as status:
        vm_kb = next((int(line.split()[1]) for line in status if line.startswith("VmSize:")), -1)
    return {
        "pid": os.getpid(),
        "vm_bytes": vm_kb * 1024,
        "torch_imported": "torch" in sys.modules,
        "fastapi_imported": "fastapi" in sys.modules,
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "niceness": os.nice(0),
    }


# --- in the server ---------------------------------------------------------------------


class _LeanPopen(popen_forkserver.Popen):
    """The stdlib's fork-server launch (CPython 3.11 `popen_forkserver.Popen._launch`)
    minus the instruction to re-import the parent's `__main__` in the worker: a worker
    needs only the preloaded reader modules, never the server's entry script."""

    def _launch(self, process_obj: multiprocessing.process.BaseProcess) -> None:
        if sys.version_info[:2] != (3, 11):
            # Copied from 3.11; elsewhere use the stock launch (correct, only heavier).
            super()._launch(process_obj)
            return
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _LeanProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: multiprocessing.process.BaseProcess) -> _LeanPopen:  # noqa: N802 (stdlib name)
        return _LeanPopen(process_obj)


class _LeanForkServerContext(mp_context.ForkServerContext):
    Process = _LeanProcess


class ExtractionPool:
    """A pebble process pool of sandboxed extraction workers, owned by the `Runtime`."""

    def __init__(self, sandbox: SandboxLimits, limits: ExtractionLimits) -> None:
        self.sandbox = sandbox
        self.limits = limits
        self._context = _LeanForkServerContext()
        # Only takes effect before the fork server starts (the first pool of the process).
        self._context.set_forkserver_preload(WORKER_PRELOAD)
        self._closed = False
        self._pool = self._new_pool()
        # Futures handed out and not yet resolved: pebble's stop() leaves a running task's
        # future pending forever, so `close` fails them itself.
        self._in_flight: set[Future[Any]] = set()

    def _new_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=max(1, self.sandbox.workers),
            initializer=_init_worker,
            initargs=(self.sandbox.memory_mb,),
            context=self._context,
        )

    def _schedule(self, function: Callable[..., Any], *args: Any) -> tuple[pebble.ProcessPool, Future[Any]]:
        if self._closed:
            raise ServiceUnavailable("file extraction is shutting down; try again later")
        pool = self._pool
        try:
            future = pool.schedule(function, args=args, timeout=self.sandbox.timeout_seconds)
        except RuntimeError:  # pebble refuses tasks once it has marked itself broken
            pool = self._replace(pool)
            future = pool.schedule(function, args=args, timeout=self.sandbox.timeout_seconds)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return pool, future

    def _replace(self, broken: pebble.ProcessPool) -> pebble.ProcessPool:
        """A fresh pool instead of `broken` (once, however many tasks noticed it)."""
        if self._pool is broken and not self._closed:
            log.warning("extraction pool was broken; starting a new one")
            self._pool = self._new_pool()
            broken.stop()
        return self._pool

    async def extract(self, filename: str | None, data: bytes) -> ExtractedFile:
        """The file's text, read in a worker; a limit or a crash is a 413/422 naming it."""
        name = repr(sanitize_source_name(filename))
        # pebble aborts every queued task with BrokenProcessPool when a worker dies outside
        # a task (e.g. while receiving a file too big for its memory): bystanders retry once
        # on a fresh pool; a file that breaks the pool twice is over the memory limit.
        for attempt in (1, 2):
            pool, future = self._schedule(extract_in_worker, filename, data, self.limits, self.sandbox.cpu_seconds)
            try:
                # Cancelling the request cancels the future: pebble then stops that worker.
                return await asyncio.wrap_future(future)
            except AppError:
                raise
            except FutureTimeoutError:
                raise Unprocessable(
                    f"reading {name} took longer than the extraction time limit of "
                    f"{self.sandbox.timeout_seconds:g} s",
                    code="extraction_time_limit",
                ) from None
            except pebble.ProcessExpired as exc:
                raise self._expired(name, exc.exitcode) from None
            except BrokenProcessPool:
                if self._closed:
                    raise ServiceUnavailable("file extraction is shutting down; try again later") from None
                self._replace(pool)
                if attempt == 2:
                    raise self._memory_limit(name) from None
            except RuntimeError as exc:  # the pool was stopped under this task (shutdown)
                log.warning("extraction pool stopped during a task: %s", type(exc).__name__)
                raise ServiceUnavailable("file extraction is shutting down; try again later") from None
        raise AssertionError("unreachable")

    def _memory_limit(self, name: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"reading {name} needs more than the extraction memory limit of {self.sandbox.memory_mb} MB",
            code="extraction_memory_limit",
        )

    def _expired(self, name: str, exitcode: int | None) -> AppError:
        log.warning("extraction worker died with exit code %s; it is replaced", exitcode)
        if exitcode == -signal.SIGXCPU:
            return Unprocessable(
                f"reading {name} used more than the extraction CPU limit of {self.sandbox.cpu_seconds} s",
                code="extraction_cpu_limit",
            )
        if exitcode in (MEMORY_EXIT_CODE, -signal.SIGKILL):
            # Our own exit on MemoryError, or the kernel's OOM killer.
            return self._memory_limit(name)
        return Unprocessable(
            f"the reader crashed on {name} (exit code {exitcode}): the file is malformed or needs more "
            f"than the extraction memory limit of {self.sandbox.memory_mb} MB",
            code="extraction_crashed",
        )

    async def worker_facts(self) -> dict[str, object]:
        return await asyncio.wrap_future(self._schedule(worker_facts)[1])

    def close(self) -> None:
        """Stop the workers (running extractions are abandoned) and wait for them."""
        self._closed = True
        self._pool.stop()
        self._pool.join(timeout=3)  # stop() terminates them: quick
        for future in list(self._in_flight):
            if not future.done():
                try:
                    future.set_exception(RuntimeError("the extraction pool was stopped"))
                except InvalidStateError:  # resolved meanwhile
                    pass

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
