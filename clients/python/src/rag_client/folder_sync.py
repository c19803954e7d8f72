"""`rag-client sync DIR`: make the caller's documents match a folder's supported files.

State lives in DIR/.rag-sync.json: for each relative path, the sha256 of its bytes, its size
and mtime (to skip re-hashing unchanged files) and the document id the service gave it.
Synced into a collection other than the default ("personal"), the state is a file of its own,
DIR/.rag-sync.<collection id>.json, recording that collection: the same folder synced into two
collections is two independent syncs (a file sent to one is new to the other, and `delete`
in one never touches the other's documents), and a state file copied or renamed to another
collection's name is ignored, not trusted.
- unchanged file (same sha256 as recorded) -> nothing sent
- new or changed files -> sent in batches (POST /documents/batch: at most `batch_files` files
  and about `batch_bytes` bytes per request); a changed file's old document is deleted afterwards
- with `delete`: files gone from the folder -> their documents are deleted
A document shared by several files (same content) is only deleted when no file uses it.

The state is rewritten atomically after every batch, so a sync interrupted at any point (even
killed) resumes where it stopped: files of a batch whose answer never arrived are sent again
and the service answers `duplicate` with the documents it already has. A file the service
refuses is reported and the rest go on; files refused for a passing reason (a 5xx such as
`busy`) are sent again a few times first. A batch refused whole as too large (the service
takes fewer items or bytes) is split in two until it fits."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_client.client import RagClient
from rag_client.errors import InvalidRequest, NotFound
from rag_client.models import BatchFile, BatchItemResult

# Documents the service reads by their format; any other file is sent when its content is
# text (README, NOTES, .rst, .csv, .json, source code...), and reported as skipped otherwise.
SUPPORTED_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".html", ".htm", ".xhtml", ".pdf", ".docx",
                                ".pptx", ".xlsx", ".odt", ".epub", ".csv", ".tsv", ".json", ".rst", ".log"})
# How much of a file of another name is read to decide whether it is text.
SNIFF_BYTES = 8192
STATE_FILE = ".rag-sync.json"
STATE_VERSION = 1
# The caller's default collection (the service's id for it); its state is STATE_FILE.
DEFAULT_COLLECTION = "personal"
# Files per batch request, and bytes after which a batch is sent (a bigger file goes alone).
BATCH_FILES = 32
BATCH_BYTES = 1 << 20
# Sending again the files a batch refused with a 5xx (e.g. `busy`): attempts, first pause (s).
ITEM_RETRIES = 3
RETRY_PAUSE = 2.0


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    # Files (and hidden folders, ending in "/") not sent, and why.
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"uploaded": self.uploaded, "unchanged": self.unchanged, "replaced": self.replaced,
                "deleted": self.deleted, "failed": self.failed, "skipped": self.skipped}

    def line(self) -> str:
        return (f"uploaded {len(self.uploaded)} (of which replaced {len(self.replaced)}), "
                f"unchanged {len(self.unchanged)}, deleted {len(self.deleted)}, failed {len(self.failed)}, "
                f"skipped {len(self.skipped)}")


# Called for each file: (relative path, what happened): "sending" when its batch is sent, then
# "uploaded" | "failed"; or "unchanged"; or "deleted".
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class ChangedFile:
    """A new or changed file, read and hashed, waiting for its batch."""

    relative: str
    data: bytes
    sha256: str
    mtime_ns: int
    recorded: dict[str, Any] | None

    def entry(self, document_id: str) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": len(self.data), "mtime_ns": self.mtime_ns, "document_id": document_id}


def supported_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the files under `folder` that are sent (see `scan_folder`)."""
    return scan_folder(folder)[0]


def scan_folder(folder: Path) -> tuple[list[str], dict[str, str]]:
    """The files to send (relative POSIX paths) and the ones skipped with the reason: hidden
    files and folders (a folder is one entry, ending in "/"), and files of an unsupported
    type whose content is not text. Sync state files are neither."""
    found: list[str] = []
    skipped: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs):
            if name.startswith("."):
                skipped[Path(root, name).relative_to(folder).as_posix() + "/"] = "hidden folder"
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if name.startswith(".rag-sync"):
                continue
            reason = skip_reason(path)
            if reason is None:
                found.append(relative)
            else:
                skipped[relative] = reason
    return found, skipped


def skip_reason(path: Path) -> str | None:
    """Why `path` is not sent, or None when it is."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        return None
    if not path.is_file():
        return "not a regular file"
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}"
    if not head.strip():
        return "empty"
    if _is_text(head):
        return None
    return f"binary content: {path.suffix or 'no extension'} is not a supported document type"


def _is_text(head: bytes) -> bool:
    """The service's test, on the first bytes: UTF-8 (or UTF-16 with a BOM), no NUL."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or len(head) < SNIFF_BYTES:
            return False
        text = head[: exc.start].decode("utf-8")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\x1b" or ch == "\x7f")
    return "\x00" not in text and controls <= 0.01 * max(1, len(text))


def state_file_name(collection_id: str | None) -> str:
    """The state file of a sync into `collection_id` (None: the default collection)."""
    if collection_id is None or collection_id == DEFAULT_COLLECTION:
        return STATE_FILE
    # Collection ids are UUIDs; anything else is hashed rather than trusted as a file name.
    safe = collection_id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", collection_id) else \
        "h" + hashlib.sha256(collection_id.encode()).hexdigest()[:32]
    return f".rag-sync.{safe}.json"


def token_subject(token: str) -> str | None:
    """The `sub` of a JWT, read without verifying (only to tell whose state file this is)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    except (IndexError, ValueError, KeyError):
        return None


class FolderSync:
    def __init__(self, client: RagClient, folder: str | Path, *, delete: bool = False,
                 batch_files: int = BATCH_FILES, batch_bytes: int = BATCH_BYTES,
                 collection_id: str | None = None) -> None:
        self.client = client
        self.folder = Path(folder)
        self.delete = delete
        self.batch_files = max(1, batch_files)
        self.batch_bytes = batch_bytes
        # None: the default collection, and requests that do not name one (as before collections).
        self.collection_id = None if collection_id == DEFAULT_COLLECTION else collection_id
        self.state_path = self.folder / state_file_name(self.collection_id)
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
        # State files written before collections name none: they are the default collection's.
        if state.get("collection_id", DEFAULT_COLLECTION) != (self.collection_id or DEFAULT_COLLECTION):
            return {}
        files = state.get("files")
        return files if isinstance(files, dict) else {}

    def save_state(self, files: dict[str, dict[str, Any]]) -> None:
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        temporary.write_text(json.dumps({"version": STATE_VERSION, "owner": self._owner(),
                                         "collection_id": self.collection_id or DEFAULT_COLLECTION, "files": files},
                                        indent=1, sort_keys=True))
        os.replace(temporary, self.state_path)

    # --- the sync ------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> SyncReport:
        notify = progress or (lambda path, outcome: None)
        report = SyncReport()
        files = self.load_state()
        present, report.skipped = scan_folder(self.folder)
        for relative in report.skipped:
            notify(relative, "skipped")
        batch: list[ChangedFile] = []
        for relative in present:
            changed = self._check(relative, files)
            if changed is None:
                report.unchanged.append(relative)
                notify(relative, "unchanged")
                continue
            if batch and (len(batch) >= self.batch_files
                          or sum(len(f.data) for f in batch) + len(changed.data) > self.batch_bytes):
                self._send(batch, files, report, notify)
                batch = []
            batch.append(changed)
        if batch:
            self._send(batch, files, report, notify)
        if self.delete:
            for relative in sorted(set(files) - set(present)):
                gone = files.pop(relative)
                self._forget_document(gone["document_id"], files)
                self.save_state(files)
                report.deleted.append(relative)
                notify(relative, "deleted")
        return report

    def _check(self, relative: str, files: dict[str, dict[str, Any]]) -> ChangedFile | None:
        """None when the file is as recorded (re-hashed only if its size or mtime moved)."""
        path = self.folder / relative
        stat = path.stat()
        recorded = files.get(relative)
        if recorded and (recorded.get("size"), recorded.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
            return None
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if recorded and recorded.get("sha256") == digest:  # touched, not changed
            files[relative] = {**recorded, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            self.save_state(files)
            return None
        return ChangedFile(relative, data, digest, stat.st_mtime_ns, recorded)

    def _send(self, batch: list[ChangedFile], files: dict[str, dict[str, Any]], report: SyncReport,
              notify: Progress, attempt: int = 0) -> None:
        for changed in batch:
            notify(changed.relative, "sending")
        items = [BatchFile((Path(c.relative).name, c.data), metadata={"source_path": c.relative}) for c in batch]
        try:
            result = self.client.batch(items, collection_id=self.collection_id)
        except InvalidRequest as exc:
            if exc.status == 413 and len(batch) > 1:  # the service takes smaller batches
                half = len(batch) // 2
                self._send(batch[:half], files, report, notify, attempt)
                self._send(batch[half:], files, report, notify, attempt)
                return
            for changed in batch:
                self._fail(changed, f"{exc.code}: {exc.message}", report, notify)
            return
        retry = []
        for changed, item in zip(batch, result.items, strict=True):
            if item.ok:
                self._record(changed, item, files, report)
                notify(changed.relative, "uploaded")
            elif (item.error_status or 0) >= 500 and attempt < ITEM_RETRIES:
                retry.append(changed)
            else:
                self._fail(changed, f"{item.error_code}: {item.error_message}", report, notify)
        self.save_state(files)
        if retry:
            time.sleep(RETRY_PAUSE * 2 ** attempt)
            self._send(retry, files, report, notify, attempt + 1)

    def _record(self, changed: ChangedFile, item: BatchItemResult, files: dict[str, dict[str, Any]],
                report: SyncReport) -> None:
        assert item.document_id is not None
        files[changed.relative] = changed.entry(item.document_id)
        report.uploaded.append(changed.relative)
        if changed.recorded and changed.recorded["document_id"] != item.document_id:
            self._forget_document(changed.recorded["document_id"], files)
            report.replaced.append(changed.relative)

    @staticmethod
    def _fail(changed: ChangedFile, reason: str, report: SyncReport, notify: Progress) -> None:
        report.failed[changed.relative] = reason
        notify(changed.relative, "failed")

    def _forget_document(self, document_id: str, files: dict[str, dict[str, Any]]) -> None:
        """Delete the document unless another recorded file still uses it."""
        if any(entry.get("document_id") == document_id for entry in files.values()):
            return
        try:
            self.client.delete_document(document_id)
        except NotFound:
            pass  # already gone (deleted elsewhere): the outcome we want
