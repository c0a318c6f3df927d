"""Who may rate on the labelling page: one secret token per invited rater, and blind aliases.

``Access.open(store, raters)`` reads (or creates) the access file of a store and issues a
token to every invited rater that has none yet; a rater keeps their token across restarts,
so a bookmarked private URL keeps working. The file also holds a per-store secret from
which every rater's aliases are derived:

    alias(rater, mid) = base32(HMAC-SHA256(secret, rater NUL mid))[:8], lower case

so an alias is stable for one rater, differs between raters and tells nothing of the model
id, its order or its prefix (hold-out models start with ``t``).

The access file is JSON, written atomically (a temporary file renamed over it) with mode
0600, and never inside the store (whoever may read the store may not rate):

- a local store ``db.zarr``: ``db.zarr.label-ui.json`` beside it;
- a store at a URL (``s3://bucket/db.zarr``): a local file,
  ``$XDG_CONFIG_HOME/ml4ml/label-ui/<name>-<hash>.json`` (``~/.config`` by default), so
  the tokens never travel to the bucket; start the page from the same account to keep them.

Delete a rater's entry (or the file) to revoke their link: the next start issues a new one
(deleting the file also gives every rater new aliases).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from ml4ml.errors import InputError

__all__ = ["Access", "access_file", "RATER_NAME", "check_raters"]

RATER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORMAT = "ml4ml label-ui access"
ALIAS_CHARS = 8


def check_raters(raters) -> list[str]:
    """The invited raters' names, checked: InputError (field --rater) for a bad or repeated
    name, or none at all."""
    raters = [str(r) for r in raters]
    if not raters:
        raise InputError("name at least one rater: --rater NAME", field="--rater")
    for name in raters:
        if not RATER_NAME.match(name):
            raise InputError(f"rater name {name!r} must be 1-64 letters, digits, '.', '_' or "
                             "'-'", field="--rater")
    seen = set()
    for name in raters:
        if name in seen:
            raise InputError(f"rater {name!r} is given twice", field="--rater",
                             hint="name each rater once")
        seen.add(name)
    return raters


def access_file(store_path) -> Path:
    """Where the access file of the store at ``store_path`` lives (see the module)."""
    from ml4ml.store.backend import local_root

    root = local_root(store_path)
    if root is not None:
        return root.parent / (root.name + ".label-ui.json")
    url = str(store_path).rstrip("/")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", url.rsplit("/", 1)[-1]) or "store"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "ml4ml" / "label-ui" / f"{name}-{digest}.json"


class Access:
    """The invited raters' tokens and the alias secret of one store."""

    def __init__(self, file, secret: bytes, tokens: dict):
        self.file = Path(file)
        self._secret = secret
        self.tokens = dict(tokens)  # invited rater -> token
        self._aliases: dict = {}

    @classmethod
    def open(cls, store_path, raters, *, file=None) -> "Access":
        """Read the access file (``file``, default ``access_file(store_path)``), issue a
        token to each of ``raters`` that has none, write it back if it changed."""
        raters = check_raters(raters)
        file = Path(file) if file is not None else access_file(store_path)
        try:
            return cls._open(store_path, raters, file)
        except OSError as exc:
            raise InputError(f"cannot keep the raters' tokens here: {exc.strerror}",
                             file=file, hint="give another place with --access FILE") from None

    @classmethod
    def _open(cls, store_path, raters, file: Path) -> "Access":
        file.parent.mkdir(parents=True, exist_ok=True)
        with _locked(file):
            data = _read(file)
            changed = not data
            if not data:
                data = {"format": FORMAT, "version": 1, "store": str(store_path),
                        "secret": secrets.token_hex(32), "raters": {}}
            for name in raters:
                if name not in data["raters"]:
                    data["raters"][name] = secrets.token_urlsafe(24)
                    changed = True
            if changed:
                _write(file, data)
        return cls(file, bytes.fromhex(data["secret"]),
                   {name: data["raters"][name] for name in raters})

    # ----------------------------------------------------------------- tokens
    def rater_of(self, token: str) -> str | None:
        """The invited rater whose token is ``token`` (compared in constant time), or None."""
        given = str(token).encode("utf-8", "replace")
        found = None
        for name, mine in self.tokens.items():  # no early exit: every token is compared
            if hmac.compare_digest(given, mine.encode()):
                found = name
        return found

    # ----------------------------------------------------------------- aliases
    def aliases(self, rater: str, mids) -> dict:
        """{mid: alias} of ``rater`` for ``mids``: opaque, stable, unique for that rater."""
        key = (rater, tuple(mids))
        if key not in self._aliases:
            out, taken = {}, set()
            for mid in sorted(mids):
                word = self._alias(rater, mid)
                size = ALIAS_CHARS
                while word[:size] in taken:  # a 40-bit collision: practically never
                    size += 4
                out[mid] = word[:size]
                taken.add(out[mid])
            self._aliases[key] = out
        return self._aliases[key]

    def _alias(self, rater: str, mid: str) -> str:
        digest = hmac.new(self._secret, f"{rater}\0{mid}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower().rstrip("=")


# ----------------------------------------------------------------------------- the file
def _read(file: Path) -> dict:
    """The access file's content, or {} when there is none; InputError when it is not an
    access file or others may read it."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"others may read this file of the raters' tokens (mode "
                         f"{stat.S_IMODE(mode):o})", file=file,
                         hint=f"chmod 600 '{file}', or delete it to give every rater a new "
                              "link")
    try:
        data = json.loads(file.read_text())
        ok = (isinstance(data, dict) and data.get("format") == FORMAT
              and isinstance(data.get("raters"), dict)
              and all(isinstance(v, str) and v for v in data["raters"].values())
              and len(bytes.fromhex(data.get("secret", ""))) >= 16)
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise InputError("not an ml4ml label-ui access file", file=file,
                         hint="delete it to give every rater a new link")
    return data


def _write(file: Path, data: dict) -> None:
    """Write ``data`` to ``file`` atomically, readable by its owner only (mode 0600)."""
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.write("\n")
        os.chmod(temporary, 0o600)  # whatever the umask
        os.replace(temporary, file)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def _locked(file: Path):
    """Two servers starting at once on one store issue tokens one after the other."""
    import fcntl

    fd = os.open(file.with_name(file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
