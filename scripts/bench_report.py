"""One Markdown section of docs/benchmarks.md, written by the benchmark that measured it.

`make bench` runs every benchmark with `--report data/bench/NN-name.md`; each writes one
section with this module, and `scripts/bench_render.py` joins them into docs/benchmarks.md.
No figure in that file is typed by hand: every section says which machine ran it, the load
average before and after (the machines are shared: compare rows measured in the same run),
the exact command, and the baseline its figures are compared with.

    report = Report("Search latency at 100k chunks", baseline="Edge adapter, same corpus, same run")
    report.table(["store", "p50 ms", "p95 ms"], rows)
    report.text("What the numbers mean ...")
    report.write(args.report)   # None: print only
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # not every platform has it
        return "n/a"


def machine() -> str:
    """CPU model, cores, memory and OS, as one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def invoked_command() -> str:
    """The command that is running, from the repository root (what a reader types to rerun it)."""
    script = Path(sys.argv[0]).resolve()
    try:
        where = script.parent.relative_to(REPO)
    except ValueError:
        where = script.parent
    args = list(sys.argv[1:])
    # `--report PATH` only says where this section goes, not how it was measured.
    if "--report" in args:
        at = args.index("--report")
        del args[at : at + 2]
    prefix = f"cd {where} && " if str(where) not in ("", ".") else ""
    return prefix + shlex.join(["python", script.name, *args])


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


class Report:
    """A section: title, the run's context, then tables and text in the order added."""

    def __init__(self, title: str, *, baseline: str, command: str | None = None) -> None:
        self.title = title
        self.baseline = baseline
        self.command = command or invoked_command()
        self.started = datetime.now(timezone.utc)
        self.load_before = load_average()
        self._parts: list[str] = []

    def text(self, markdown: str) -> None:
        self._parts.append(markdown.strip())

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> None:
        lines = [f"**{caption}**", ""] if caption else []
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        lines.extend("| " + " | ".join(format_cell(cell) for cell in row) + " |" for row in rows)
        self._parts.append("\n".join(lines))

    def markdown(self) -> str:
        context = [
            f"- Command: `{self.command}`",
            f"- Baseline: {self.baseline}",
            f"- Machine: {machine()}",
            f"- Run: {self.started:%Y-%m-%d %H:%M} UTC, load average (1/5/15 min) {self.load_before} before,"
            f" {load_average()} after",
        ]
        return "\n\n".join([f"## {self.title}", "\n".join(context), *self._parts]) + "\n"

    def write(self, path: Path | str | None) -> str:
        """Print the section, and write it to `path` when given (the directory is created)."""
        section = self.markdown()
        print(section)
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(section, encoding="utf-8")
        return section
