"""clients/python/README.md's command table against the CLI itself (typer's command tree):
every command is listed with exactly its options, and nothing listed is missing from the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from rag_client.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def cli_commands() -> dict[str, set[str]]:
    """'keys create' -> its options (without --help), for every command that does something."""
    found: dict[str, set[str]] = {}

    # Typer builds on its own copy of click: groups and options are told apart by their attributes.
    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        found[" ".join(path)] = {opt for param in command.params if param.param_type_name == "option"
                                 for opt in param.opts if opt.startswith("--") and opt != "--help"}

    walk(typer.main.get_command(app), [])
    return found


def readme_commands() -> dict[str, set[str]]:
    """The same, from the table's first column: `rag-client keys create NAME [--scope ...]`,
    `keys list`... (a bare `keys list` continues the group of the cell's first command)."""
    known = cli_commands()
    found: dict[str, set[str]] = {}
    rows = [line.split(" | ")[0] for line in README.read_text().splitlines() if line.startswith("| `rag-client")]
    for cell in rows:
        for usage in re.findall(r"`([^`]+)`", cell):
            words = usage.removeprefix("rag-client ").split()
            name = next((n for n in sorted(known, key=len, reverse=True) if words[:len(n.split())] == n.split()),
                        None)
            assert name is not None, f"README lists `{usage}`, which the CLI does not have"
            found.setdefault(name, set()).update(re.findall(r"--[a-z-]+", usage))
    return found


def test_the_readme_lists_every_command_with_exactly_its_options() -> None:
    assert readme_commands() == cli_commands()
