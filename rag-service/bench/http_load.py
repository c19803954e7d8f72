"""A lean closed-loop HTTP/1.1 load generator for the HTTP benchmarks, and where the server's
CPU goes (per thread, from /proc; thread names and profiles from py-spy).

The machine has two cores and the load generator shares them with the server, so each
request costs the client as little as possible: requests are pre-encoded bytes written on
keep-alive connections (one per client), and a response is read as its head plus
Content-Length bytes. httpx would spend ~1 ms of CPU per request here, as much as a
fifth of what the server spends. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def post_json(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(payload)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self._reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class LoadResult:
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + len(self.errors)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def closed_loop(port: int, request_for: Callable[[int, int], bytes], *, clients: int,
                      seconds: float | None = None, requests: int | None = None,
                      stop: asyncio.Event | None = None) -> LoadResult:
    """`clients` connections, each sending `request_for(client, i)` as soon as its previous
    response arrived, until `seconds` pass, `requests` (in total) were sent, or `stop` is set."""
    result = LoadResult(clients=clients, seconds=0.0)
    deadline = time.perf_counter() + seconds if seconds is not None else None
    sent = 0

    def more() -> bool:
        if stop is not None and stop.is_set():
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        return requests is None or sent < requests

    async def client(index: int) -> None:
        nonlocal sent
        connection = Connection(port)
        i = 0
        try:
            while more():
                sent += 1
                raw = request_for(index, i)
                i += 1
                started = time.perf_counter()
                try:
                    status, _ = await connection.request(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    connection.close()
                    continue
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.statuses[status] += 1
        finally:
            connection.close()

    cpu = os.times()
    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result.seconds = time.perf_counter() - began
    after = os.times()
    result.client_cpu_s = (after.user - cpu.user) + (after.system - cpu.system)
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    return process_cpu_seconds_at(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of each thread of a process, by native thread id."""
    times: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = process_cpu_seconds_at(task / "stat")
        except (OSError, ValueError):
            pass  # the thread ended meanwhile
    return times


def process_cpu_seconds_at(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from `py-spy dump` (requirements-dev.txt); {} without it."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return {}
    dump = subprocess.run([str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(tid): name for tid, name in re.findall(r'^Thread (\d+) \(\w+\): "(.*)"$', dump, re.M)}


def start_profiler(pid: int, seconds: float, output: Path) -> subprocess.Popen:
    """py-spy (requirements-dev.txt) samples the server during the concurrent phase: collapsed
    stacks per thread, busy samples only (summarize with bench/profile_summary.py)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "200", "--threads", "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def os_thread_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def thread_group(name: str) -> str:
    if name == "MainThread":
        return "event loop (MainThread)"
    if name == "minilm":
        return "encoder: ingestion + queries (minilm)"
    if name.startswith("minilm-query"):
        return "encoder: queries only (minilm-query-N)"
    if name.startswith(("AnyIO worker", "asyncio_", "ThreadPoolExecutor")):
        return "thread pools (to_thread, sync dependencies)"
    return f"other Python threads ({re.sub(r'[0-9]+', 'N', name)})"


def cpu_by_thread_group(pid: int, before: dict[int, float], after: dict[int, float],
                        names: dict[int, str]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for tid, seconds in after.items():
        # Threads without a Python name are native (torch, ONNX Runtime, tokenizers): the OS name.
        group = thread_group(names[tid]) if tid in names else f"native threads ({re.sub(r'[0-9]+', 'N', os_thread_name(pid, tid))})"
        groups[group] = groups.get(group, 0.0) + seconds - before.get(tid, 0.0)
    return groups
