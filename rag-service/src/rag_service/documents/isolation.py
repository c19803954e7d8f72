"""How extraction workers are isolated from the server: bubblewrap, Landlock, or a declared fallback.

`EXTRACTION_ISOLATION` (Settings.extraction_isolation):
- `auto` (default): bubblewrap when `bwrap` is installed and works here (`make install`
  installs Debian's `bubblewrap` when it is missing and it runs as root); else Landlock and
  seccomp when the kernel and the runtime allow them (`documents/confinement.py`); else a
  logged warning and the fallback, except with RAG_ENV=production, where the service
  refuses to start (set `none` to accept the fallback there knowingly);
- `bwrap`: bubblewrap or the service refuses to start;
- `landlock`: Landlock and seccomp or the service refuses to start. This is the mode for
  Docker's default seccomp profile, which refuses bubblewrap's namespaces but allows a
  process to restrict itself (docker-compose.yml sets it);
- `none`: the fallback, on purpose (a warning is logged).

With bubblewrap the extraction fork server, and every worker forked from it, runs with:
- an empty environment (`--clearenv`): no DATABASE_URL, API keys, METRICS_TOKEN...;
- no network (`--unshare-net`: only a loopback of its own), its own IPC and UTS namespaces;
- a filesystem of its own: read-only binds of /usr (and the merged-usr links), the Python
  installation, the virtualenv and the service's source, a private /tmp capped at
  `PRIVATE_TMP_BYTES`, a minimal /dev, /proc, and /dev/shm (multiprocessing's semaphores
  live there). Nothing else exists inside: the data folder (SQLite file, Qdrant shard,
  models), /root, /home, /etc and the repository's other files; a data folder lying inside
  one of the binds is covered by an empty tmpfs;
- started as root: every capability dropped except setuid/setgid, which each worker uses
  once to become uid/gid 65534 (nobody) before it reads any file; no_new_privs is set.
The process-ID namespace is shared on purpose: the pool kills a late worker by its pid.

With Landlock the fork server runs on the host's filesystem and network with an empty
environment; each worker, before its first file, becomes nobody (started as root) and
confines itself for good: it may read only the same paths as bwrap's binds (a data folder
inside one of them is left out), write only in a private folder of its pool, open no
socket and execute nothing (`documents/confinement.py`). What it cannot see is refused
(PermissionError) rather than absent.

The fallback starts the fork server with an empty environment and keeps the limits (time,
CPU, memory, file size); the network, the filesystem and the server's uid stay reachable.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# uid/gid of `nobody` on Debian: workers started as root become this user.
UNPRIVILEGED_ID = 65534
# The workers' /tmp (a tmpfs of their own).
PRIVATE_TMP_BYTES = 64 * 1024 * 1024
# Top-level links of a merged-/usr system, re-created inside the sandbox when they are links.
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
SYSTEM_READ_ONLY = ("/usr", "/etc/ld.so.cache", "/etc/localtime")
ISOLATION_MODES = ("auto", "bwrap", "landlock", "none")


class IsolationUnavailable(RuntimeError):
    """The configuration asks for isolation that cannot be had here: the service must not start."""


@dataclass(frozen=True)
class IsolationPlan:
    """How the fork server is started and workers confined. `bwrap` is the program's path
    when it is used; `landlock`: each worker confines itself (read_only: what it may read)."""

    bwrap: str | None
    read_only: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    hidden: tuple[str, ...] = ()
    # Workers switch to this uid/gid before reading files (None: they keep the server's).
    drop_to_uid: int | None = None
    landlock: bool = False
    # Landlock as root with a Python installation nobody cannot reach (confinement.py).
    keep_read_search: bool = False

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None or self.landlock

    @property
    def mode(self) -> str:
        return "bwrap" if self.bwrap is not None else "landlock" if self.landlock else "none"

    def command(self, python_args: list[str]) -> list[str]:
        """The argv that starts the fork server (`python_args` run inside the sandbox)."""
        if self.bwrap is None:
            return python_args
        # /tmp 1777 like a host's: a worker that became nobody can write there too.
        argv = [self.bwrap, "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--clearenv", "--new-session", "--proc", "/proc", "--dev", "/dev", "--bind", "/dev/shm", "/dev/shm",
                "--perms", "1777", "--size", str(PRIVATE_TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
        # bwrap would create the binds' parent folders 0700 (root only): a worker that has
        # become nobody could then not import anything it had not imported before.
        parents = sorted({str(parent) for path in (*self.read_only, *(link for link, _ in self.links))
                          for parent in Path(path).parents if str(parent) != "/"},
                         key=lambda parent: (parent.count("/"), parent))
        for parent in parents:
            argv += ["--perms", "0755", "--dir", parent]
        for link, target in self.links:
            argv += ["--symlink", target, link]
        for path in self.read_only:
            argv += ["--ro-bind", path, path]
        for path in self.hidden:
            argv += ["--tmpfs", path]
        if self.drop_to_uid is not None:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return [*argv, "--", *python_args]


def plan_isolation(mode: str, *, production: bool, hidden_paths: tuple[str, ...] = (),
                   bwrap: str | None = None, landlock: bool = True) -> IsolationPlan:
    """The plan for `mode` on this machine, or IsolationUnavailable (see the module docstring).
    `bwrap`: the program to use (default: `bwrap` on PATH); `landlock=False`: `auto` does not
    consider Landlock (what a kernel without it does)."""
    if mode not in ISOLATION_MODES:
        raise ValueError(f"EXTRACTION_ISOLATION must be one of {ISOLATION_MODES}, got {mode!r}")
    if mode == "none":
        log.warning("EXTRACTION_ISOLATION=none: file extraction workers run without bubblewrap or Landlock "
                    "(empty environment and limits only; network and filesystem reachable)")
        return IsolationPlan(bwrap=None)
    problems: list[str] = []
    if mode in ("auto", "bwrap"):
        program = bwrap or shutil.which("bwrap")
        problem = "bwrap is not installed (Debian: apt-get install bubblewrap; `make install` does it as root)"
        if program is not None:
            problem = bwrap_problem(program) or ""
        if not problem:
            return _bwrap_plan(program, hidden_paths)  # type: ignore[arg-type]  (set when no problem)
        if mode == "bwrap":
            raise IsolationUnavailable(f"EXTRACTION_ISOLATION=bwrap but {problem}")
        problems.append(problem)
    if mode == "landlock" or landlock:
        from rag_service.documents.confinement import landlock_problem

        problem = landlock_problem() or ""
        if not problem:
            return _landlock_plan(hidden_paths)
        if mode == "landlock":
            raise IsolationUnavailable(f"EXTRACTION_ISOLATION=landlock but {problem}")
        problems.append(problem)
    problem = "; ".join(problems)
    if production:
        raise IsolationUnavailable(
            f"file extraction cannot be isolated: {problem}. Install bubblewrap or use a kernel with Landlock, "
            "or set EXTRACTION_ISOLATION=none to run extraction without isolation in production")
    log.warning("file extraction runs WITHOUT isolation (%s): workers get an empty environment and limits "
                "only; production refuses this unless EXTRACTION_ISOLATION=none", problem)
    return IsolationPlan(bwrap=None)


def _bwrap_plan(program: str, hidden_paths: tuple[str, ...]) -> IsolationPlan:
    read_only = _python_paths()
    links = tuple((link, os.readlink(link)) for link in MERGED_USR_LINKS if os.path.islink(link))
    links += _interpreter_links()
    read_only += tuple(path for path in (*SYSTEM_READ_ONLY, *MERGED_USR_LINKS)
                       if os.path.exists(path) and not os.path.islink(path))
    read_only = _outermost(read_only)
    hidden = tuple(sorted({str(Path(p).resolve()) for p in hidden_paths
                           if any(_within(str(Path(p).resolve()), root) for root in read_only)}))
    return IsolationPlan(bwrap=program, read_only=read_only, links=links, hidden=hidden,
                         drop_to_uid=UNPRIVILEGED_ID if os.geteuid() == 0 else None)


def _landlock_plan(hidden_paths: tuple[str, ...]) -> IsolationPlan:
    """The paths a Landlock-confined worker may read: bwrap's binds (links resolved: Landlock
    checks the real path) minus the hidden folders. A rule covers a whole tree and cannot
    exclude part of it, so a tree holding a hidden folder is granted child by child."""
    roots = _outermost(tuple(str(Path(path).resolve())
                             for path in (*_python_paths(), *SYSTEM_READ_ONLY, *MERGED_USR_LINKS)
                             if os.path.exists(path)))
    hidden = tuple(sorted({str(Path(p).resolve()) for p in hidden_paths}))
    read_only = tuple(sorted(granted for root in roots for granted in _around(root, hidden)))
    root = os.geteuid() == 0
    return IsolationPlan(bwrap=None, read_only=read_only, landlock=True,
                         drop_to_uid=UNPRIVILEGED_ID if root else None,
                         keep_read_search=root and not all(_reachable_by_others(path) for path in read_only))


def _around(root: str, hidden: tuple[str, ...]) -> list[str]:
    """`root`, or when a hidden path lies inside it, its other children (recursively)."""
    if any(_within(root, path) for path in hidden):
        return []
    if not any(_within(path, root) for path in hidden) or not os.path.isdir(root):
        return [root]
    return [granted for child in sorted(os.listdir(root)) for granted in _around(os.path.join(root, child), hidden)]


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner may traverse every folder down to `path`."""
    folders = [Path(path), *Path(path).parents] if os.path.isdir(path) else list(Path(path).parents)
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in folders)


@lru_cache(maxsize=4)
def bwrap_problem(program: str) -> str | None:
    """None when `program` can build the sandbox here, else what went wrong (checked once)."""
    try:
        done = subprocess.run([program, "--unshare-net", "--clearenv", "--ro-bind", "/", "/", "--proc", "/proc",
                               "--dev", "/dev", "--", "/bin/true"],
                              capture_output=True, timeout=20, check=False, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {type(exc).__name__}"
    if done.returncode != 0:
        return f"bwrap does not work here: {done.stderr.decode(errors='replace').strip()[:200]}"
    return None


def _python_paths() -> tuple[str, ...]:
    """What the fork server imports from: the interpreter's prefixes and the service's source."""
    import rag_service

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(rag_service.__file__).resolve().parent.parent)}
    # The interpreter binary may be a link out of the virtualenv (pyenv, /usr/local).
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    return tuple(str(Path(p).resolve()) for p in paths if p and os.path.isdir(p))


def _interpreter_links() -> tuple[tuple[str, str], ...]:
    """Links at the paths the fork server is started by when they lead elsewhere: the
    sandbox binds the resolved folders only, and a virtualenv reached through a symlink
    (a release folder `current -> releases/...`, a shared checkout) must still be found
    under the name `sys.executable` has."""
    links = []
    for path in {sys.prefix, sys.exec_prefix}:
        resolved = str(Path(path).resolve())
        if os.path.isabs(path) and resolved != os.path.normpath(path):
            links.append((os.path.normpath(path), resolved))
    return tuple(sorted(links))


def _outermost(paths: tuple[str, ...]) -> tuple[str, ...]:
    """Unique paths, none inside another (bound once, parents first)."""
    result: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(_within(path, kept) for kept in result):
            result.append(path)
    return tuple(sorted(result))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
