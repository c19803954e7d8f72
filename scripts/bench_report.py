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

Benchmarks in other languages (auth-service's TypeScript ones) hand the same content to this
module as JSON, so that there is one format:

    python3 scripts/bench_report.py --out data/bench/10-auth.md < section.json
    # {"title", "baseline", "command", "runtime", "started" (ISO 8601), "load_before",
    #  "parts": [{"text": "..."} | {"headers": [...], "rows": [[...]], "caption": "..."}]}
"""

from __future__ import annotations

import argparse
import json
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


def machine(runtime: str | None = None) -> str:
    """CPU model, cores, memory, OS and the language runtime, as one line."""
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
    runtime = runtime or f"Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, {runtime}"


def _inside_repo(path: str) -> str | None:
    """`path` relative to the repository when it lies inside it (symlinks not followed)."""
    absolute = os.path.normpath(os.path.abspath(path))
    relative = os.path.relpath(absolute, REPO)
    return None if relative == ".." or relative.startswith(".." + os.sep) else relative


def invoked_command(argv: Sequence[str] | None = None) -> str:
    """The running command as a reader retypes it from the repository root, e.g.
    `cd rag-service && .venv/bin/python bench/ingest_throughput.py --docs 150`."""
    argv = list(sys.argv if argv is None else argv)
    # `--report PATH` only says where this section goes, not how it was measured.
    if "--report" in argv:
        at = argv.index("--report")
        del argv[at : at + 2]
    argv = [arg for arg in argv if not arg.startswith("--report=")]
    cwd = _inside_repo(os.getcwd())
    if cwd is None:  # started from outside the repository: show the script's folder
        cwd = _inside_repo(os.path.dirname(os.path.abspath(argv[0]))) or "."
    here = REPO / cwd

    def shown(path: str) -> str:
        inside = _inside_repo(path)
        return os.path.relpath(REPO / inside, here) if inside is not None else os.path.basename(path)

    interpreter = shown(sys.executable) if sys.executable else "python3"
    prefix = f"cd {cwd} && " if cwd != "." else ""
    return prefix + shlex.join([interpreter, shown(argv[0]), *argv[1:]])


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def add_report_argument(parser: argparse.ArgumentParser) -> None:
    """`--report PATH`, the same in every benchmark."""
    parser.add_argument("--report", type=Path, metavar="PATH",
                        help="also write this run's section of docs/benchmarks.md here (make bench does)")


class Report:
    """A section: title, the run's context, then tables and text in the order added."""

    def __init__(self, title: str, *, baseline: str, command: str | None = None, runtime: str | None = None) -> None:
        self.title = title
        self.baseline = baseline
        self.command = command or invoked_command()
        self.runtime = runtime
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
            f"- Machine: {machine(self.runtime)}",
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

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Report:
        """A section measured elsewhere (another language), described as JSON (see the top)."""
        report = cls(spec["title"], baseline=spec["baseline"], command=spec["command"], runtime=spec.get("runtime"))
        if spec.get("started"):
            report.started = datetime.fromisoformat(spec["started"].replace("Z", "+00:00"))
        report.load_before = spec.get("load_before") or report.load_before
        for part in spec.get("parts", []):
            if "headers" in part:
                report.table(part["headers"], part["rows"], part.get("caption"))
            else:
                report.text(part["text"])
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a section described as JSON on stdin (see the module doc).")
    parser.add_argument("--out", type=Path, help="the section file (default: print only)")
    args = parser.parse_args()
    Report.from_spec(json.load(sys.stdin)).write(args.out)


if __name__ == "__main__":
    main()
