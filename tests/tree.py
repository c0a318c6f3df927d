"""Digests of files and folders, for the tests that assert something was left untouched."""

import hashlib
from pathlib import Path


def digest(path: Path) -> str:
    """sha256 of every file's relative name and bytes under ``path`` (of the file itself
    when ``path`` is a file); "absent" when there is nothing there."""
    path = Path(path)
    if not path.exists():
        return "absent"
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
