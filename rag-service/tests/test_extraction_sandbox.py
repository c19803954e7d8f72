"""The extraction sandbox on real worker processes: limits, replacement, isolation.

Each test builds its own small `ExtractionPool` (one worker, so "the next file works"
proves the worker that hit a limit was replaced). No timing assertions: the files used
need far more than the limits they are run under.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hostile_files import shared_stream_pdf
from rag_service.documents.extraction import ExtractionLimits
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits
from rag_service.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable

# ~9 s of CPU for pypdf on this machine kind: far past the 1-2 s limits below.
SLOW_PDF = shared_stream_pdf(pages=10, operations=20_000)


@pytest_asyncio.fixture
async def make_pool() -> AsyncIterator:
    pools: list[ExtractionPool] = []

    def make(limits: ExtractionLimits | None = None, **sandbox: object) -> ExtractionPool:
        pool = ExtractionPool(SandboxLimits(**{"workers": 1, **sandbox}), limits or ExtractionLimits())
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose()


async def test_workers_are_lean_and_limited(make_pool) -> None:
    import torch  # noqa: F401  (the server process has torch loaded; workers must not)

    assert "torch" in sys.modules
    facts = await make_pool(memory_mb=512).worker_facts()
    assert facts["torch_imported"] is False and facts["fastapi_imported"] is False
    assert facts["rlimit_as"] == 512 * 1024 * 1024


async def test_a_file_is_read_in_a_worker(make_pool) -> None:
    file = await make_pool().extract("notes.html", b"<h1>Title</h1><p>Body</p>")
    assert (file.content, file.mime_type) == ("Title\n\nBody", "text/html")


async def test_reader_errors_cross_the_process_boundary_with_their_code(make_pool) -> None:
    pool = make_pool(ExtractionLimits(max_html_depth=50))
    with pytest.raises(PayloadTooLarge) as caught:
        await pool.extract("deep.html", b"<div>" * 100)
    assert caught.value.code == "html_too_deep" and "deeper than 50 levels" in caught.value.message


async def test_wall_clock_limit_is_422_and_the_worker_is_replaced(make_pool) -> None:
    pool = make_pool(timeout_seconds=1, cpu_seconds=60)
    before = await pool.worker_facts()
    with pytest.raises(Unprocessable, match="longer than the extraction time limit of 1 s") as caught:
        await pool.extract("slow.pdf", SLOW_PDF)
    assert caught.value.code == "extraction_time_limit"
    after = await pool.worker_facts()
    assert after["pid"] != before["pid"]
    assert (await pool.extract("ok.txt", b"still working")).content == "still working"


async def test_cpu_limit_is_422_and_the_worker_is_replaced(make_pool) -> None:
    pool = make_pool(timeout_seconds=120, cpu_seconds=1)
    before = await pool.worker_facts()
    with pytest.raises(Unprocessable, match="more than the extraction CPU limit of 1 s") as caught:
        await pool.extract("slow.pdf", SLOW_PDF)
    assert caught.value.code == "extraction_cpu_limit"
    assert (await pool.worker_facts())["pid"] != before["pid"]
    assert (await pool.extract("ok.txt", b"still working")).content == "still working"


async def test_cpu_limit_is_per_file_not_per_worker_lifetime(make_pool) -> None:
    pool = make_pool(cpu_seconds=1)
    pid = (await pool.worker_facts())["pid"]
    # Many small files add up past one CPU second without any of them being over it.
    for _ in range(3):
        await pool.extract("a.pdf", shared_stream_pdf(pages=1, operations=3_000))
    assert (await pool.worker_facts())["pid"] == pid


@pytest.mark.parametrize("isolation", ["auto", "landlock"])
async def test_memory_limit_is_413_and_the_worker_is_replaced(make_pool, isolation) -> None:
    # A 70 MB content stream compressed to ~70 KB: decoding it needs more than 128 MB.
    from hostile_files import pdf_with_pages

    if isolation == "landlock":  # confinement happens next to the memory cap: both must hold
        require_landlock()
    bomb = pdf_with_pages(1, b"\0" * 70_000_000)
    assert len(bomb) < 200_000
    pool = make_pool(memory_mb=128, isolation=isolation)
    before = await pool.worker_facts()
    with pytest.raises(PayloadTooLarge, match="more than the extraction memory limit of 128 MB") as caught:
        await pool.extract("bomb.pdf", bomb)
    assert caught.value.code == "extraction_memory_limit"
    assert (await pool.worker_facts())["pid"] != before["pid"]
    assert (await pool.extract("ok.txt", b"still working")).content == "still working"


async def test_other_files_are_read_while_one_worker_is_stuck(make_pool) -> None:
    import asyncio

    pool = make_pool(workers=2, timeout_seconds=60, cpu_seconds=60)
    stuck = asyncio.create_task(pool.extract("slow.pdf", SLOW_PDF))
    for index in range(5):
        assert (await pool.extract(f"{index}.txt", b"quick")).content == "quick"
    assert not stuck.done()
    stuck.cancel()  # cancelling the request stops its worker
    with pytest.raises(asyncio.CancelledError):
        await stuck


async def test_a_closed_pool_is_503(make_pool) -> None:
    pool = make_pool()
    await pool.aclose()
    with pytest.raises(ServiceUnavailable):
        await pool.extract("a.txt", b"text")


async def test_closing_the_pool_stops_a_stuck_file(make_pool) -> None:
    import asyncio

    pool = make_pool(timeout_seconds=120, cpu_seconds=120)
    await pool.extract("warm.txt", b"the worker is up")
    stuck = asyncio.create_task(pool.extract("slow.pdf", SLOW_PDF))
    await asyncio.sleep(0.5)
    await pool.aclose()  # does not wait for the slow file
    # The request reading it ends with a 503 instead of waiting forever.
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await asyncio.wait_for(stuck, timeout=60)


# --- isolation (issue 24): bubblewrap, or Landlock and seccomp --------------------------


def require_bwrap() -> None:
    import shutil

    from rag_service.documents.isolation import bwrap_problem
    from services import missing

    program = shutil.which("bwrap")
    problem = "bwrap is not installed" if program is None else bwrap_problem(program)
    if problem:
        missing(f"bubblewrap ({problem}; `make install` installs it)")


def require_landlock() -> None:
    from rag_service.documents.confinement import landlock_problem
    from services import missing

    problem = landlock_problem()
    if problem:
        missing(f"Landlock and seccomp ({problem})")


def require_isolation(mode: str) -> None:
    {"bwrap": require_bwrap, "landlock": require_landlock}[mode]()


ISOLATING_MODES = ["bwrap", "landlock"]

async def script_output(python: str, script: str, *args: str, env: dict[str, str]) -> str:
    """What `python -c script args...` printed; it must exit 0 (its stderr otherwise) within 120 s."""
    import asyncio

    process = await asyncio.create_subprocess_exec(python, "-c", script, *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


PROBE = """
import asyncio, json, os, sys
from rag_service.documents.extraction import ExtractionLimits
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits

async def main():
    data_dir, port, mode, host_tmp_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pool = ExtractionPool(SandboxLimits(workers=1, isolation=mode, hidden_paths=(data_dir,)), ExtractionLimits())
    facts = await pool.worker_facts(read_paths=(data_dir + "/rag.db", "/etc/passwd"),
                                    connect_to=("127.0.0.1", port), server_pid=os.getpid(),
                                    write_paths=(data_dir + "/planted", host_tmp_file))
    facts["isolated"] = pool.isolation.isolated
    facts["mode"] = pool.isolation.mode
    page = '<meta charset="shift_jis"><p>\u6e2f\u306e\u706f\u308a</p>'.encode("shift_jis")
    facts["read"] = (await pool.extract("page.html", page)).content
    await pool.aclose()
    print(json.dumps(facts))

asyncio.run(main())
"""

# What a worker meets when it reaches outside its sandbox: under bwrap the path does not
# exist (a mount namespace of its own), under Landlock it exists and is refused.
OUTSIDE = {"bwrap": "FileNotFoundError", "landlock": "PermissionError"}
# A write to the host's /tmp: bwrap's /tmp is the worker's private tmpfs (the write stays
# there), Landlock refuses it.
HOST_TMP_WRITE = {"bwrap": "ok: b'written'", "landlock": "PermissionError"}
# A TCP connection to a listener the server reaches: bwrap's network namespace has no route
# to it; under Landlock and seccomp the socket itself is refused.
CONNECT = {"bwrap": {"ConnectionRefusedError", "OSError"}, "landlock": {"PermissionError"}}
SERVER_ENVIRON = {"bwrap": {"PermissionError", "FileNotFoundError"}, "landlock": {"PermissionError"}}


@pytest.mark.parametrize("mode", ISOLATING_MODES)
async def test_a_worker_cannot_read_the_servers_secrets_data_or_network(tmp_path, mode) -> None:
    """A real server-like process, with secrets in its environment, a data folder and a TCP
    service it can reach: its extraction worker sees none of them and writes only in its
    private temporary folder."""
    import asyncio
    import json
    import os

    require_isolation(mode)
    secret = "postgresql://rag:s3cr3t-password@db.example/rag"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "rag.db").write_bytes(b"SQLite format 3\x00 secret rows")
    os.chmod(data_dir / "rag.db", 0o644)
    # Writable by anyone: a refused write is the sandbox's doing, not the file mode's.
    os.chmod(data_dir, 0o777)
    host_tmp_file = f"/tmp/planted-by-a-worker-{os.getpid()}-{mode}"
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # reachable from outside the sandbox
    writer.close()
    env = {**os.environ, "DATABASE_URL": secret, "METRICS_TOKEN": "metrics-s3cr3t", "GEMINI_API_KEY": "gem-s3cr3t"}
    try:
        out = await script_output(sys.executable, PROBE, str(data_dir), str(port), mode, host_tmp_file, env=env)
    finally:
        server.close()
    facts = json.loads(out.strip().splitlines()[-1])

    assert (facts["isolated"], facts["mode"]) == (True, mode)
    for value in (secret, "metrics-s3cr3t", "gem-s3cr3t"):
        assert value not in out
    assert not {"DATABASE_URL", "METRICS_TOKEN", "GEMINI_API_KEY"} & set(facts["environ"])
    assert facts["server_environ"] in SERVER_ENVIRON[mode]
    assert facts["readable"][str(data_dir / "rag.db")] == OUTSIDE[mode]
    assert facts["readable"]["/etc/passwd"] == OUTSIDE[mode]
    assert facts["connect"] in CONNECT[mode]
    assert facts["writable"][str(data_dir / "planted")] == OUTSIDE[mode]
    assert facts["writable"][host_tmp_file] == HOST_TMP_WRITE[mode]
    assert not (data_dir / "planted").exists() and not os.path.exists(host_tmp_file)
    assert facts["tmp_writable"] == "ok: b'written'"  # its own temporary folder works
    if os.geteuid() == 0:
        assert (facts["uid"], facts["gid"]) == (65534, 65534)
        # At most CAP_DAC_READ_SEARCH (Landlock, Python under a 0700 /root), which Landlock
        # still limits to the paths the worker may read.
        assert facts["cap_effective"] & ~(1 << 2) == 0
    assert facts["no_new_privs"] is True
    if mode == "landlock":
        assert facts["seccomp"] == 2  # the socket filter is loaded
    # It still reads files, including ones needing codecs imported after the uid drop.
    assert facts["read"] == "港の灯り"


@pytest.mark.parametrize("mode", ISOLATING_MODES)
async def test_real_documents_are_read_in_an_isolated_worker(make_pool, mode) -> None:
    from test_extraction import make_docx, make_pdf

    require_isolation(mode)
    pool = make_pool(isolation=mode, production=True)
    assert pool.isolation.mode == mode
    pdf = await pool.extract("report.pdf", make_pdf(["Hello from a PDF file."], title="PDF Title"))
    assert (pdf.content, pdf.title) == ("Hello from a PDF file.", "PDF Title")
    document = await pool.extract("report.docx", make_docx())
    assert "Revenue grew by twelve percent." in document.content and "North" in document.content
    assert (await pool.extract("notes.txt", "plain café text".encode())).content == "plain café text"


async def test_pools_isolated_differently_work_side_by_side(make_pool) -> None:
    """A plan change starts a new fork server without waiting for the old one, whose workers
    (of a pool still open) keep it alive."""
    require_bwrap()
    require_landlock()
    wrapped = make_pool(isolation="bwrap")
    assert (await wrapped.extract("a.txt", b"first")).content == "first"
    import asyncio

    # Guard, not a speed check: waiting for the old fork server would block here forever.
    confined = await asyncio.wait_for(asyncio.to_thread(make_pool, isolation="landlock"), timeout=60)
    assert (await confined.extract("b.txt", b"second")).content == "second"
    assert (await wrapped.extract("c.txt", b"third")).content == "third"
    assert (await wrapped.worker_facts())["seccomp"] == 0 and (await confined.worker_facts())["seccomp"] == 2


def test_without_bwrap_or_landlock_development_warns_and_production_refuses(caplog) -> None:
    from rag_service.documents.isolation import IsolationUnavailable, plan_isolation

    absent = "/nonexistent/bwrap"
    with caplog.at_level("WARNING"):
        plan = plan_isolation("auto", production=False, bwrap=absent, landlock=False)
    assert not plan.isolated and "WITHOUT isolation" in caplog.text
    with pytest.raises(IsolationUnavailable, match="EXTRACTION_ISOLATION=none"):
        plan_isolation("auto", production=True, bwrap=absent, landlock=False)
    with pytest.raises(IsolationUnavailable, match="EXTRACTION_ISOLATION=bwrap"):
        plan_isolation("bwrap", production=False, bwrap=absent)
    assert not plan_isolation("none", production=True).isolated


def test_auto_without_bwrap_confines_workers_with_landlock() -> None:
    """Docker's default seccomp profile: bwrap cannot build its namespaces; Landlock works."""
    from rag_service.documents.isolation import plan_isolation

    require_landlock()
    plan = plan_isolation("auto", production=True, bwrap="/nonexistent/bwrap")
    assert (plan.isolated, plan.mode) == (True, "landlock")
    assert plan.command(["python", "-c", "pass"]) == ["python", "-c", "pass"]  # confined per worker


def test_landlock_leaves_out_a_data_folder_inside_a_readable_tree(tmp_path) -> None:
    """A Landlock rule grants a whole tree: a tree holding the data folder is granted child
    by child, without the data folder."""
    from pathlib import Path

    from rag_service.documents.isolation import plan_isolation

    require_landlock()
    venv = str(Path(sys.prefix).resolve())
    inside = f"{venv}/lib"
    plan = plan_isolation("landlock", production=True, hidden_paths=(inside, str(tmp_path)))
    assert venv not in plan.read_only and inside not in plan.read_only
    assert f"{venv}/bin" in plan.read_only
    assert not any(path.startswith(inside + "/") or path.startswith(str(tmp_path)) for path in plan.read_only)


def test_the_bwrap_command_isolates_and_hides_a_data_folder_inside_a_bind(tmp_path) -> None:
    import sys

    from rag_service.documents.isolation import plan_isolation

    require_bwrap()
    inside = f"{sys.prefix}/data-inside-the-venv"
    plan = plan_isolation("auto", production=True, hidden_paths=(inside, str(tmp_path)))
    argv = plan.command(["python", "-c", "pass"])
    for flag in ("--unshare-net", "--clearenv", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--tmpfs", argv.index("--ro-bind")) + 1] == inside  # covered after the binds
    assert str(tmp_path) not in argv  # outside every bind: simply absent
    assert argv[-4:] == ["--", "python", "-c", "pass"]


EXTRACT_ONE = """
import asyncio, sys
from rag_service.documents.extraction import ExtractionLimits
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits

async def main():
    mode, hidden = sys.argv[1], tuple(sys.argv[2:])
    pool = ExtractionPool(SandboxLimits(workers=1, isolation=mode, hidden_paths=hidden), ExtractionLimits())
    try:
        for _ in range(2):
            try:
                print("read:", (await pool.extract("notes.txt", b"plain text")).content)
            except Exception as exc:
                print(f"{type(exc).__name__}: {exc}")
    finally:
        await pool.aclose()

asyncio.run(main())
"""


async def extract_one_in_a_process(python: str, mode: str, *hidden: str) -> list[str]:
    """EXTRACT_ONE run by `python` (each scenario gets a fork server of its own); its answers."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return (await script_output(python, EXTRACT_ONE, mode, *hidden, env=env)).strip().splitlines()


@pytest.mark.parametrize("mode", ISOLATING_MODES)
async def test_a_virtualenv_reached_through_a_symlink_runs_isolated_workers(tmp_path, mode) -> None:
    """A release folder (`current -> releases/...`) or a shared checkout: the interpreter's
    path leads elsewhere, and the sandbox must still find it under that name."""
    from pathlib import Path

    require_isolation(mode)
    linked = tmp_path / "current-venv"
    linked.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    python = linked / "bin" / Path(sys.executable).name
    assert await extract_one_in_a_process(str(python), mode) == ["read: plain text"] * 2


async def test_workers_that_cannot_start_are_a_503_not_the_uploads_fault() -> None:
    """A bwrap sandbox that hides the service's own libraries: no worker can start. Every
    upload is told the service is unavailable, never that its file was over a limit. (Under
    Landlock the fork server imports them before it is confined: nothing to break that way.)"""
    import site

    require_bwrap()
    answers = await extract_one_in_a_process(sys.executable, "bwrap", *site.getsitepackages())
    assert answers == ["ServiceUnavailable: file extraction is unavailable: its workers cannot start; "
                       "try again later"] * 2
