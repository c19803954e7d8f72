"""Qdrant Edge in a child process: the server's GIL stays free while the shard searches.

qdrant-edge-py 0.9 holds the GIL for the whole of every call (bench/edge_gil.py), so in the
server process a 100 ms search at 100k chunks per user stalls every other request, /health
included, even from a worker thread. `EdgeProcessStore` keeps the `VectorStore` interface in
the server and forwards each call (method name and picklable arguments) to a child process
that owns the real `EdgeVectorStore`, the only process that opens the shard. The server only
pickles, writes and reads a socket, which releases the GIL (bench/health_under_search.py).

- The child is a fresh interpreter (`python -m rag_service.storage.edge_process`, started
  with `subprocess` and spoken to through a `multiprocessing.connection.Connection` over a
  socketpair) rather than `multiprocessing`'s spawn: spawn re-imports the server's entry
  script in the child (~3 s and every module of the app) and passes it the server's whole
  environment. This child gets an explicit minimal environment (no tokens, no database
  URL): it needs only the shard's path, collection and dimension, given on its command line.
- Calls from any number of coroutines: each gets a request id and a future; one sender
  thread writes requests (a large upsert never blocks the event loop on a full socket), one
  reader thread resolves the futures. The child answers one call at a time (Edge holds the
  child's GIL per call anyway, and writes are serialized there by the store's lock): waiting
  reads before waiting writes, writes in the order sent (`next_request`).
- The child dies (crash, OOM kill): calls in flight fail with `ServiceUnavailable` (503),
  and the next call starts a new child, which reopens the shard (Qdrant's write-ahead log
  keeps every acknowledged write). `healthy()` reports a dead child as down (and restarts
  it for later calls) without a round trip otherwise: a health probe must not queue behind
  searches.
- `close()` asks the child to flush and close the shard and waits up to
  `STOP_TIMEOUT_SECONDS`, then kills it, so SIGTERM still exits within its budget. The
  child ignores SIGINT and SIGTERM (a signal to the whole process group must not take the
  store away from the requests the server is still finishing); the server's exit, however
  abrupt, ends its connection: the child reads end-of-file, flushes and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rag_service.errors import ServiceUnavailable
from rag_service.storage.vectors import ChunkFilter, ChunkHit, ChunkPoint, QueryVectors, SearchMode

log = logging.getLogger(__name__)

# close(): seconds for the child to flush and exit before it is killed.
# Well inside the 10 s a SIGTERM may take (SHUTDOWN_GRACE_SECONDS <= 3 s comes first).
STOP_TIMEOUT_SECONDS = 4.0
# What the child keeps of the server's environment: locale, temp dir, where executables and
# the interpreter's shared libraries are. PYTHONPATH is set to the server's sys.path so the
# child runs the same code.
CHILD_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "LD_LIBRARY_PATH", "PYTHONHOME")
CLOSE = "close"
# Calls that change nothing: in the child they go before queued writes (`next_request`).
READS = frozenset({"search", "count", "healthy"})
Request = tuple[int, str, tuple[Any, ...]]  # request id, method, arguments


class EdgeProcessStore:
    """The `VectorStore` of a Qdrant Edge shard at `path` that lives in a child process."""

    # The child is the only process that opens the shard, and it belongs to this process.
    single_process = True

    def __init__(self, path: Path | str, collection: str, dimension: int) -> None:
        self.path = Path(path)
        self.collection = collection
        self.dimension = dimension
        self._child: _Child | None = None
        self._start_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first call or after close)."""
        child = self._child
        return child.pid if child is not None else None

    async def ensure_collection(self) -> None:
        await self._call("ensure_collection")

    async def upsert(self, points: list[ChunkPoint]) -> None:
        if points:
            await self._call("upsert", points)

    async def search(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode = "hybrid",
        dense_score_threshold: float | None = None,
    ) -> list[ChunkHit]:
        return await self._call("search", query, where, limit, mode, dense_score_threshold)

    async def delete(self, where: ChunkFilter) -> None:
        await self._call("delete", where)

    async def count(self, where: ChunkFilter) -> int:
        return await self._call("count", where)

    async def optimize(self) -> bool:
        """`EdgeVectorStore.optimize` in the child (the `reindex` command; never the service)."""
        return await self._call("optimize")

    async def healthy(self) -> bool:
        died = self._child is not None and not self._child.alive
        try:
            child = await self._running_child()  # a dead child is replaced for later calls
            if died:
                return False
            if not child.shard_opened:
                # Once per child: can it open the shard (not locked, same dimension)?
                child.shard_opened = bool(await child.call("healthy", ()))
            return child.shard_opened
        except Exception as exc:  # cannot start a child: down, reason in the log
            log.warning("Qdrant Edge process unavailable: %r", exc)
            return False

    async def close(self) -> None:
        with self._start_lock:
            child, self._child = self._child, None
        if child is not None:
            await child.stop(STOP_TIMEOUT_SECONDS)

    async def _call(self, method: str, *args: Any) -> Any:
        child = await self._running_child()
        result = await child.call(method, args)
        if method == "ensure_collection":
            child.shard_opened = True
        return result

    async def _running_child(self) -> _Child:
        child = self._child
        if child is not None and child.alive:
            return child
        return await asyncio.to_thread(self._start_child)

    def _start_child(self) -> _Child:
        with self._start_lock:  # one child at a time: a second could not open the shard
            child = self._child
            if child is not None and child.alive:
                return child
            if child is not None:
                log.warning("Qdrant Edge process %d exited (code %s); starting another", child.pid, child.exit_code)
                child.discard()
            self._child = _Child.start(self.path, self.collection, self.dimension)
            return self._child


class _Child:
    """One child process, its connection, sender and reader threads and pending calls."""

    def __init__(self, process: subprocess.Popen[bytes], connection: Connection) -> None:
        self.process = process
        self.pid = process.pid
        self.shard_opened = False
        self._connection = connection
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._gone: str | None = None  # why calls can no longer be answered
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edge-send-{self.pid}")
        self._reader = threading.Thread(target=self._read, name=f"edge-read-{self.pid}", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, path: Path, collection: str, dimension: int) -> _Child:
        ours, theirs = socket.socketpair()
        environment = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
        environment["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, "--fd", str(theirs.fileno()), "--path", str(path),
                 "--collection", collection, "--dimension", str(dimension)],
                pass_fds=[theirs.fileno()], env=environment, stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise ServiceUnavailable(f"cannot start the Qdrant Edge process: {exc}") from exc
        finally:
            theirs.close()  # the child's copy only: its exit then ends our reads
        return cls(process, Connection(ours.detach()))

    @property
    def alive(self) -> bool:
        if self._gone is not None or self.process.returncode is not None:
            return False
        if not hasattr(os, "waitid"):  # macOS: no waitid; poll() may say "running" for a moment
            return self.process.poll() is None
        try:
            # Not Popen.poll(): it answers "running" while another thread (the reader) holds
            # its lock to reap the child. This looks without reaping and without that lock.
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped already
            return False

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    async def call(self, method: str, args: tuple[Any, ...]) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            if self._gone is not None:
                raise ServiceUnavailable(self._gone)
            request_id = next(self._ids)
            self._pending[request_id] = future
        try:
            try:
                sending = asyncio.get_running_loop().run_in_executor(self._sender, self._send, (request_id, method, args))
            except RuntimeError as exc:  # the sender is shut down: this child was replaced or closed
                raise ServiceUnavailable(f"the Qdrant Edge process {self.pid} is closed") from exc
            await sending
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def _send(self, request: tuple[int, str, tuple[Any, ...]]) -> None:
        try:
            self._connection.send(request)
        except OSError as exc:  # the child is gone; the reader fails what is pending
            raise ServiceUnavailable(f"the Qdrant Edge process is gone: {exc!r}") from exc

    def _read(self) -> None:
        try:
            while True:
                request_id, ok, value = self._connection.recv()
                with self._lock:
                    future = self._pending.pop(request_id, None)
                if future is None:  # its caller was cancelled
                    continue
                try:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                except InvalidStateError:
                    pass
        except (EOFError, OSError):
            pass
        finally:
            self.process.poll()
            reason = f"the Qdrant Edge process {self.pid} exited (code {self.process.returncode})"
            with self._lock:
                self._gone = reason
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                if not future.done():
                    future.set_exception(ServiceUnavailable(reason))

    async def stop(self, timeout: float) -> None:
        """Flush and close the shard in the child and let it exit; kill it after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                await self.call(CLOSE, ())
        except (ServiceUnavailable, TimeoutError) as exc:
            log.warning("Qdrant Edge process %d did not close cleanly: %r", self.pid, exc)
        await asyncio.to_thread(self._wait_or_kill, 1.0)
        self.discard()

    def _wait_or_kill(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # it ignores SIGTERM (see `main`)
            self.process.kill()
            self.process.wait()

    def discard(self) -> None:
        """Release what is left of an exited child (its reader ends with the child's socket)."""
        self._sender.shutdown(wait=False, cancel_futures=True)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self._connection.close()


# --- in the child ---------------------------------------------------------------------


async def _serve(connection: Connection, path: str, collection: str, dimension: int) -> None:
    from rag_service.storage.qdrant_edge import EdgeVectorStore

    store = EdgeVectorStore(path, collection=collection, dimension=dimension)
    waiting: list[Request] = []
    try:
        while True:
            try:
                request_id, method, args = next_request(connection, waiting)
            except EOFError:  # the server is gone
                return
            if method == CLOSE:
                await store.close()
                connection.send((request_id, True, None))
                return
            try:
                reply = (request_id, True, await getattr(store, method)(*args))
            except Exception as exc:  # answered to the caller, as the in-process store raises it
                reply = (request_id, False, exc)
            try:
                connection.send(reply)  # pickled whole before anything is written
            except OSError:
                raise
            except Exception:  # an exception that does not pickle: its type and message
                connection.send((request_id, False, RuntimeError(f"{type(reply[2]).__name__}: {reply[2]}"[:2000])))
    except OSError:  # the server is gone mid-reply
        return
    finally:
        await store.close()


def next_request(connection: Connection, waiting: list[Request]) -> Request:
    """The next call to answer: the oldest waiting read, else the oldest write.

    Every request that has arrived is read first, so a search sent while an ingestion's
    upserts queue here overtakes them instead of waiting for each (a search's latency during
    a bulk ingestion). Only calls that are in flight together are reordered, and writes keep
    their order among themselves, so nothing a caller has been answered about changes.
    """
    while not waiting or connection.poll(0):
        try:
            waiting.append(connection.recv())
        except EOFError:
            if not waiting:
                raise
            break  # the server is gone: answer what it sent (nobody reads it) and stop
    for position, (_, method, _) in enumerate(waiting):
        if method in READS:
            return waiting.pop(position)
    return waiting.pop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The Qdrant Edge process of a rag-service (started by it).")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--dimension", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C, or SIGTERM sent to the whole process group (a supervisor, `kill -- -PGID`),
    # reaches this process too: the server's shutdown lets its requests finish, which need
    # this process, and then closes the store (flush, exit). The server's exit (end of file
    # on the connection) stops this process just as well.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_serve(Connection(args.fd), args.path, args.collection, args.dimension))


if __name__ == "__main__":
    main()
