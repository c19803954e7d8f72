"""Load test: both services as real processes on loopback, N concurrent users for a bounded time.

Each simulated user signs up and signs in on the auth-service, then, until the deadline or
its request budget runs out, uploads documents (multipart and /save-document), searches,
chats and lists, with the JWT the auth-service issued. Afterwards every acknowledged
document is checked: listed `ready` and found by a keyword search for its unique marker.

Baseline, same run, same services: one user alone doing the same mix for --baseline-seconds
before the N users start, so each operation's latency under load sits beside its latency
unloaded. Reports per-operation p50/p95/p99 latencies, requests/s, status counts, 5xx, shed load
and lost documents; exits 1 when any request got a 5xx (or failed at the transport level) or any
acknowledged document is lost. A 503 `busy` (the ingestion cap's answer, with Retry-After) is
the service shedding load as designed: it is counted and reported apart, not as a failure.
Traffic goes only to 127.0.0.1. Not part of `make test`.

    .venv/bin/python bench/load_test.py --users 20 --duration 60 [--baseline-seconds 15] [--report PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests-e2e"))
from stack import Service, start_auth, start_rag  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402

PASSWORD = "correct horse battery staple"
TOPICS = {
    "bread": "Bread rises because yeast ferments sugars and releases carbon dioxide; gluten traps the gas.",
    "volcano": "Volcanoes form where magma reaches the surface; shield volcanoes have gentle slopes of basalt.",
    "tides": "Tides are caused by the gravity of the moon and the sun pulling on the oceans of the earth.",
    "compilers": "A compiler parses source code into a syntax tree, optimizes it and emits machine code.",
    "bees": "Honey bees communicate the direction of flowers with a waggle dance inside the hive.",
    "glaciers": "Glaciers carve U-shaped valleys as compacted snow turns to ice and slowly flows downhill.",
}
QUESTIONS = {
    "bread": "Why does bread rise?", "volcano": "How do volcanoes form?", "tides": "What causes tides?",
    "compilers": "What does a compiler do?", "bees": "How do bees tell each other where flowers are?",
    "glaciers": "How do glaciers shape valleys?",
}
# Operation mix once a user has documents (weights); uploads stop at --docs-per-user.
MIX = {"upload": 2, "save": 2, "search": 5, "chat": 2, "list": 1}


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    # 503 `busy`: refused by the ingestion cap (INGEST_CONCURRENCY) after its queue timeout.
    shed: Counter = field(default_factory=Counter)

    def record(self, operation: str, started: float, response: httpx.Response | None, error: str | None = None) -> None:
        self.latencies[operation].append((time.perf_counter() - started) * 1000)
        if response is None:
            self.statuses[operation]["transport_error"] += 1
            self.transport_errors.append(f"{operation}: {error}")
            return
        self.statuses[operation][response.status_code] += 1
        if is_shed_load(response):
            self.shed[operation] += 1
        elif response.status_code >= 500:
            self.server_errors.append(f"{operation} {response.status_code}: {response.text[:300]}")


def is_shed_load(response: httpx.Response) -> bool:
    """A 503 whose error code is `busy`: the service refused work it had no room for."""
    if response.status_code != 503:
        return False
    try:
        return response.json()["error"]["code"] == "busy"
    except (ValueError, KeyError, TypeError):
        return False


@dataclass
class User:
    email: str
    token: str = ""
    user_id: str = ""
    # document id -> unique marker word inside it (acknowledged by the server)
    documents: dict[str, str] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def timed(stats: Stats, operation: str, call: Any) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call
    except httpx.HTTPError as exc:
        stats.record(operation, started, None, f"{type(exc).__name__}: {exc}")
        return None
    stats.record(operation, started, response)
    return response


def document_text(topic: str, marker: str, paragraphs: int) -> str:
    body = [f"Notes about {topic}, reference {marker}.", TOPICS[topic]]
    body += [f"Paragraph {i}: {TOPICS[topic]} Observation {i} for {marker}." for i in range(paragraphs)]
    return "\n\n".join(body)


async def sign_in(client: httpx.AsyncClient, auth_url: str, user: User, stats: Stats) -> bool:
    signup = await timed(stats, "auth_signup", client.post(
        f"{auth_url}/auth/signup", json={"email": user.email, "password": PASSWORD, "full_name": "Load User"}))
    if signup is None or signup.status_code not in (200, 201):
        return False
    login = await timed(stats, "auth_login", client.post(
        f"{auth_url}/auth/login", json={"email": user.email, "password": PASSWORD}))
    if login is None or login.status_code != 200:
        return False
    body = login.json()
    user.token, user.user_id = body["access_token"], body["user"]["id"]
    return True


async def one_operation(client: httpx.AsyncClient, rag: str, user: User, stats: Stats, docs_per_user: int,
                        rng: random.Random) -> None:
    operations = [op for op in MIX if op not in ("upload", "save") or len(user.documents) < docs_per_user]
    if not user.documents:
        operations = ["upload", "save"]
    operation = rng.choices(operations, weights=[MIX[op] for op in operations])[0]
    topic = rng.choice(list(TOPICS))
    if operation in ("upload", "save"):
        marker = "mk" + uuid.uuid4().hex[:12]
        text = document_text(topic, marker, paragraphs=rng.randint(1, 6))
        if operation == "upload":
            response = await timed(stats, "upload", client.post(
                f"{rag}/documents/upload", headers=user.headers,
                files={"files": (f"{topic}-{marker}.txt", text.encode())},
                data={"metadata": json.dumps({"topic": topic})}))
            if response is not None and response.status_code in (200, 201):
                user.documents[response.json()["documents"][0]["document_id"]] = marker
        else:
            response = await timed(stats, "save_document", client.post(
                f"{rag}/save-document", headers=user.headers,
                json={"title": f"{topic} {marker}", "content": text, "metadata": {"topic": topic}}))
            if response is not None and response.status_code in (200, 201):
                user.documents[response.json()["document_id"]] = marker
        user.topics.append(topic)
    elif operation == "search":
        topic = rng.choice(user.topics)
        await timed(stats, "search", client.post(f"{rag}/search", headers=user.headers, json={
            "query": QUESTIONS[topic], "top_k": 5, "include_embedding": False}))
    elif operation == "chat":
        topic = rng.choice(user.topics)
        await timed(stats, "chat", client.post(f"{rag}/chat", headers=user.headers, json={"query": QUESTIONS[topic]}))
    else:
        await timed(stats, "list", client.get(f"{rag}/documents", headers=user.headers, params={"limit": 20}))


async def run_user(client: httpx.AsyncClient, auth_url: str, rag_url: str, user: User, stats: Stats,
                   deadline: float, max_requests: int, docs_per_user: int, seed: int) -> None:
    rng = random.Random(seed)
    if not await sign_in(client, auth_url, user, stats):
        return
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            break
        await one_operation(client, rag_url, user, stats, docs_per_user, rng)


async def verify(client: httpx.AsyncClient, rag_url: str, users: list[User]) -> tuple[int, int, list[str]]:
    """Every acknowledged document is listed `ready` and found by its marker. -> (checked, lost, why)"""
    checked, problems = 0, []
    for user in users:
        listed: dict[str, str] = {}
        page = 1
        while True:
            response = await client.get(f"{rag_url}/documents", headers=user.headers,
                                        params={"page": page, "limit": 100})
            body = response.json()
            listed.update({d["id"]: d["status"] for d in body["documents"]})
            if page >= body["pages"]:
                break
            page += 1
        for document_id, marker in user.documents.items():
            checked += 1
            if listed.get(document_id) != "ready":
                problems.append(f"{document_id}: listed as {listed.get(document_id)!r}")
                continue
            found = await client.post(f"{rag_url}/search", headers=user.headers, json={
                "query": marker, "mode": "keyword", "top_k": 5, "include_embedding": False})
            if document_id not in {hit["document_id"] for hit in found.json().get("results", [])}:
                problems.append(f"{document_id}: not found by a keyword search for {marker}")
    return checked, len(problems), problems


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(stats: Stats, elapsed: float, args: argparse.Namespace, checked: int, lost: int,
              start_times: dict[str, float]) -> dict[str, Any]:
    operations = {}
    for operation in sorted(stats.latencies):
        values = stats.latencies[operation]
        operations[operation] = {
            "count": len(values), "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1), "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
            "statuses": {str(k): v for k, v in sorted(stats.statuses[operation].items(), key=str)},
        }
    total = sum(op["count"] for op in operations.values())
    rag_total = sum(op["count"] for name, op in operations.items() if not name.startswith("auth_"))
    return {
        "command": " ".join(["bench/load_test.py", *sys.argv[1:]]),
        "users": args.users, "duration_s": args.duration, "torch_threads": args.torch_threads or "default", "elapsed_s": round(elapsed, 1),
        "requests": total, "requests_per_s": round(total / elapsed, 1),
        "rag_requests_per_s": round(rag_total / elapsed, 1),
        "server_errors_5xx": len(stats.server_errors), "transport_errors": len(stats.transport_errors),
        "shed_load_503_busy": sum(stats.shed.values()), "shed_load_by_operation": dict(sorted(stats.shed.items())),
        "documents_acknowledged": checked, "documents_lost": lost,
        "service_start_s": start_times, "operations": operations,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
    }


def print_report(result: dict[str, Any]) -> None:
    print(f"\n{result['command']}  ({result['machine']}, torch threads: {result['torch_threads']})")
    print(f"{result['users']} users, {result['elapsed_s']} s: {result['requests']} requests, "
          f"{result['requests_per_s']} req/s ({result['rag_requests_per_s']} req/s on the rag-service)")
    print(f"{'operation':<14}{'count':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}  statuses")
    for name, op in result["operations"].items():
        print(f"{name:<14}{op['count']:>7}{op['p50_ms']:>10}{op['p95_ms']:>10}{op['p99_ms']:>10}{op['max_ms']:>10}  "
              f"{op['statuses']}")
    print(f"5xx (failures): {result['server_errors_5xx']}, transport errors: {result['transport_errors']}, "
          f"shed load (503 busy, not failures): {result['shed_load_503_busy']} {result['shed_load_by_operation']}, "
          f"documents acknowledged: {result['documents_acknowledged']}, lost: {result['documents_lost']}")


async def load(args: argparse.Namespace, auth: Service,
               rag: Service) -> tuple[Stats, Stats, float, int, int, list[str]]:
    """(stats of one user alone, stats under load, elapsed s of the load, checked, lost, problems)"""
    stats, alone = Stats(), Stats()
    users = [User(email=f"load-{uuid.uuid4().hex[:10]}@example.com") for _ in range(args.users + 1)]
    limits = httpx.Limits(max_connections=args.users * 2, max_keepalive_connections=args.users * 2)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        if args.baseline_seconds > 0:
            await run_user(client, auth.url, rag.url, users[0], alone, time.monotonic() + args.baseline_seconds,
                           args.max_requests, args.docs_per_user, seed=args.seed - 1)
        started = time.perf_counter()
        deadline = time.monotonic() + args.duration
        await asyncio.gather(*(
            run_user(client, auth.url, rag.url, user, stats, deadline, args.max_requests, args.docs_per_user,
                     seed=args.seed + index)
            for index, user in enumerate(users[1:])))
        elapsed = time.perf_counter() - started
        if args.baseline_seconds <= 0:
            users = users[1:]
        signed_in = [user for user in users if user.token]
        checked, lost, problems = await verify(client, rag.url, signed_in)
        if len(signed_in) < len(users):
            problems.append(f"{len(users) - len(signed_in)} users could not sign up / sign in")
    return alone, stats, elapsed, checked, lost, problems


def write_report(report: Report, result: dict[str, Any], alone: Stats, failed: bool) -> None:
    threads = "the service's default" if result["torch_threads"] == "default" else result["torch_threads"]
    report.text(f"{result['users']} users for {result['duration_s']:g} s ({result['elapsed_s']} s with the requests in "
                f"flight at the deadline): {result['requests']:,} requests, **{result['requests_per_s']} req/s** "
                f"({result['rag_requests_per_s']} req/s on the rag-service); encoder threads: "
                f"{threads}; services started in {result['service_start_s']['auth']} s (auth) and "
                f"{result['service_start_s']['rag']} s (rag). 5xx: {result['server_errors_5xx']}, transport errors: "
                f"{result['transport_errors']}; documents acknowledged {result['documents_acknowledged']}, lost "
                f"{result['documents_lost']}{' - FAILED' if failed else ''}.")
    rows = []
    for name, op in result["operations"].items():
        unloaded = alone.latencies.get(name)
        rows.append([name, op["count"], op["p50_ms"], op["p95_ms"], op["p99_ms"], op["max_ms"],
                     f"{percentile(unloaded, 50):.1f} ({len(unloaded)})" if unloaded else "-"])
    report.table(["operation", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "one user alone: p50 ms (count)"],
                 rows)
    report.text("How to read it: every acknowledged document must be listed `ready` and be found by a keyword "
                "search for its marker afterwards, and no request may fail: that is the correctness half. For "
                "latency, compare each operation under load with the same operation for one user alone: the "
                "difference is queueing. Operations that embed (upload, save, search, chat) share the one encoder "
                "worker, listing is SQL only, and sign-up/sign-in hash a password on the auth-service.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--max-requests", type=int, default=300, help="per user (default 300)")
    parser.add_argument("--docs-per-user", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-seconds", type=float, default=15.0,
                        help="one user alone first, for the unloaded latencies (0: no baseline)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    parser.add_argument("--torch-threads", type=int,
                        help="EMBEDDING_QUERY_THREADS and EMBEDDING_THREADS for the rag-service "
                             "(default: the service's own, 1; 0 = one per core)")
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Load test: both services, concurrent users", baseline="one user alone doing the same "
                    "operation mix on the same services for the first seconds of the same run")

    work = Path(tempfile.mkdtemp(prefix="rag-load-"))
    logs = work / "logs"
    auth = rag = None
    try:
        auth = start_auth(work / "auth", logs)
        extra_env = ({"EMBEDDING_QUERY_THREADS": str(args.torch_threads), "EMBEDDING_THREADS": str(args.torch_threads)}
                     if args.torch_threads is not None else {})
        rag = start_rag(work / "rag", logs, auth.url, RATE_LIMIT_CHEAP="1000000/minute",
                        RATE_LIMIT_COSTLY="1000000/minute", LOG_LEVEL="WARNING", **extra_env)
        start_times = {"auth": round(auth.started_in, 1), "rag": round(rag.started_in, 1)}
        alone, stats, elapsed, checked, lost, problems = asyncio.run(load(args, auth, rag))
        result = summarize(stats, elapsed, args, checked, lost, start_times)
        print_report(result)
        for line in (stats.server_errors + stats.transport_errors + problems)[:20]:
            print("  !", line)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        failed = bool(stats.server_errors or stats.transport_errors or alone.server_errors
                      or alone.transport_errors or lost or problems)
        write_report(report, result, alone, failed)
        report.write(args.report)
        if failed:
            print(f"FAILED (logs in {logs})")
            args.keep = True
        return 1 if failed else 0
    finally:
        for service in (rag, auth):
            if service is not None:
                service.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
