"""The import graph of rag_service keeps the contracts in rag-service/.importlinter
(import-linter): storage imports no feature, providers import no storage and no feature, no
vector store adapter imports another, the features form no cycles, and business logic never
imports FastAPI. A change that breaks one fails here with the offending import chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / ".importlinter"


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "lint-imports"
    # --no-cache: nothing written into the checkout.
    return subprocess.run([str(executable), "--no-cache", str(config)], capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    # The check itself can fail: a contract the code does not keep (storage does import
    # the errors module) is reported as broken.
    config = tmp_path / "importlinter.ini"
    config.write_text(
        "[importlinter]\nroot_package = rag_service\n\n"
        "[importlinter:contract:impossible]\nname = storage imports no errors\ntype = forbidden\n"
        "source_modules =\n    rag_service.storage\nforbidden_modules =\n    rag_service.errors\n"
    )
    result = lint_imports(config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "storage imports no errors BROKEN" in result.stdout
