"""`rag-client sync DIR`: make the caller's documents match a folder's supported files.

State lives in DIR/.rag-sync.json: for each relative path, the sha256 of its bytes, its size
and mtime (to skip re-hashing unchanged files) and the document id the service gave it. It is
rewritten atomically after every file, so an interrupted sync resumes where it stopped (a file
uploaded just before the interruption is uploaded again and deduplicated by the service).
- unchanged file (same sha256 as recorded) -> nothing sent
- new or changed file -> uploaded; a changed file's old document is deleted afterwards
- with `delete`: files gone from the folder -> their documents are deleted
A document shared by several files (same content) is only deleted when no file uses it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_client.client import RagClient
from rag_client.errors import InvalidRequest, NotFound

SUPPORTED_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"})
STATE_FILE = ".rag-sync.json"
STATE_VERSION = 1


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"uploaded": self.uploaded, "unchanged": self.unchanged, "replaced": self.replaced,
                "deleted": self.deleted, "failed": self.failed}

    def line(self) -> str:
        return (f"uploaded {len(self.uploaded)} (of which replaced {len(self.replaced)}), "
                f"unchanged {len(self.unchanged)}, deleted {len(self.deleted)}, failed {len(self.failed)}")


# Called after each file: (relative path, what happened: "uploaded" | "unchanged" | "failed" | ...).
Progress = Callable[[str, str], None]


def supported_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the supported files under `folder`, skipping hidden files/folders."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(Path(root, name).relative_to(folder).as_posix())
    return found


def token_subject(token: str) -> str | None:
    """The `sub` of a JWT, read without verifying (only to tell whose state file this is)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    except (IndexError, ValueError, KeyError):
        return None


class FolderSync:
    def __init__(self, client: RagClient, folder: str | Path, *, delete: bool = False) -> None:
        self.client = client
        self.folder = Path(folder)
        self.delete = delete
        self.state_path = self.folder / STATE_FILE
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder} is not a folder")

    # --- state ---------------------------------------------------------------------------

    def _owner(self) -> dict[str, Any]:
        return {"rag_url": self.client.rag_url, "user": token_subject(self.client.access_token())}

    def load_state(self) -> dict[str, dict[str, Any]]:
        """Recorded files, or none when the state is missing, unreadable or another account's."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("owner") != self._owner():
            return {}
        files = state.get("files")
        return files if isinstance(files, dict) else {}

    def save_state(self, files: dict[str, dict[str, Any]]) -> None:
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        temporary.write_text(json.dumps({"version": STATE_VERSION, "owner": self._owner(), "files": files},
                                        indent=1, sort_keys=True))
        os.replace(temporary, self.state_path)

    # --- the sync ------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> SyncReport:
        notify = progress or (lambda path, outcome: None)
        report = SyncReport()
        files = self.load_state()
        present = supported_files(self.folder)
        for relative in present:
            outcome = self._sync_file(relative, files, report)
            notify(relative, outcome)
        if self.delete:
            for relative in sorted(set(files) - set(present)):
                gone = files.pop(relative)
                self._forget_document(gone["document_id"], files)
                self.save_state(files)
                report.deleted.append(relative)
                notify(relative, "deleted")
        return report

    def _sync_file(self, relative: str, files: dict[str, dict[str, Any]], report: SyncReport) -> str:
        path = self.folder / relative
        stat = path.stat()
        recorded = files.get(relative)
        if recorded and recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
            digest = recorded["sha256"]
            data = None
        else:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
        if recorded and recorded.get("sha256") == digest:
            if (recorded.get("size"), recorded.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
                files[relative] = {**recorded, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
                self.save_state(files)
            report.unchanged.append(relative)
            return "unchanged"
        if data is None:
            data = path.read_bytes()
        try:
            [uploaded] = self.client.upload([(path.name, data)], metadata={"source_path": relative})
        except InvalidRequest as exc:  # unreadable, too large, unsupported: report, keep going
            report.failed[relative] = f"{exc.code}: {exc.message}"
            return "failed"
        files[relative] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                           "document_id": uploaded.document_id}
        if recorded and recorded["document_id"] != uploaded.document_id:
            self._forget_document(recorded["document_id"], files)
            report.replaced.append(relative)
        self.save_state(files)
        report.uploaded.append(relative)
        return "uploaded"

    def _forget_document(self, document_id: str, files: dict[str, dict[str, Any]]) -> None:
        """Delete the document unless another recorded file still uses it."""
        if any(entry.get("document_id") == document_id for entry in files.values()):
            return
        try:
            self.client.delete_document(document_id)
        except NotFound:
            pass  # already gone (deleted elsewhere): the outcome we want
