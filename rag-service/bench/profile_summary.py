"""Summarize a py-spy `--format raw` profile (collapsed stacks, one line per stack + count).

    .venv/bin/python bench/profile_summary.py PROFILE [--top 25] [--under FUNCTION]

Prints the share of samples per thread, then the functions with the most samples anywhere
on the stack (inclusive) and at the top of it (self), in the event loop's thread unless
--thread says otherwise. --under keeps only stacks through FUNCTION (a substring).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def frame_name(frame: str) -> str:
    """`handler (rag_service/search/api.py:37)` -> `handler (rag_service/search/api.py)`."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", default="MainThread")
    parser.add_argument("--under", default=None)
    args = parser.parse_args()

    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    selected = 0
    for line in args.profile.read_text().splitlines():
        match = LINE.match(line)
        if not match:
            continue
        frames = match["stack"].split(";")
        count = int(match["count"])
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0]) if frames[0].startswith("thread") else "?"
        thread = re.sub(r"\d+", "N", thread)
        threads[thread] += count
        if args.thread not in thread:
            continue
        names = [frame_name(f) for f in frames[1:]]
        if args.under and not any(args.under in name for name in names):
            continue
        selected += count
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
    total = sum(threads.values())
    print(f"{total} busy samples")
    for thread, count in threads.most_common():
        print(f"  {count / total:6.1%}  {thread}")
    print(f"\n{selected} samples in {args.thread!r}" + (f" under {args.under!r}" if args.under else ""))
    print("\ninclusive:")
    for name, count in inclusive.most_common(args.top):
        print(f"  {count / selected:6.1%}  {name}")
    print("\nself:")
    for name, count in own.most_common(args.top):
        print(f"  {count / selected:6.1%}  {name}")


if __name__ == "__main__":
    main()
