"""The fenced code blocks of the documentation (README.md and docs/**/*.md), and which test
runs each.

Every block is either output (```text, never run) or runs in a test: the line just above
it names that test, ``<!-- test: test_file.py::test_name -->`` (an HTML comment: neither
GitHub nor MkDocs shows it), and that test reads its code with ``marked("test_file.py::
test_name")``, so a block is run by the test it names and by no other.
``tests/test_docs.py`` checks that every block is covered so.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   flags=re.S | re.M)
MARK = re.compile(r"<!-- test: (?P<test>[\w./-]+\.py::\w+) -->\s*$")
OUTPUT = {"text"}  # shown, never run
RUN = {"python", "bash", "toml", "console"}


@dataclass(frozen=True)
class Block:
    """One fenced block: its file (relative to the checkout), line, language, code and the
    test named above it (None if none)."""

    path: str
    line: int
    lang: str
    code: str
    test: str | None

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["body"].splitlines()) + "\n"
        found.append(Block(str(path.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1,
                           match["info"].strip().split(" ")[0], code,
                           mark["test"] if mark else None))
    return found


def every_block() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def marked(test: str) -> list[Block]:
    """The blocks that name ``test`` (``"test_file.py::test_name"``), in page order
    (README.md first); at least one, or the test has nothing to run."""
    found = [block for block in every_block() if block.test == test]
    assert found, f"no documentation block names the test {test}"
    return found


def command_lines(block: Block) -> list[str]:
    """A shell block's commands: comments and blank lines dropped, ``\\`` continuations
    joined."""
    lines, current = [], ""
    for raw in block.code.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        lines.append((current + line.strip()).strip())
        current = ""
    return [line for line in lines if line]


def argv(line: str) -> list[str]:
    """The words of one command line, as the shell splits them."""
    return shlex.split(line)
