"""Landlock and seccomp confinement of one extraction worker (EXTRACTION_ISOLATION=landlock).

bubblewrap needs new namespaces, which Docker's default seccomp profile refuses without
CAP_SYS_ADMIN. Landlock and a seccomp filter need neither: any process may restrict itself
once no_new_privs is set. Each worker confines itself once, in the pool's initializer (after
the fork, before it receives its first file; a worker then reads many files under the same
rules, so the cost, well under a millisecond, is per worker and not per file):
- Landlock (`landlockpy`, ctypes over the three landlock syscalls): reads only beneath the
  Python installation, the virtualenv, the service's source and /usr (plus the few system
  files the loader reads and the worker's own /proc/<pid>); writes, file creation and
  removal only beneath the worker's private temporary folder; no execution of any file; on
  Landlock ABI >= 4 no TCP bind or connect; on ABI >= 6 no signal to a process outside
  the sandbox and no abstract UNIX socket outside it. Landlock also refuses ptrace of a
  process outside the sandbox and any mount change from inside it;
- seccomp (`pyseccomp`, ctypes over libseccomp): socket() and socketpair() fail with
  EACCES for every address family. A worker never makes a socket: it talks to the pool
  over the pipes it inherited from the fork server (pebble's channel and the fork server's
  connection are file descriptors passed at the fork), so even AF_UNIX is refused (Landlock
  before ABI 9 does not govern connecting to a named UNIX socket such as docker.sock).
  io_uring (which could open sockets without the socket() call) and open_by_handle_at
  (which opens a file by handle instead of by path) fail too.

The rules are built from paths while the worker is still the server's user (root can open
/root/.pyenv), then the worker drops to `nobody` when started as root, then they are
enforced. See docs/security.md ("Hostile files").
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

# Landlock ABI from which TCP bind/connect can be refused (kernel 6.7).
LANDLOCK_NET_ABI = 4
CAP_DAC_READ_SEARCH = 2
PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Calls that fail inside the worker, with the errno they fail with.
DENIED_SYSCALLS = {
    "socket": errno.EACCES, "socketpair": errno.EACCES,
    "io_uring_setup": errno.ENOSYS, "io_uring_enter": errno.ENOSYS, "io_uring_register": errno.ENOSYS,
    "open_by_handle_at": errno.EPERM, "name_to_handle_at": errno.EPERM,
}


@dataclass(frozen=True)
class WorkerConfinement:
    """What a confined worker may touch (picklable: it crosses to the worker as initargs)."""

    read_only: tuple[str, ...]
    private_tmp: str
    # Started as root and the Python installation is not world-readable (e.g. pyenv under a
    # 0700 /root): the worker, as nobody, keeps CAP_DAC_READ_SEARCH, and Landlock still
    # limits what it reads to `read_only`.
    keep_read_search: bool = False


def build_ruleset(confinement: WorkerConfinement):  # -> landlockpy.Ruleset
    """The worker's Landlock ruleset, not yet enforced (paths are opened now, by the caller's uid)."""
    import landlockpy

    abi = landlockpy.abi_version()
    handled_net = landlockpy.AccessNet.BIND_TCP | landlockpy.AccessNet.CONNECT_TCP if abi >= LANDLOCK_NET_ABI \
        else landlockpy.AccessNet.NONE
    ruleset = landlockpy.Ruleset(
        handled_fs=landlockpy.fs_for_abi(abi), handled_net=handled_net,
        scoped=landlockpy.Scope.ABSTRACT_UNIX_SOCKET | landlockpy.Scope.SIGNAL)
    # Reading files and listing folders; no EXECUTE: nothing is ever exec'd.
    read = landlockpy.AccessFS.READ_FILE | landlockpy.AccessFS.READ_DIR
    for path in (*confinement.read_only, f"/proc/{os.getpid()}"):
        if os.path.exists(path):
            # Folder rights on a file are EINVAL.
            ruleset.allow_path(path, read if os.path.isdir(path) else landlockpy.AccessFS.READ_FILE)
    # Everything beneath the private folder except executing and device nodes.
    ruleset.allow_path(confinement.private_tmp, landlockpy.fs_for_abi(abi) & ~(
        landlockpy.AccessFS.EXECUTE | landlockpy.AccessFS.MAKE_CHAR | landlockpy.AccessFS.MAKE_BLOCK
        | landlockpy.AccessFS.IOCTL_DEV))
    ruleset.allow_path("/dev/null", landlockpy.AccessFS.READ_FILE | landlockpy.AccessFS.WRITE_FILE)
    return ruleset


def drop_to(uid: int, *, keep_read_search: bool) -> None:
    """Become `uid`/`uid` without supplementary groups; with `keep_read_search`, keep only
    CAP_DAC_READ_SEARCH. prctl(2) PR_SET_KEEPCAPS and capset(2) through ctypes: the Python
    binding for them (python-prctl) is a C extension built against libcap and no longer
    released, and these are two calls."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if keep_read_search and libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if not keep_read_search:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    kept = 1 << CAP_DAC_READ_SEARCH
    data = (Data * 2)(Data(kept, kept, 0), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)


def seccomp_filter():  # -> pyseccomp.SyscallFilter
    """Everything allowed but the calls in DENIED_SYSCALLS (see the module docstring)."""
    import pyseccomp

    denied = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name, code in DENIED_SYSCALLS.items():
        denied.add_rule(pyseccomp.ERRNO(code), name)
    return denied


def enforce(ruleset) -> None:  # ruleset: landlockpy.Ruleset
    """Enforce the Landlock ruleset and load the seccomp filter (both set no_new_privs)."""
    # Built first: importing pyseccomp (ctypes.util.find_library) runs ldconfig, which the
    # ruleset forbids (the fork server preloads it in this mode, so this is no import).
    denied = seccomp_filter()
    ruleset.restrict()
    ruleset.close()
    denied.load()


# A throw-away interpreter confines itself exactly as a worker does (rules on / only): a
# runtime that refuses a syscall involved (an old Docker seccomp profile without the
# landlock calls) shows up at start-up, not in the first worker.
_TRIAL = """
import socket, sys
from rag_service.documents.confinement import WorkerConfinement, build_ruleset, enforce
enforce(build_ruleset(WorkerConfinement(read_only=("/",), private_tmp=sys.argv[1])))
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
except PermissionError:
    print("confined")
"""


@lru_cache(maxsize=1)
def landlock_problem() -> str | None:
    """None when workers can confine themselves here, else why not (checked once)."""
    try:
        import landlockpy
        import pyseccomp  # noqa: F401  (loads libseccomp.so.2)
    except (ImportError, OSError, RuntimeError) as exc:
        return f"landlockpy/pyseccomp cannot load ({type(exc).__name__}: {exc}; libseccomp2 is needed)"
    abi = landlockpy.abi_version()
    if abi < 1:
        return "the kernel has no Landlock (Linux >= 5.13 with landlock in its `lsm=` list)"
    import rag_service

    source = os.path.dirname(os.path.dirname(os.path.abspath(rag_service.__file__)))
    try:
        with tempfile.TemporaryDirectory(prefix="rag-landlock-trial-") as private_tmp:
            done = subprocess.run([sys.executable, "-c", _TRIAL, private_tmp], capture_output=True, timeout=30,
                                  check=False, env={"PYTHONPATH": source}, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the Landlock trial could not run: {type(exc).__name__}"
    if done.stdout.strip() != b"confined":
        return f"Landlock/seccomp do not work here: {done.stderr.decode(errors='replace').strip()[-200:]}"
    return None

