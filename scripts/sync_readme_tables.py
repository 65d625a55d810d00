"""Copy each paper's table from tables/<paper>.md into the marked block of its README.

    python scripts/sync_readme_tables.py [--check] [--root DIR]

A paper README (the papers of common.papers.discover_papers) marks where its table goes:

    <!-- table: tables/<paper>.md -->
    ...                                   (everything here is rewritten)
    <!-- /table -->

The block gets the table part of the tables file, which the `table@<paper>` stage writes
(scripts/render_tables.py): its markdown table(s) and the caption and legend lines after them,
without the command comment, the heading and the "Provenance of every number above" list, and
one closing line pointing to the tables file for that provenance. `--check` changes nothing and
exits 1 naming every README whose block differs; without it the READMEs are rewritten in place.
A marker naming a missing tables file, or an unclosed marker, is an error (exit 2).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from common.papers import discover_papers

REPO = Path(__file__).resolve().parents[1]
OPEN = re.compile(r"^<!--\s*table:\s*(\S+)\s*-->\s*$")
CLOSE = re.compile(r"^<!--\s*/table\s*-->\s*$")
PROVENANCE = "Provenance of every number above"
COMMAND = "python scripts/sync_readme_tables.py"


class SyncError(Exception):
    """A README or tables file the script cannot sync: the message names the file."""


def table_part(text: str, source: str) -> list[str]:
    """The lines of a rendered tables file from its first table up to (without) the provenance
    list: the leading command comment, blank lines and heading are dropped."""
    lines = text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith(("<!--", "#"))):
        start += 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(PROVENANCE)), None)
    if end is None:
        raise SyncError(f"{source}: no '{PROVENANCE}' line; is it a table rendered by scripts/render_tables.py?")
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise SyncError(f"{source}: no table before the '{PROVENANCE}' line")
    return body


def block(readme: Path, source: str, root: Path) -> list[str]:
    """What goes between the markers of `readme` for the tables file `source` (relative to root)."""
    path = root / source
    if not path.is_file():
        raise SyncError(f"{readme.relative_to(root)}: the marker names {source}, which does not exist")
    link = Path(os.path.relpath(path, readme.parent)).as_posix()
    return ["", *table_part(path.read_text(encoding="utf-8"), source), "",
            f"Filled from [`{source}`]({link}) by `{COMMAND}`; the list at the bottom of that file "
            "gives each number's record, checkpoint, config, commit, hardware and time.", ""]


def synced(readme: Path, root: Path) -> str:
    """The text of `readme` with every marked block refilled from its tables file."""
    name = readme.relative_to(root)
    out: list[str] = []
    source = None
    text = readme.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        opened, closed = OPEN.match(line), CLOSE.match(line)
        if source is None:
            if closed:
                raise SyncError(f"{name}:{number}: '<!-- /table -->' without an opening '<!-- table: ... -->'")
            out.append(line)
            if opened:
                source, opened_at = opened.group(1), number
        elif opened:
            raise SyncError(f"{name}:{opened_at}: the marker for {source} is not closed before the next one "
                            f"(line {number}); end it with '<!-- /table -->'")
        elif closed:
            out += block(readme, source, root)
            out.append(line)
            source = None
    if source is not None:
        raise SyncError(f"{name}:{opened_at}: the marker for {source} is never closed; end it with '<!-- /table -->'")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def readmes(root: Path) -> list[Path]:
    """The paper READMEs under `root` with at least one table marker."""
    found = []
    for paper in discover_papers(root):
        readme = root / paper / "README.md"
        if readme.is_file() and any(OPEN.match(line) for line in readme.read_text(encoding="utf-8").splitlines()):
            found.append(readme)
    return found


def sync(root: Path, check: bool) -> list[Path]:
    """The READMEs whose blocks differ from their tables files; rewritten unless `check`.
    Every README is read (and every error raised) before any is written."""
    new = {readme: synced(readme, root) for readme in readmes(root)}
    stale = [readme for readme, text in new.items() if readme.read_text(encoding="utf-8") != text]
    if not check:
        for readme in stale:
            readme.write_text(new[readme], encoding="utf-8")
    return stale


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 naming every README whose table block is out of date")
    p.add_argument("--root", type=Path, default=REPO, help="the repository root (default: this repository)")
    args = p.parse_args(argv)
    root = args.root.resolve()
    try:
        stale = sync(root, args.check)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = [str(readme.relative_to(root)) for readme in stale]
    if args.check:
        if names:
            fix = COMMAND if root == REPO else f"{COMMAND} --root {root}"
            print("table block out of date in: " + ", ".join(names) + f"; run {fix}", file=sys.stderr)
            return 1
        return 0
    print("updated: " + ", ".join(names) if names else "every README table block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
