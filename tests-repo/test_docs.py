"""The docs match the repository: relative links resolve, and the commands they name exist.

Checked in every tracked Markdown file (README.md, docs/*.md, auth-service/README.md...):
- a relative link or image `[text](path#anchor)` points at a file or folder that exists, and
  an anchor into a Markdown file at one of its headings (GitHub's slugs);
- a file named in inline code (`docs/x.md`, `src/config.ts`, `test_faults.py::test_y`) is a
  tracked file: its path, relative to the doc or to any folder, ends a tracked path;
- a test named as `test_x.py::test_y` (or `::test_z` after it) is defined in that file, and a
  test quoted after `x.test.ts` ("title", with "..." for an elided part) is one of its titles;
- `make X` names a Makefile target, `npm run X` a script of auth-service/package.json,
  `rag X` a command of the rag-service CLI, `rag-client X [Y|Z]` one of the client CLI's;
- every ```sh / ```bash block still parses (`bash -n`);
- .env.example lists every rag-service setting, each default it shows is the default, and the
  README's configuration table names only variables it lists (the auth-service's half of
  .env.example is checked by auth-service/test/config.test.ts).
No service is started: these tests only read files.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and ![alt](target); the target ends at whitespace or ")" (titles ignored).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MAKE = re.compile(r"(?<![\w-])make ([a-z][\w-]*)")
NPM_RUN = re.compile(r"(?<![\w-])npm run (?:--silent )?([\w:-]+)")
RAG = re.compile(r"(?:^|[`\s])rag ([a-z][\w-]*)", re.MULTILINE)
# `rag-client keys create|list|revoke`: a command, and for a group its sub-commands.
RAG_CLIENT = re.compile(r"(?<![\w-])rag-client ([a-z][\w-]*)(?: ([a-z][\w|-]*))?")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# Named in docs/security.md as attack input, not as files of this repository.
NOT_FILES = frozenset({"../../etc/passwd.txt"})
FILE_NAME = re.compile(r"^[\w./-]+\.(?:md|py|ts|js|json|sh|ya?ml|toml|txt|png|html|ini|cfg)$")
# `test_x.py::name` or, continuing the last file named, `::name`.
PY_TEST_REF = re.compile(r"^([\w./-]+\.py)?::(\w+)")
# `x.test.ts` "title", "title" ... (the titles of node:test tests in that file).
TS_TEST_REF = re.compile(r'`([\w-]+\.test\.ts)`((?:[\s,(]*(?:and\s*|\([^)"]*\)\s*)?"[^"]+")+)')
TS_TITLE = re.compile(r"""\b(?:test|describe|it)\(\s*(["'`])(.*?)\1""")
ENV_SETTING = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(\S*)", re.MULTILINE)


def markdown_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [ROOT / name for name in tracked.stdout.split() if "node_modules" not in name]
    assert any(f.name == "README.md" and f.parent == ROOT for f in files)
    return files


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.split() if "node_modules" not in name]


def names_a_tracked_file(path: Path, reference: str, tracked: list[str]) -> bool:
    if (path.parent / reference).exists() or (ROOT / reference).exists():
        return True
    tail = reference.lstrip("./")
    while tail.startswith("../"):
        tail = tail[3:]
    return any(name == tail or name.endswith("/" + tail) for name in tracked)


def tracked_sources(name: str, tracked: list[str]) -> str:
    return "".join((ROOT / path).read_text() for path in tracked if path == name or path.endswith("/" + name))


def env_example() -> dict[str, dict[str, str]]:
    """.env.example by section ("auth-service", "rag-service", ...): `# NAME=value` lines."""
    parts = re.split(r"^# -+ (.+)$", (ROOT / ".env.example").read_text(), flags=re.MULTILINE)
    return {title.strip(): dict(ENV_SETTING.findall(body)) for title, body in zip(parts[1::2], parts[2::2])}


def heading_slugs(markdown: Path) -> set[str]:
    """GitHub's anchors: lowercase, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(markdown.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def prose(text: str) -> str:
    """The text without fenced code blocks (links inside code are not links)."""
    return FENCE.sub("", text)


def code_spans(text: str) -> str:
    """Fenced blocks and inline code: where commands are named (prose says "make the...")."""
    blocks = [code for _, code in FENCE.findall(text)]
    return "\n".join(blocks + INLINE_CODE.findall(FENCE.sub("", text)))


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))


def npm_scripts() -> set[str]:
    return set(json.loads((ROOT / "auth-service" / "package.json").read_text())["scripts"])


def rag_client_commands() -> dict[str, set[str]]:
    """The client CLI's commands (clients/python), each with its sub-commands (a group's)."""
    from typer.main import get_command

    from rag_client.cli import app

    return {name: set(getattr(command, "commands", {})) for name, command in get_command(app).commands.items()}


def names_rag_client_commands(command: str, then: str) -> bool:
    """`rag-client COMMAND [SUB|SUB]`: the command exists, and so do a group's sub-commands."""
    commands = rag_client_commands()
    if command not in commands:
        return False
    return not (commands[command] and then) or set(then.split("|")) <= commands[command]


def rag_commands() -> set[str]:
    from rag_service.cli import app

    return {command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    dead = []
    for target in LINK.findall(prose(path.read_text())):
        if EXTERNAL.match(target) and not target.startswith("#"):
            continue
        file_part, _, anchor = target.partition("#")
        linked = path.parent / file_part if file_part else path
        if not linked.exists():
            dead.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_slugs(linked):
            dead.append(target)
    assert not dead, f"{path.relative_to(ROOT)} links to missing files: {dead}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_in_code_exist(path: Path) -> None:
    tracked = tracked_files()
    references = {code.split("::", 1)[0] for code in INLINE_CODE.findall(prose(path.read_text()))}
    missing = sorted(ref for ref in references
                     if FILE_NAME.match(ref) and ref not in NOT_FILES and not names_a_tracked_file(path, ref, tracked))
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist: {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_named_in_the_docs_exist(path: Path) -> None:
    tracked, text, missing = tracked_files(), prose(path.read_text()), []
    last_file = None
    for code in INLINE_CODE.findall(text):
        reference = PY_TEST_REF.match(code)
        if not reference:
            continue
        last_file = reference.group(1) or last_file
        source = tracked_sources(last_file, tracked) if last_file else ""
        if not re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{reference.group(2)}\b|^{reference.group(2)}\s*=",
                         source, re.MULTILINE):
            missing.append(f"{last_file}::{reference.group(2)}")
    for test_file, quoted in TS_TEST_REF.findall(text):
        titles = [title for _, title in TS_TITLE.findall(tracked_sources(test_file, tracked))]
        # A template literal's `${...}` matches anything.
        patterns = [".*".join(map(re.escape, re.split(r"\$\{[^}]*\}", title))) for title in titles]
        for title in re.findall(r'"([^"]+)"', quoted):
            parts = [part.strip() for part in title.split("...") if part.strip()]
            if not (any(all(part in candidate for part in parts) for candidate in titles)
                    or any(re.fullmatch(pattern, title) for pattern in patterns)):
                missing.append(f'{test_file} "{title}"')
    assert not missing, f"{path.relative_to(ROOT)} names tests that do not exist: {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_named_commands_exist(path: Path) -> None:
    text = code_spans(path.read_text())
    missing = [f"make {t}" for t in MAKE.findall(text) if t not in makefile_targets()]
    missing += [f"npm run {s}" for s in NPM_RUN.findall(text) if s not in npm_scripts()]
    missing += [f"rag {c}" for c in RAG.findall(text) if c not in rag_commands()]
    missing += [f"rag-client {' '.join(c)}" for c in RAG_CLIENT.findall(text) if not names_rag_client_commands(*c)]
    assert not missing, f"{path.relative_to(ROOT)} names commands that do not exist: {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_blocks_parse(path: Path) -> None:
    for language, code in FENCE.findall(path.read_text()):
        if language in {"sh", "bash", "shell", "console"}:
            checked = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
            assert checked.returncode == 0, f"{path.relative_to(ROOT)}: {checked.stderr}\n{code}"


def test_env_example_lists_every_rag_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_service.config import Settings

    documented = env_example()["rag-service"]
    settings = {name.upper(): name for name in Settings.model_fields}
    assert sorted(set(settings) - set(documented)) == [], "rag-service settings missing from .env.example"
    assert sorted(set(documented) - set(settings)) == [], ".env.example names settings that do not exist"
    for variable, value in documented.items():
        field = settings[variable]
        default = Settings.model_fields[field].get_default(call_default_factory=True)
        if value == "":
            assert default in (None, ""), f".env.example leaves {variable} empty; its default is {default!r}"
            continue
        with monkeypatch.context() as env:
            env.setenv(variable, value)  # parsed as the service parses its environment
            shown = getattr(Settings(_env_file=None), field)
        assert shown == default, f".env.example shows {variable}={value}, the default is {default!r}"


def test_readme_configuration_table_names_listed_variables() -> None:
    listed = {name for section in env_example().values() for name in section}
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named = [name for row in re.findall(r"^\| (`[^|]+)\|", table, re.MULTILINE)
             for name in re.findall(r"`([A-Z][A-Z0-9_]*\*?)`", row)]
    assert len(named) > 40
    unknown = [name for name in named
               if not (any(v.startswith(name[:-1]) for v in listed) if name.endswith("*") else name in listed)]
    assert not unknown, f"README's configuration table names variables .env.example does not list: {unknown}"


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The patterns above really find a dead link, a missing target and a broken block."""
    sample = "See [gone](docs/nope.md#x), [web](https://example.com), [top](#top).\n`make nonsense`\n"
    assert LINK.findall(prose(sample)) == ["docs/nope.md#x", "https://example.com", "#top"]
    assert [t for t in LINK.findall(sample) if not EXTERNAL.match(t)] == ["docs/nope.md#x"]
    assert MAKE.findall(code_spans(sample)) == ["nonsense"] and "nonsense" not in makefile_targets()
    assert MAKE.findall(code_spans("to make the service")) == []
    readme, tracked = ROOT / "README.md", tracked_files()
    assert names_a_tracked_file(readme, "docs/security.md", tracked)
    assert names_a_tracked_file(readme, "test_faults.py", tracked)
    assert not names_a_tracked_file(readme, "docs/benchmarks-gone.md", tracked)
    slugs = heading_slugs(ROOT / "docs" / "benchmarks.md")
    assert "load-test-both-services-concurrent-users" in slugs and "load-test" not in slugs
    assert {"dev", "test", "bench", "migrate"} <= makefile_targets()
    assert "migrate" in npm_scripts() and {"ingest", "reindex", "migrate"} <= rag_commands()
    assert [names_rag_client_commands(*c) for c in RAG_CLIENT.findall(
        "`rag-client keys create|list|revoke`, `rag-client sync DIR`, `rag-client keys rotate`, `rag-client pull`")] == [
        True, True, False, False]
    assert subprocess.run(["bash", "-n"], input="if then fi (", capture_output=True, text=True).returncode != 0
    assert [m.groups() for m in map(PY_TEST_REF.match, ["test_faults.py::test_y", "::test_z", "x::"]) if m] == [
        ("test_faults.py", "test_y"), (None, "test_z")]
    sample = '`jwt.test.ts` "a", "b ... c" and "d"; `keys.test.ts`'
    assert TS_TEST_REF.findall(sample) == [("jwt.test.ts", ' "a", "b ... c" and "d"')]
    assert "NOT_A_SETTING" not in env_example()["rag-service"] and "PORT" in env_example()["auth-service"]
