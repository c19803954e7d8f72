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
readers (pypdf, python-docx, python-pptx, openpyxl, lxml): they never inherit the server's
torch threads or model, start in milliseconds when one is replaced, and import nothing
heavy. The stdlib would also re-run the server's main script in every new worker (`rag
serve`, pytest, a benchmark): `_LeanForkServerContext` starts workers without that step.

Isolation (`EXTRACTION_ISOLATION`, see `documents/isolation.py`): the fork server, and so
every worker, is started by `bwrap` (bubblewrap) with an empty environment, no network (its
own network namespace), a private size-capped /tmp, and a read-only view of only what
Python needs (the interpreter, the virtualenv, the service's source): the data folder, the
SQLite file, the model cache, /root, /home and the rest of the filesystem are not there.
Started as root, each worker drops to uid/gid 65534 (nobody), without capabilities,
before it reads any file. Without a usable bwrap, "auto" falls back with a logged warning
(empty environment and limits only) except in production, where the service refuses to
start unless EXTRACTION_ISOLATION=none says so. Where bwrap cannot run (Docker's default
seccomp profile), "landlock" (and "auto" after bwrap) has each worker confine itself with
Landlock and seccomp in `_init_worker`, once, before its first file (`documents/confinement.py`):
reads only what Python needs, writes only in the pool's private folder (`TMPDIR`), no socket,
no exec; the same uid drop and empty environment.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing import connection, forkserver, popen_forkserver, reduction, resource_tracker, spawn, util
from typing import Any

import pebble

from rag_service.documents.extraction import ExtractedFile, ExtractionLimits, extract, sanitize_source_name
from rag_service.documents.confinement import WorkerConfinement, build_ruleset, drop_to, enforce
from rag_service.documents.isolation import IsolationPlan, plan_isolation
from rag_service.errors import AppError, PayloadTooLarge, ServiceUnavailable, Unprocessable

log = logging.getLogger(__name__)

# Imported once by the fork server, inherited by every worker.
WORKER_PRELOAD = ["rag_service.documents.sandbox", "rag_service.documents.html_text",
                  "rag_service.documents.office_formats", "pypdf", "docx", "lxml.etree", "pptx", "openpyxl"]
# With Landlock, also the bindings: importing pyseccomp runs ldconfig to find libseccomp,
# once in the fork server instead of in every worker (and a worker may not exec).
LANDLOCK_PRELOAD = ["landlockpy", "pyseccomp"]


@dataclass(frozen=True)
class SandboxLimits:
    workers: int = 2
    timeout_seconds: float = 60.0
    cpu_seconds: int = 30
    memory_mb: int = 1024
    # EXTRACTION_ISOLATION: auto | bwrap | landlock | none (documents/isolation.py).
    isolation: str = "auto"
    # RAG_ENV=production: "auto" without a usable bwrap or Landlock refuses to start.
    production: bool = False
    # Paths that must not be visible in a worker even if they lie inside what it may read
    # (the data folder, the model cache).
    hidden_paths: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: object) -> SandboxLimits:
        return cls(
            workers=settings.extraction_workers,  # type: ignore[attr-defined]
            timeout_seconds=settings.extraction_timeout_seconds,  # type: ignore[attr-defined]
            cpu_seconds=settings.extraction_cpu_seconds,  # type: ignore[attr-defined]
            memory_mb=settings.extraction_memory_mb,  # type: ignore[attr-defined]
            isolation=settings.extraction_isolation,  # type: ignore[attr-defined]
            production=settings.rag_env == "production",  # type: ignore[attr-defined]
            hidden_paths=tuple(str(p) for p in (settings.data_dir, settings.models_dir)),  # type: ignore[attr-defined]
        )


# --- inside a worker ---------------------------------------------------------------------


# Workers run at a lower CPU priority than the server: on a busy host the event loop
# (health checks, searches) gets the cores first and a hostile file waits.
WORKER_NICENESS = 10
# No reader writes files; a worker may not write one larger than this (its /tmp, /dev/shm).
WORKER_MAX_FILE_BYTES = 16 * 1024 * 1024


def _init_worker(memory_mb: int, drop_to_uid: int | None, confinement: WorkerConfinement | None = None) -> None:
    """Runs once in each new worker, before any file: drop to the unprivileged user (when
    the plan says so), with Landlock confine it (rules built from paths while it still has
    the server's uid), lower its priority, cap its address space and file sizes."""
    ruleset = build_ruleset(confinement) if confinement is not None else None
    if drop_to_uid is not None and os.geteuid() == 0:
        # The pool's pipes and semaphores are open already; nothing else is needed as root.
        drop_to(drop_to_uid, keep_read_search=confinement is not None and confinement.keep_read_search)
    if confinement is not None:
        os.environ["TMPDIR"] = tempfile.tempdir = confinement.private_tmp
        # Before the address-space cap: building the seccomp filter allocates.
        enforce(ruleset)
    os.nice(WORKER_NICENESS)
    resource.setrlimit(resource.RLIMIT_FSIZE, (WORKER_MAX_FILE_BYTES, WORKER_MAX_FILE_BYTES))
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


def worker_ready() -> bool:
    """A task that needs nothing: whether workers can start at all (`ExtractionPool`)."""
    return True


def worker_facts(read_paths: tuple[str, ...] = (), connect_to: tuple[str, int] | None = None,
                 server_pid: int | None = None, write_paths: tuple[str, ...] = ()) -> dict[str, object]:
    """What a worker looks like from inside (tests check the sandbox with it): its limits,
    uid and environment, and whether it can read `read_paths`, the server's environment
    (`/proc/<server_pid>/environ`), open a TCP connection to `connect_to`, create
    `write_paths` or a file in its temporary folder."""
    with open("/proc/self/status") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    vm_kb = int(fields.get("VmSize", "-1 kB").split()[0])
    facts: dict[str, object] = {
        "pid": os.getpid(),
        # Capabilities in effect (a bit mask), no_new_privs, seccomp mode (2: a filter).
        "cap_effective": int(fields["CapEff"], 16),
        "no_new_privs": fields.get("NoNewPrivs") == "1",
        "seccomp": int(fields.get("Seccomp", "0")),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "environ": dict(os.environ),
        "vm_bytes": vm_kb * 1024,
        "torch_imported": "torch" in sys.modules,
        "fastapi_imported": "fastapi" in sys.modules,
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "niceness": os.nice(0),
        "readable": {path: _try(lambda path=path: open(path, "rb").read(64)) for path in read_paths},
        "writable": {path: _try(lambda path=path: _write(path)) for path in write_paths},
        "tmp_writable": _try(_write_temporary_file),
    }
    if server_pid is not None:
        facts["server_environ"] = _try(lambda: open(f"/proc/{server_pid}/environ", "rb").read())
    if connect_to is not None:
        import socket

        facts["connect"] = _try(lambda: socket.create_connection(connect_to, timeout=2).close() or b"connected")
    return facts


def _write(path: str) -> bytes:
    with open(path, "wb") as file:
        file.write(b"written")
    with open(path, "rb") as file:
        return file.read()


def _write_temporary_file() -> bytes:
    with tempfile.NamedTemporaryFile() as file:  # in TMPDIR, removed on close
        file.write(b"written")
        file.flush()
        with open(file.name, "rb") as again:
            return again.read()


def _try(action: Callable[[], bytes | None]) -> str:
    """"ok: <first bytes>" or the error's name (e.g. FileNotFoundError, PermissionError)."""
    try:
        return f"ok: {action()!r}"
    except Exception as exc:
        return type(exc).__name__


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
        self.sentinel, w = FORK_SERVER.connect_to_new_process(self._fds)
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

    def set_forkserver_preload(self, module_names: list[str]) -> None:
        FORK_SERVER.set_forkserver_preload(module_names)


class _IsolatedForkServer(forkserver.ForkServer):
    """The stdlib's fork server (CPython 3.11 `ForkServer.ensure_running`), started as the
    `IsolationPlan` says: inside bubblewrap, always with an empty environment. One per
    process, like the stdlib's. `configure` sets the plan; a different plan stops the running
    fork server so that the next worker comes from one started the new way (workers running
    already keep their sandbox). A server process has one plan; tests build plans freely."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = IsolationPlan(bwrap=None)
        self._process: subprocess.Popen[bytes] | None = None

    def configure(self, plan: IsolationPlan) -> None:
        with self._lock:
            if plan == self.plan:
                return
            self._detach_unlocked()
            self.plan = plan

    def _detach_unlocked(self) -> None:
        """Let the running fork server go without waiting for it (the stdlib's `_stop_unlocked`
        waits): the stdlib hands its "alive" pipe to every worker, so it exits only after the
        workers of every pool still open, which may be waiting on this very process."""
        if self._forkserver_pid is None:
            return
        os.close(self._forkserver_alive_fd)
        if not util.is_abstract_socket_namespace(self._forkserver_address):
            os.unlink(self._forkserver_address)
        self._forkserver_alive_fd = self._forkserver_address = self._forkserver_pid = None
        # subprocess reaps a dropped Popen that is still running when it starts the next one.
        self._process = None

    def ensure_running(self) -> None:
        with self._lock:
            resource_tracker.ensure_running()
            if self._forkserver_pid is not None:
                pid, _ = os.waitpid(self._forkserver_pid, os.WNOHANG)
                if not pid:
                    return
                os.close(self._forkserver_alive_fd)
                self._forkserver_address = None
                self._forkserver_alive_fd = None
                self._forkserver_pid = None
            # 3.11's forkserver.main ignores its sys_path argument (3.12 applies it): set it
            # first, so the fork server imports the server's modules (PYTHONPATH is not in
            # its empty environment), not whatever a .pth file of the virtualenv points at.
            cmd = "import sys; sys.path[:] = %r; from multiprocessing.forkserver import main; main(%d, %d, %r, **%r)"
            data = {}
            if self._preload_modules:
                prepared = spawn.get_preparation_data("ignore")
                data = {key: value for key, value in prepared.items() if key in {"main_path", "sys_path"}}
            with socket.socket(socket.AF_UNIX) as listener:
                address = connection.arbitrary_address("AF_UNIX")
                listener.bind(address)
                if not util.is_abstract_socket_namespace(address):
                    os.chmod(address, 0o600)
                listener.listen()
                alive_r, alive_w = os.pipe()
                try:
                    fds_to_pass = [listener.fileno(), alive_r]
                    cmd %= (sys.path, listener.fileno(), alive_r, self._preload_modules, data)
                    python = [spawn.get_executable(), *util._args_from_interpreter_flags(), "-c", cmd]
                    # An empty environment whether or not bwrap runs: nothing of the server's leaks.
                    self._process = subprocess.Popen(self.plan.command(python), pass_fds=fds_to_pass, env={},
                                                     stdin=subprocess.DEVNULL, cwd="/")
                except BaseException:
                    os.close(alive_w)
                    raise
                finally:
                    os.close(alive_r)
                self._forkserver_address = address
                self._forkserver_alive_fd = alive_w
                self._forkserver_pid = self._process.pid


FORK_SERVER = _IsolatedForkServer()


UNAVAILABLE = "file extraction is unavailable: its workers cannot start; try again later"


class ExtractionPool:
    """A pebble process pool of sandboxed extraction workers, owned by the `Runtime`."""

    def __init__(self, sandbox: SandboxLimits, limits: ExtractionLimits) -> None:
        self.sandbox = sandbox
        self.limits = limits
        # IsolationUnavailable here stops the service from starting (see isolation.py).
        self.isolation = plan_isolation(sandbox.isolation, production=sandbox.production,
                                        hidden_paths=sandbox.hidden_paths)
        FORK_SERVER.configure(self.isolation)
        self._context = _LeanForkServerContext()
        # Only takes effect when the fork server starts (the first pool of the process, or
        # the first one after the plan changed).
        self._context.set_forkserver_preload(WORKER_PRELOAD + (LANDLOCK_PRELOAD if self.isolation.landlock else []))
        self._confinement: WorkerConfinement | None = None
        if self.isolation.landlock:
            # The workers' only writable folder, shared by this pool's workers, removed on close.
            private_tmp = tempfile.mkdtemp(prefix="rag-extraction-")
            if self.isolation.drop_to_uid is not None:
                os.chown(private_tmp, self.isolation.drop_to_uid, self.isolation.drop_to_uid)
            self._confinement = WorkerConfinement(self.isolation.read_only, private_tmp,
                                                  self.isolation.keep_read_search)
        self._closed = False
        self._pool = self._new_pool()
        # Futures handed out and not yet resolved: pebble's stop() leaves a running task's
        # future pending forever, so `close` fails them itself.
        self._in_flight: set[Future[Any]] = set()

    def _new_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=max(1, self.sandbox.workers),
            initializer=_init_worker,
            initargs=(self.sandbox.memory_mb, self.isolation.drop_to_uid, self._confinement),
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
            try:
                future = pool.schedule(function, args=args, timeout=self.sandbox.timeout_seconds)
            except RuntimeError:  # broken again at once: its workers cannot start
                log.error("extraction workers cannot start (see the fork server's output above)")
                raise ServiceUnavailable(UNAVAILABLE) from None
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
                    if not await self._workers_start():
                        raise ServiceUnavailable(UNAVAILABLE) from None
                    raise self._memory_limit(name) from None
            except RuntimeError as exc:  # the pool was stopped under this task (shutdown)
                log.warning("extraction pool stopped during a task: %s", type(exc).__name__)
                raise ServiceUnavailable("file extraction is shutting down; try again later") from None
        raise AssertionError("unreachable")

    async def _workers_start(self) -> bool:
        """Whether a worker of a fresh pool runs a task that needs nothing. Asked when a file
        broke the pool twice: was it the file (over the memory limit) or can no worker start
        here at all (a sandbox that cannot import the service), which no upload should be
        blamed for?"""
        pool, future = self._schedule(worker_ready)
        try:
            return await asyncio.wrap_future(future)
        except (BrokenProcessPool, pebble.ProcessExpired, FutureTimeoutError):
            self._replace(pool)
            log.error("extraction workers cannot start (see the fork server's output above)")
            return False

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

    async def worker_facts(self, read_paths: tuple[str, ...] = (), connect_to: tuple[str, int] | None = None,
                           server_pid: int | None = None, write_paths: tuple[str, ...] = ()) -> dict[str, object]:
        return await asyncio.wrap_future(
            self._schedule(worker_facts, read_paths, connect_to, server_pid, write_paths)[1])

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
        if self._confinement is not None:
            shutil.rmtree(self._confinement.private_tmp, ignore_errors=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
