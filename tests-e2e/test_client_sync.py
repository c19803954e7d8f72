"""`rag-client sync DIR` and `rag-client ask` against the real services: a folder synced
twice (the second run uploads nothing), changed and removed files, a sync killed mid-way
(SIGKILL) and run again; a folder synced into a collection and into the default one (two
independent syncs), and a question asked of one collection."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from clients_support import account, run_cli, start_cli
from rag_client import RagClient
from rag_client.folder_sync import STATE_FILE, state_file_name

FILES = {
    "notes/tides.txt": "Spring tides happen near new and full moon, when the sun and moon pull in line.",
    "notes/harbour.md": "# Harbour\n\nThe harbour master assigns berths and keeps the tide tables posted.",
    "guide.html": "<html><head><title>Knots</title></head><body><p>A bowline makes a fixed loop that "
                  "does not slip and is easy to untie after loading.</p></body></html>",
}


def make_folder(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "image.bin").write_bytes(b"\x00\x01 not a document")
    (root / ".hidden.txt").write_text("hidden files are not synced")
    return root


@pytest.fixture
def write_key(auth_url: str, rag_url: str):
    owner = account(auth_url, rag_url)
    key = owner.create_api_key("sync", "write").key
    yield owner, key
    owner.close()


def sync_cli(folder: Path, rag_url: str, auth_url: str, key: str, *extra: str) -> dict:
    done = run_cli(["sync", str(folder), "--json", *extra], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def titles_by_source(owner: RagClient, collection_id: str | None = None) -> dict[str, str]:
    return {d.metadata["source_path"]: d.id for d in owner.iter_documents(collection_id=collection_id)}


def test_sync_twice_then_change_and_delete(tmp_path: Path, write_key, auth_url: str, rag_url: str) -> None:
    owner, key = write_key
    folder = make_folder(tmp_path / "docs", FILES)

    first = sync_cli(folder, rag_url, auth_url, key)
    assert sorted(first["uploaded"]) == sorted(FILES) and not first["failed"]
    # Every file not sent is reported with its reason (the state file is not a file of the folder's).
    assert first["skipped"] == {".hidden.txt": "hidden file",
                                "image.bin": "binary content: .bin is not a supported document type"}
    stored = titles_by_source(owner)
    assert sorted(stored) == sorted(FILES)
    assert owner.summary().by_status["ready"] == 3

    second = sync_cli(folder, rag_url, auth_url, key)
    assert second["uploaded"] == [] and sorted(second["unchanged"]) == sorted(FILES)

    (folder / "notes/tides.txt").write_text("Neap tides come at the quarter moons, with the smallest range.")
    (folder / "guide.html").unlink()
    kept = sync_cli(folder, rag_url, auth_url, key)  # without --delete: the removed file's document stays
    assert kept["uploaded"] == ["notes/tides.txt"] and kept["replaced"] == ["notes/tides.txt"] and kept["deleted"] == []
    after = titles_by_source(owner)
    assert after["notes/tides.txt"] != stored["notes/tides.txt"], "the changed file is a new document"
    assert "Neap" in owner.get_document(after["notes/tides.txt"]).content
    assert "guide.html" in after and owner.summary().documents == 3, "the changed file's old document is deleted"

    pruned = sync_cli(folder, rag_url, auth_url, key, "--delete")
    assert pruned["deleted"] == ["guide.html"] and pruned["uploaded"] == []
    assert sorted(titles_by_source(owner)) == ["notes/harbour.md", "notes/tides.txt"]


def recorded(folder: Path) -> dict[str, dict]:
    try:
        return json.loads((folder / STATE_FILE).read_text())["files"]
    except FileNotFoundError:
        return {}


def wait_until_indexed(owner: RagClient, timeout: float = 300) -> dict[str, int]:
    """The summary once nothing is being indexed (a killed client's last batch may still be)."""
    deadline = time.monotonic() + timeout
    while (summary := owner.summary()).by_status["indexing"] and time.monotonic() < deadline:
        time.sleep(0.2)
    return summary.by_status


def test_a_sync_killed_mid_way_finishes_on_the_next_run_without_duplicates(tmp_path: Path, write_key,
                                                                         auth_url: str, rag_url: str) -> None:
    owner, key = write_key
    files = {f"part-{i:02d}.txt": f"Chapter {i}: the ferry crossed the strait at dawn carrying {i} passengers "
             f"and {i * 3} bicycles while the tide turned." for i in range(40)}
    folder = make_folder(tmp_path / "book", files)
    sync = start_cli(["sync", str(folder), "--batch-size", "4"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    try:
        deadline = time.monotonic() + 300
        while len(recorded(folder)) < 8:  # two batches answered, the third one on its way
            assert sync.poll() is None, "the sync ended before it could be killed"
            assert time.monotonic() < deadline, "the sync made no progress"
            time.sleep(0.01)
    finally:
        os.kill(sync.pid, signal.SIGKILL)
        sync.wait()
    done = recorded(folder)
    assert 8 <= len(done) < len(files), len(done)

    resumed = sync_cli(folder, rag_url, auth_url, key)
    assert sorted(resumed["unchanged"]) == sorted(done)
    assert sorted(resumed["uploaded"]) == sorted(set(files) - set(done)) and not resumed["failed"]
    assert wait_until_indexed(owner) == {"indexing": 0, "ready": len(files), "failed": 0, "deleting": 0}
    state = recorded(folder)
    assert sorted(state) == sorted(files)
    stored = titles_by_source(owner)
    assert stored == {path: entry["document_id"] for path, entry in state.items()}, "one document per file"
    assert sync_cli(folder, rag_url, auth_url, key)["uploaded"] == []


def test_text_files_of_any_name_and_the_new_formats_sync(tmp_path: Path, write_key, auth_url: str,
                                                         rag_url: str) -> None:
    import io

    from openpyxl import Workbook

    owner, key = write_key
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README").write_text("The ferry leaves from pier four every hour.")
    (folder / "guide.rst").write_text("Moorings\n========\n\nBlue buoys are for visitors.")
    (folder / "berths.csv").write_text("berth,boat\n12,Seagull\n")
    (folder / "tool.py").write_text("def tide():\n    return 'high'\n")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    workbook = Workbook()
    workbook.active.append(["Crane", "Capacity"])
    sheet = io.BytesIO()
    workbook.save(sheet)
    (folder / "cranes.xlsx").write_bytes(sheet.getvalue())

    done = run_cli(["sync", str(folder)], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert done.returncode == 0, done.stderr
    assert "skipped: .git/: hidden folder" in done.stderr
    assert "skipped: photo.jpg: binary content" in done.stderr
    assert "skipped 2" in done.stdout
    assert sorted(titles_by_source(owner)) == ["README", "berths.csv", "cranes.xlsx", "guide.rst", "tool.py"]


def test_a_file_the_service_refuses_is_reported_and_the_rest_sync(tmp_path: Path, write_key, auth_url: str,
                                                                   rag_url: str) -> None:
    owner, key = write_key
    folder = make_folder(tmp_path / "mixed", {"good.txt": "Buoys mark the safe channel into the harbour."})
    (folder / "broken.pdf").write_bytes(b"this is not a PDF")
    done = run_cli(["sync", str(folder), "--json"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["uploaded"] == ["good.txt"] and list(report["failed"]) == ["broken.pdf"]
    assert owner.summary().documents == 1


def test_ask_streams_a_cited_answer(tmp_path: Path, write_key, auth_url: str, rag_url: str) -> None:
    owner, key = write_key
    owner.save("Knots", FILES["guide.html"].replace("<p>", "").replace("</p>", ""))
    done = run_cli(["ask", "Which knot makes a fixed loop?"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert done.returncode == 0, done.stderr
    assert "[1] Knots" in done.stdout
    answer = done.stdout.split("[1] Knots")[0].strip()
    assert answer, "the answer text is printed before the sources"


def test_a_read_key_cannot_sync(tmp_path: Path, write_key, auth_url: str, rag_url: str) -> None:
    owner, _ = write_key
    read_key = owner.create_api_key("read", "read").key
    folder = make_folder(tmp_path / "ro", {"a.txt": "Read-only keys may not upload."})
    done = run_cli(["sync", str(folder)], rag_url=rag_url, auth_url=auth_url, api_key=read_key)
    assert done.returncode == 1 and "insufficient_scope" in done.stderr
    assert owner.summary().documents == 0


def test_sync_into_a_collection_keeps_its_own_state(tmp_path: Path, write_key, auth_url: str,
                                                     rag_url: str) -> None:
    owner, key = write_key
    folder = make_folder(tmp_path / "docs", FILES)
    created = run_cli(["collections", "create", "Harbour"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert created.returncode == 0, created.stderr
    harbour = created.stdout.strip()
    listed = run_cli(["collections", "list", "--json"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert listed.returncode == 0, listed.stderr
    assert [(c["id"], c["name"], c["can_write"]) for c in json.loads(listed.stdout)] == [
        ("personal", "Personal", True), (harbour, "Harbour", True)]

    first = sync_cli(folder, rag_url, auth_url, key, "--collection", harbour)
    assert sorted(first["uploaded"]) == sorted(FILES) and not first["failed"]
    in_harbour = titles_by_source(owner, harbour)
    assert sorted(in_harbour) == sorted(FILES) and titles_by_source(owner, "personal") == {}
    assert (folder / state_file_name(harbour)).exists() and not (folder / STATE_FILE).exists()

    # The default collection has its own state: nothing there yet, so every file goes.
    default = sync_cli(folder, rag_url, auth_url, key)
    assert sorted(default["uploaded"]) == sorted(FILES) and default["unchanged"] == []
    in_personal = titles_by_source(owner, "personal")
    assert sorted(in_personal) == sorted(FILES) and set(in_personal.values()).isdisjoint(in_harbour.values())

    again = sync_cli(folder, rag_url, auth_url, key, "--collection", harbour)
    assert again["uploaded"] == [] and sorted(again["unchanged"]) == sorted(FILES)

    (folder / "guide.html").unlink()
    pruned = sync_cli(folder, rag_url, auth_url, key, "--collection", harbour, "--delete")
    assert pruned["deleted"] == ["guide.html"]
    assert sorted(titles_by_source(owner, harbour)) == ["notes/harbour.md", "notes/tides.txt"]
    assert titles_by_source(owner, "personal") == in_personal, "the other collection's documents stay"

    # A state file copied under another collection's name is not trusted.
    other = owner.create_collection("Copy").id
    (folder / state_file_name(other)).write_text((folder / state_file_name(harbour)).read_text())
    copied = sync_cli(folder, rag_url, auth_url, key, "--collection", other)
    assert sorted(copied["uploaded"]) == ["notes/harbour.md", "notes/tides.txt"]
    assert sorted(titles_by_source(owner, other)) == ["notes/harbour.md", "notes/tides.txt"]


def cited_titles(output: str) -> list[str]:
    """The titles of the source lines `ask` prints after the answer: `[n] title (chunk i)`."""
    return re.findall(r"^\[\d+\] (.+) \(chunk \d+\)$", output, flags=re.MULTILINE)


def test_ask_within_one_collection(write_key, auth_url: str, rag_url: str) -> None:
    owner, key = write_key
    knots = owner.create_collection("Knots").id
    owner.save("Knot guide", FILES["guide.html"].replace("<p>", "").replace("</p>", ""), collection_id=knots)
    owner.save("Tides", FILES["notes/tides.txt"])
    everywhere = run_cli(["ask", "Which knot makes a fixed loop?"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert everywhere.returncode == 0, everywhere.stderr
    assert sorted(cited_titles(everywhere.stdout)) == ["Knot guide", "Tides"]
    for question, collection, title in [("Which knot makes a fixed loop?", "personal", "Tides"),
                                        ("When do spring tides happen?", knots, "Knot guide")]:
        asked = run_cli(["ask", question, "--collection", collection], rag_url=rag_url, auth_url=auth_url, api_key=key)
        assert asked.returncode == 0, asked.stderr
        assert cited_titles(asked.stdout) == [title], asked.stdout


def test_keys_commands_create_list_and_revoke(write_key, auth_url: str, rag_url: str) -> None:
    owner, _ = write_key
    email = owner.tokens.email
    created = run_cli(["keys", "create", "cli", "--scope", "write", "--expires-in-days", "30"],
                      rag_url=rag_url, auth_url=auth_url, email=email)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rag_") and "not shown again" in created.stderr
    listed = run_cli(["keys", "list"], rag_url=rag_url, auth_url=auth_url, email=email)
    assert "cli" in listed.stdout and "write" in listed.stdout and key not in listed.stdout
    key_id = next(k.id for k in owner.list_api_keys() if k.name == "cli")
    assert run_cli(["keys", "revoke", key_id], rag_url=rag_url, auth_url=auth_url, email=email).returncode == 0
    refused = run_cli(["ask", "anything"], rag_url=rag_url, auth_url=auth_url, api_key=key)
    assert refused.returncode == 1 and "invalid_api_key" in refused.stderr
